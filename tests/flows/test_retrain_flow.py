"""The retrain flow on the local backend with a tiny model: registration, gates, idempotency, bad data."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from contracts import tags as T
from pipelines.flows import GateFailedError, retrain
from pipelines.settings import PipelineConfig, load_settings
from serving.deployer import Version
from tests.conftest import tiny_pipeline


def _config(data: Path, model: Path, gates: list[dict[str, object]]) -> PipelineConfig:
    return PipelineConfig.model_validate(tiny_pipeline(data, model, gates=gates))


def _client() -> MlflowClient:
    uri = load_settings().tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _versions(name: str) -> list[object]:
    return list(_client().search_model_versions(f"name = '{name}'"))


def _notifications() -> list[dict[str, Any]]:
    path = load_settings().root / "notifications.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _deploy_and_invoke(version: Version) -> None:
    """The registered package on a local endpoint through the deployer and the local control plane."""
    import json
    import urllib.request

    from local_aws.server import client, running_url, stop
    from serving.deployer import DeploymentConfig, SageMakerDeployer

    workspace = load_settings().root
    try:
        SageMakerDeployer(client(workspace), DeploymentConfig(instance_type="ml.m5.large", poll_seconds=1)).deploy(
            "tiny", version, "all_at_once")
        request = urllib.request.Request(f"{running_url(workspace)}/endpoints/tiny/invocations",
                                         data=json.dumps({"inputs": "Ana: hi. Ben: hello."}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.headers["X-Amzn-Invoked-Production-Variant"] == version.variant
            assert len(json.loads(response.read())) == 1
    finally:
        stop(workspace)


def test_passing_candidate_is_registered_pending_with_lineage_then_reused(
    sample_jsonl: Path, tiny_model_dir: Path
) -> None:
    # A float32 build of the merged weights answers as the candidate does: it passes its re-gate and serves.
    config = PipelineConfig.model_validate(tiny_pipeline(sample_jsonl, tiny_model_dir, gates=[
        {"metric": "empty_rate", "max": 1.0}], optimize={"builds": [{"name": "merged", "dtype": "float32",
                                                                      "max_batch_size": 4}], "min_speedup": 0}))
    result = retrain(config)
    assert result.status == T.PENDING and result.gate == "passed" and not result.reused
    [version] = _versions("tiny-summarizer")
    assert version.tags[T.APPROVAL_STATUS] == T.PENDING
    assert version.tags[T.DATASET_HASH] == result.dataset_hash
    assert version.tags[T.BASE_MODEL] == str(tiny_model_dir)
    assert version.tags[T.SOURCE_RUN] == result.run_id
    assert version.tags[T.DATASET_SOURCE] == str(sample_jsonl.resolve())
    assert version.tags[T.DATA_VALIDATION].startswith("passed ")
    rows = dict(part.split("=") for part in version.tags[T.DATASET_ROWS].split(","))
    assert set(rows) == {"train", "validation", "test"} and sum(map(int, rows.values())) == 120
    assert "Gate passed" in version.description
    client = _client()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert {"candidate.rougeL", "base.rougeL", "train.eval_loss", "loss"} <= set(run.data.metrics)
    # What 1,000 output tokens cost at the measured throughput, at the configured instance's price per hour.
    from contracts.instances import HOURLY_PRICE_USD

    price = HOURLY_PRICE_USD[config.deployment.instance_type]
    for model in ("candidate", "base"):
        speed, cost = run.data.metrics[f"{model}.output_tokens_per_s"], run.data.metrics[f"{model}.cost_per_1k_output_tokens"]
        assert speed > 0 and cost == pytest.approx(price / 3600 / speed * 1000)
    assert [m.step for m in client.get_metric_history(result.run_id, "loss")] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"gate_report", "data_validation.md", "data_validation.html", "loss_curve.png"} <= artifacts
    report = {a.path for a in client.list_artifacts(result.run_id, "gate_report")}
    assert report == {f"gate_report/{n}" for n in ("gate_report.html", "gate_report.md", "gate_report.json",
                                                    "metrics.png", "deltas.png", "lengths.png")}
    assert result.report_uri.endswith(f"reports/{result.run_id}/gate_report.html")
    assert Path(result.report_uri.removeprefix("file://")).read_text().startswith("<!doctype html>")

    # The servable package is named at registration, logged with the run, and deploys as it is.
    package = Path(version.tags[T.PACKAGE_URI].removeprefix("file://"))
    assert package.name == "model.tar.gz" and version.tags[T.PACKAGE_DIGEST][:32] in str(package)
    assert run.data.params["package.digest"] == version.tags[T.PACKAGE_DIGEST]
    assert "huggingface-pytorch-inference" in version.tags[T.PACKAGE_IMAGE]
    assert version.tags[T.BUILD_SERVED] == "merged"
    assert version.tags[T.BUILDS].startswith("merged: passed; ") and "100% identical" in version.tags[T.BUILDS]
    optimized = json.loads(Path(client.download_artifacts(result.run_id, "optimize_report.json")).read_text())
    assert [b["spec"]["name"] for b in optimized["builds"]] == ["merged"]
    with tarfile.open(package) as archive:
        manifest = json.load(archive.extractfile("genaiops-model.json"))  # type: ignore[arg-type]
        assert "builds/merged/model.safetensors" in archive.getnames()
    assert manifest["serve"] == "merged"
    _deploy_and_invoke(Version.of_registered("tiny-summarizer", version.version, dict(version.tags)))

    again = retrain(config)
    assert again.reused and again.version == result.version
    assert len(_versions("tiny-summarizer")) == 1
    # Approvers hear of the new version once (locally: the console and notifications.jsonl), with its links.
    [waiting] = _notifications()
    assert waiting["subject"] == f"genaiops: tiny-summarizer v{result.version} waits for approval"
    assert waiting["links"]["version"] == result.version_url and waiting["links"]["gate report"] == result.report_uri

    # `genaiops evaluate` runs the `evaluate` flow: the same gates on demand, its report, a clear error otherwise.
    from typer.testing import CliRunner

    from pipelines.cli import app

    config_file = sample_jsonl.parent / "tiny.yaml"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    shown = CliRunner().invoke(app, ["evaluate", "--model-uri", f"models:/tiny-summarizer/{result.version}",
                                     "-c", str(config_file), "--out", str(sample_jsonl.parent / "on-demand")])
    assert shown.exit_code == 0, shown.output
    assert "empty_rate" in shown.output and (sample_jsonl.parent / "on-demand" / "gate_report.html").exists()
    missing = CliRunner().invoke(app, ["evaluate", "--model-uri", "models:/tiny-summarizer/99", "-c", str(config_file)])
    assert missing.exit_code == 2 and "models:/tiny-summarizer/99 not found" in missing.output

    # With a champion in place, the next candidate is compared against it as well.
    # Its build is forced to fail the re-gate (no loss allowed at all): the version is registered all the same
    # and serves its unoptimized weights.
    client.set_registered_model_alias("tiny-summarizer", T.CHAMPION, result.version)
    challenger = retrain(config.model_copy(update={"finetune": config.finetune.model_copy(update={"seed": 7}),
                                                   "optimize": config.optimize.model_copy(
                                                       update={"max_rouge_loss": 0.0})}))
    assert challenger.version == "2" and challenger.status == T.PENDING
    second = client.get_model_version("tiny-summarizer", "2").tags
    assert second[T.COMPARED_CHAMPION] == "1"
    assert second[T.BUILD_SERVED] == "unoptimized" and second[T.BUILDS].startswith(
        "merged: failed: ROUGE-L interval low +0.000 is not above -0")
    with tarfile.open(second[T.PACKAGE_URI].removeprefix("file://")) as archive:
        assert json.load(archive.extractfile("genaiops-model.json"))["serve"] == "unoptimized"  # type: ignore[arg-type]
        assert not [n for n in archive.getnames() if n.startswith("builds/")]
    assert "champion.rougeL" in client.get_run(challenger.run_id).data.metrics


def test_failed_gate_registers_rejected_and_fails_the_run(sample_jsonl: Path, tiny_model_dir: Path) -> None:
    config = _config(sample_jsonl, tiny_model_dir, [{"metric": "rougeL", "min": 0.99}])
    state = retrain(config, return_state=True)
    assert state.is_failed()
    assert "gates failed: rougeL >= 0.99: 0.0000 (FAILED)" in state.message
    with pytest.raises(GateFailedError, match=r"Rejected: gates failed: rougeL >= 0\.99: "):
        state.result()
    [version] = _versions("tiny-summarizer")
    assert version.tags[T.APPROVAL_STATUS] == T.REJECTED and version.tags[T.GATE] == "failed"
    # Re-running the same inputs fails the same way and registers nothing new.
    with pytest.raises(GateFailedError):
        retrain(config)
    assert len(_versions("tiny-summarizer")) == 1
    # Each failed run is notified with its reason and a link to the Prefect run.
    failures = _notifications()
    assert [n["subject"] for n in failures] == ["genaiops: retrain failed for tiny-summarizer"] * 2
    assert "Rejected: gates failed" in failures[0]["message"]
    assert f"/runs/flow-run/{state.state_details.flow_run_id}" in failures[0]["links"]["prefect run"]


def test_the_pipeline_account_registers_through_the_approval_server(
    sample_jsonl: Path, tiny_model_dir: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pointed at the genaiops-auth server, the flow registers as the pipeline account, and the server finds
    the version's gate and lineage tags in agreement with its run (gate_report.json, the logged dataset hash)."""
    from model_registry.audit import AuditLog
    from steps.artifacts import LocalStore
    from tests.approvals import CONFIG, cli
    from tests.servers import approval_server

    with approval_server(isolated_env, CONFIG) as (url, passwords):
        for key, value in {"GENAIOPS_MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": CONFIG.pipeline_account,
                           "MLFLOW_TRACKING_PASSWORD": passwords[CONFIG.pipeline_account]}.items():
            monkeypatch.setenv(key, value)
        result = retrain(_config(sample_jsonl, tiny_model_dir, [{"metric": "empty_rate", "max": 1.0}]))
        assert result.status == T.PENDING and not result.reused
        [entry] = [e for e in AuditLog(LocalStore(isolated_env / "artifacts")).entries("tiny-summarizer")
                   if e.action == "create-version"]
        assert (entry.user, entry.version, entry.outcome, entry.new) == \
            (CONFIG.pipeline_account, result.version, "accepted", T.PENDING)
        server = {"url": url, "passwords": passwords, "workspace": isolated_env}
        approved = cli(server, "alice", "approve", "tiny-summarizer", result.version)
        assert approved.returncode == 0, approved.stderr  # its lineage is complete: an approver can approve it
