"""`genaiops run` (what `make run` runs) on a tiny model: without the demo approval it stops at
PendingManualApproval; with it, the version is approved by the demo approver through the approval server,
meets the base model in shadow on a local endpoint, gets held-out traffic through boto3, is promoted on that
evidence, and a second run with nothing new reuses every stage and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient

from contracts import tags as T
from local_aws.server import client as local_client
from model_registry.audit import AuditLog
from pipelines.flows.lifecycle import DEMO_NOTE, lifecycle
from pipelines.settings import PipelineConfig, load_settings
from steps.artifacts import LocalStore
from tests.conftest import tiny_pipeline

MODEL = "tiny-summarizer"


def _document(data: Path, model: Path, demo: bool) -> dict[str, Any]:
    return tiny_pipeline(data, model, name=MODEL, deployment={"instance_type": "ml.m5.large"},
                         approval={"demo": demo}, rollout={"min_duration_s": 0, "min_requests": 8, "resamples": 200})


def _run(config: Path, workspace: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GENAIOPS_WORKSPACE": str(workspace), "COLUMNS": "250"}
    return subprocess.run([str(Path(sys.executable).parent / "genaiops"), "run", "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=1200, check=False)


def test_make_run_stops_for_a_person_then_approves_as_the_demo_releases_promotes_and_reuses_everything(
        workspace: Path, sample_jsonl: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    # approval.demo off: the run registers the version and stops at PendingManualApproval, deploying nothing.
    stopped = lifecycle(PipelineConfig.model_validate(_document(sample_jsonl, tiny_model_dir, demo=False)))
    assert stopped.stopped is not None and T.PENDING in stopped.stopped
    uri = load_settings().tracking_uri
    mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = stopped.retrain.version
    assert mlflow.get_model_version(MODEL, version).tags[T.APPROVAL_STATUS] == T.PENDING
    assert local_client(workspace).list_endpoints()["Endpoints"] == []

    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(_document(sample_jsonl, tiny_model_dir, demo=True)))
    first = _run(config, workspace)
    assert first.returncode == 0, first.stdout + first.stderr[-5000:]
    text = first.stdout
    assert "Approved by demo-approver (a DEMO approval, through the approval server)" in text
    assert "shadow" in text and "against base" in text
    assert "held-out requests through boto3's sagemaker-runtime client (0 failed)" in text
    assert "promote: no evidence against the candidate" in text and "ROUGE-L" in text
    assert f"v{version} is champion on {MODEL}" in text and "the base model stays the rollback target" in text
    for line in ("MLflow UI", "endpoint", "invoke", "boto3", "dashboard", "audit log"):
        assert f"  {line} " in text, line

    # The approval went through the server: stamped by it, audited as the demo approver's, labelled a demo.
    tags = mlflow.get_model_version(MODEL, version).tags
    assert (tags[T.APPROVAL_STATUS], tags[T.APPROVED_BY], tags[T.APPROVAL_NOTE]) == (T.APPROVED, "demo-approver",
                                                                                      DEMO_NOTE)
    entries = AuditLog(LocalStore(workspace / "artifacts")).entries(MODEL, version)
    [approval] = [e for e in entries if e.key == T.APPROVAL_STATUS and e.new == T.APPROVED]
    assert approval.user == "demo-approver" and approval.outcome == "accepted" and approval.route
    assert [e.new for e in entries if e.action == "rollout"] == ["promoted"]
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == version
    described = local_client(workspace).describe_endpoint(EndpointName=MODEL)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{version}"]
    assert "ShadowProductionVariants" not in described
    assert (workspace / "dashboards" / MODEL / "index.html").exists()

    configs = sorted(p.name for p in (workspace / "sagemaker" / "endpoint-configs").iterdir())
    again = _run(config, workspace)
    assert again.returncode == 0, again.stdout + again.stderr[-5000:]
    assert "nothing new: every stage reused" in again.stdout
    assert f"none under way: {MODEL} serves v{version}" in again.stdout
    assert len(mlflow.search_model_versions(f"name = '{MODEL}'")) == 1
    assert sorted(p.name for p in (workspace / "sagemaker" / "endpoint-configs").iterdir()) == configs
    assert len(AuditLog(LocalStore(workspace / "artifacts")).entries(MODEL, version)) == len(entries)


def test_make_run_stopped_during_the_demo_approval_leaves_no_server_running(
        workspace: Path, sample_jsonl: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """SIGTERM (Ctrl-C takes the same handler, tested for every command in test_cli_signals)."""
    from tests.servers import descendants, running, stop

    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(_document(sample_jsonl, tiny_model_dir, demo=True)))
    log = tmp_path / "run.log"
    env = {**os.environ, "GENAIOPS_WORKSPACE": str(workspace), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)  # as a person runs it: the command starts its own Prefect API server
    with log.open("wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "genaiops"), "run", "--config", str(config)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not any(b"genaiops-auth" in _cmdline(pid) for pid in descendants(process.pid)):  # the approval server
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        started = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        left = sorted(pid for pid in started if running(pid))
        assert not left, [_cmdline(pid) for pid in left]
    finally:
        stop(process)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
