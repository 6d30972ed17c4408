"""The release flow on the local backend: release requests become deployments through the deployer and the
local SageMaker control plane, exactly once, with aliases, tags, alarms and the audit log to show for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from contracts import tags as T
from contracts.tags import RELEASE_REASON, RELEASE_STATE, RELEASE_STRATEGY
from local_aws.server import client as local_client
from local_aws.server import running_url
from model_registry.audit import AuditLog
from model_registry.watcher import ReleaseRequest, request_key
from monitoring.alarms import AlarmStore
from monitoring.monitor import endpoint_alarms
from pipelines.flows.release import release
from pipelines.settings import PipelineConfig, load_settings
from serving import package
from steps.artifacts import LocalStore
from tests.conftest import make_tiny_model

MODEL = "tiny-summarizer"
ENDPOINT = "tiny-summarizer"
# Without a baseline: the first release serves alone (the base-model baseline has its own test).
CONFIG = PipelineConfig.model_validate({"model_name": MODEL, "deployment": {"instance_type": "ml.m5.large"},
                                        "release": {"baseline": False}})


def client() -> MlflowClient:
    uri = load_settings().tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def approved_version(model_dir: Path, status: str = T.APPROVED) -> str:
    """A registered version with a real package, approved, and the release request the watcher would write."""
    settings = load_settings()
    store = LocalStore(settings.root / "artifacts")
    built = package.build(package.ServedModel(weights=str(model_dir), kind="full", base_model="tiny",
                                              generation={"max_new_tokens": 2}), store, region="us-east-1")
    mlflow = client()
    if not mlflow.search_registered_models(f"name = '{MODEL}'"):
        mlflow.create_registered_model(MODEL)
    version = str(mlflow.create_model_version(MODEL, source=str(model_dir), tags={
        T.APPROVAL_STATUS: status, T.GATE: "passed", T.APPROVED_BY: "alice", T.PACKAGE_URI: built.uri,
        T.PACKAGE_DIGEST: built.digest, T.PACKAGE_IMAGE: built.image}).version)
    request = ReleaseRequest(model=MODEL, version=version, source_run="run", approved_by="alice", approved_at="now",
                             note="", gate_digest="", requested_at="now")
    store.put_new(request_key(MODEL, version), request.model_dump_json().encode())
    return version


def releases(workspace: Path, version: str) -> list[Any]:
    return [e for e in AuditLog(LocalStore(workspace / "artifacts")).entries(MODEL, version) if e.action == "release"]


def test_a_first_release_serves_alone_then_a_second_goes_into_shadow_exactly_once(
        workspace: Path, tiny_model_dir: Path, smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    first = approved_version(tiny_model_dir)
    [outcome] = release(CONFIG)
    assert (outcome.state, outcome.strategy, outcome.version) == ("released", "all_at_once", first)
    mlflow = client()
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == first
    sagemaker = local_client(workspace)
    described = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService"
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{first}"]
    assert [e.new for e in releases(workspace, first)] == ["released"]
    assert mlflow.get_model_version(MODEL, first).tags[RELEASE_STATE] == "released"

    second = approved_version(make_tiny_model(smollm2_tokenizer_dir, tmp_path / "second", seed=3))
    [outcome] = release(CONFIG)
    assert (outcome.state, outcome.strategy, outcome.version) == ("released", "shadow", second)
    described = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{first}"]
    assert [v["VariantName"] for v in described["ShadowProductionVariants"]] == [f"v{second}"]
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHALLENGER).version) == second
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == first
    assert mlflow.get_model_version(MODEL, second).tags[RELEASE_STRATEGY] == "shadow"
    alarms = {a.spec.name for a in AlarmStore(workspace / "alarms").list()}
    assert {f"{ENDPOINT}/v{first}/5xx-rate", f"{ENDPOINT}/v{second}/5xx-rate"} <= alarms

    configs = sorted(p.name for p in (workspace / "sagemaker" / "endpoint-configs").iterdir())
    assert release(CONFIG) == []  # nothing waits: no second deployment, audit entry or config
    assert sorted(p.name for p in (workspace / "sagemaker" / "endpoint-configs").iterdir()) == configs
    assert len(releases(workspace, second)) == 1


def test_a_release_that_stopped_half_way_is_resumed_not_repeated(workspace: Path, tiny_model_dir: Path) -> None:
    version = approved_version(tiny_model_dir)
    release(CONFIG)
    store = LocalStore(workspace / "artifacts")
    # As if the run had died after deploying, before it closed the request.
    (store.root / f"releases/done/{MODEL}/v{version}.json").unlink()
    [outcome] = release(CONFIG)
    assert outcome.resumed and outcome.state == "released"
    assert len(releases(workspace, version)) == 1  # the resumed run's entry is the first one, kept once
    assert [e["EndpointName"] for e in local_client(workspace).list_endpoints()["Endpoints"]] == [ENDPOINT]
    assert len(list((workspace / "sagemaker" / "endpoint-configs").iterdir())) == 1


def test_a_version_no_longer_approved_is_not_released_and_says_why(workspace: Path, tiny_model_dir: Path) -> None:
    version = approved_version(tiny_model_dir, status=T.PENDING)
    [outcome] = release(CONFIG)
    assert outcome.state == "skipped" and "PendingManualApproval" in outcome.detail
    tags = client().get_model_version(MODEL, version).tags
    assert tags[RELEASE_STATE] == "skipped" and "not released" in tags[RELEASE_REASON]
    assert local_client(workspace).list_endpoints()["Endpoints"] == []
    assert json.loads((workspace / "artifacts" / f"releases/done/{MODEL}/v{version}.json").read_text())["state"] == \
        "skipped"


def traffic(workspace: Path, shadow: str, count: int, already: int = 0) -> None:
    """`count` requests to the endpoint, then until the shadow's copies are all counted (an event, not a race), with
    `already` copies of earlier requests."""
    import time
    import urllib.request

    from monitoring.metrics import SAGEMAKER_NAMESPACE, SqliteMetricSink

    url = f"{running_url(workspace)}/endpoints/{ENDPOINT}"
    for index in range(count):
        body = json.dumps({"inputs": f"Ana: parcel {index} is late. Ben: I will call."}).encode()
        request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
    metrics, capture = SqliteMetricSink(workspace / "metrics.db"), LocalStore(workspace / "capture")

    def recorded() -> bool:  # the champion's records and datums are written before the shadow's copies'
        counted = metrics.total(SAGEMAKER_NAMESPACE, "Invocations", {"EndpointName": ENDPOINT, "VariantName": shadow})
        captured = sum(len(f.read_text().splitlines()) for f in (capture.root / ENDPOINT / shadow).rglob("*.jsonl"))
        return counted >= count + already and captured >= count + already

    deadline = time.monotonic() + 300  # an upper bound on a few tiny-model answers, not a race
    while not recorded():
        assert time.monotonic() < deadline, "the shadow's copies were not all answered and recorded"
        time.sleep(0.2)


# Random-weight models write gibberish, faithful to nothing: what these tests judge is errors and release mechanics,
# so the rollout's faithfulness and toxicity comparison (tests/unit/test_rollout.py) is off here.
QUICK = CONFIG.model_copy(update={"rollout": CONFIG.rollout.model_copy(update={"min_duration_s": 0, "min_requests": 8,
                                                                              "quality_sample": 0})})


def test_a_good_shadow_is_promoted_and_a_failing_one_rolled_back(
        workspace: Path, tiny_model_dir: Path, smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    import shutil

    from pipelines.flows.release import rollout

    first = approved_version(tiny_model_dir)
    second = approved_version(make_tiny_model(smollm2_tokenizer_dir, tmp_path / "second", seed=3))
    release(QUICK)
    release(QUICK)  # the second request: into shadow
    assert rollout(QUICK).decision.action == "wait"  # no traffic yet
    traffic(workspace, f"v{second}", 10)
    status = rollout(QUICK)
    assert status.decision.action == "promote", status.decision.reason
    mlflow = client()
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == second
    assert not [a for a in mlflow.get_registered_model(MODEL).aliases if a == T.CHALLENGER]
    described = local_client(workspace).describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{second}"]
    assert "ShadowProductionVariants" not in described  # the old champion's variant is gone
    assert mlflow.get_model_version(MODEL, second).tags["genaiops.release.previous"] == first
    audit = AuditLog(LocalStore(workspace / "artifacts")).entries(MODEL, second)
    assert [e.new for e in audit if e.action == "rollout"] == ["promoted"]

    failing = tmp_path / "failing"  # loads, then refuses every request: its copies are all 5XX
    shutil.copytree(tiny_model_dir, failing)
    settings = json.loads((failing / "config.json").read_text())
    (failing / "config.json").write_text(json.dumps({**settings, "max_position_embeddings": 4}))
    third = approved_version(failing)
    release(QUICK)
    traffic(workspace, f"v{third}", 10)
    status = rollout(QUICK)
    assert status.decision.action == "rollback" and "5XX rate" in status.decision.reason
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == second
    tags = mlflow.get_model_version(MODEL, third).tags
    assert tags[RELEASE_STATE] == "rolled back" and "5XX rate" in tags[RELEASE_REASON]
    described = local_client(workspace).describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{second}"]
    assert "ShadowProductionVariants" not in described


def test_with_no_champion_the_first_candidate_meets_the_base_model_in_shadow_and_replaces_it(
        workspace: Path, tiny_model_dir: Path, smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    from pipelines.flows.release import rollout

    config = PipelineConfig.model_validate({
        "model_name": MODEL, "deployment": {"instance_type": "ml.m5.large"},
        "finetune": {"base_model": str(tiny_model_dir)}, "evaluate": {"generation": {"max_new_tokens": 8}},
        "rollout": {"min_duration_s": 0, "min_requests": 8, "quality_sample": 0}})  # gibberish: see QUICK
    first = approved_version(make_tiny_model(smollm2_tokenizer_dir, tmp_path / "first", seed=3))
    [outcome] = release(config)
    assert (outcome.state, outcome.strategy) == ("released", "shadow") and "against base" in outcome.detail
    sagemaker = local_client(workspace)
    described = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == ["base"]
    assert [v["VariantName"] for v in described["ShadowProductionVariants"]] == [f"v{first}"]
    mlflow = client()
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHALLENGER).version) == first
    assert not [a for a in mlflow.get_registered_model(MODEL).aliases if a == T.CHAMPION]
    assert mlflow.get_model_version(MODEL, first).tags["genaiops.release.against"] == "base"

    traffic(workspace, f"v{first}", 10)
    status = rollout(config)
    assert (status.champion, status.challenger) == ("base", f"v{first}")
    assert status.decision is not None and status.decision.action == "promote", status.decision
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == first
    assert mlflow.get_model_version(MODEL, first).tags["genaiops.release.previous"] == "base"
    described = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{first}"]
    assert "ShadowProductionVariants" not in described
    [promoted] = [e for e in AuditLog(LocalStore(workspace / "artifacts")).entries(MODEL, first) if e.action == "rollout"]
    assert promoted.new == "promoted" and promoted.note == "champion was the base model"
    alarms = {a.spec.name for a in AlarmStore(workspace / "alarms").list()}
    assert not [a for a in alarms if "/base/" in a]  # the endpoint's alarms follow what serves


def test_a_canary_whose_rollback_alarm_fires_returns_all_traffic_to_the_champion(
        workspace: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil
    import threading
    import urllib.error
    import urllib.request

    first = approved_version(tiny_model_dir)
    release(CONFIG)
    failing = tmp_path / "failing"
    shutil.copytree(tiny_model_dir, failing)
    settings = json.loads((failing / "config.json").read_text())
    (failing / "config.json").write_text(json.dumps({**settings, "max_position_embeddings": 4}))
    second = approved_version(failing)
    canary = CONFIG.model_copy(update={
        "release": CONFIG.release.model_copy(update={"strategy": "canary"}),
        # The waits are far longer than the test: only the rollback alarm can end this release soon.
        "deployment": CONFIG.deployment.model_copy(update={"canary_percent": 50, "wait_seconds": 3600,
                                                           "bake_seconds": 3600}),
        "monitoring": CONFIG.monitoring.model_validate({"period": 10, "alarms": {"5xx_rate": {
            "evaluation_periods": 1, "datapoints_to_alarm": 1}}})})
    url = f"{running_url(workspace)}/endpoints/{ENDPOINT}"
    seen: list[tuple[int, str]] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            request = urllib.request.Request(f"{url}/invocations", data=b'{"inputs": "Ana: hi. Ben: hello."}',
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    seen.append((response.status, response.headers["X-Amzn-Invoked-Production-Variant"]))
            except urllib.error.HTTPError as exc:
                seen.append((exc.code, exc.headers.get("X-Amzn-Invoked-Production-Variant", "")))

    caller = threading.Thread(target=load)
    caller.start()
    try:
        [outcome] = release(canary)
    finally:
        done.set()
        caller.join()
    assert outcome.state == "failed" and "rolled the update back" in outcome.detail
    assert f"{ENDPOINT}/v{second}/5xx-rate is in ALARM" in outcome.detail
    described = local_client(workspace).describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{first}"]
    assert {variant for status, variant in seen if status != 200} <= {f"v{second}"}  # only the canary's share failed
    mlflow = client()
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == first
    assert mlflow.get_model_version(MODEL, second).tags[RELEASE_STATE] == "failed"
    alarms = {a.spec.name for a in AlarmStore(workspace / "alarms").list()}
    assert not [a for a in alarms if f"/v{second}/" in a]  # the endpoint's alarms follow what serves again


def test_a_release_killed_mid_deployment_finishes_on_the_next_run_without_doing_anything_twice(
        workspace: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    version = approved_version(tiny_model_dir)
    config = tmp_path / "config.yaml"
    config.write_text(f"model_name: {MODEL}\ndeployment: {{instance_type: ml.m5.large}}\nrelease: {{baseline: false}}\n")
    log = tmp_path / "release.log"
    with log.open("wb") as output:
        process = subprocess.Popen([str(Path(sys.executable).parent / "genaiops"), "release", "--config", str(config)],
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")})
    record = workspace / "sagemaker" / "endpoints" / f"{ENDPOINT}.json"
    deadline = time.monotonic() + 300
    while not (record.exists() and json.loads(record.read_text())["EndpointStatus"] == "Creating"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # a crash, half-way through the deployment
    process.wait()
    [outcome] = release(CONFIG)
    assert outcome.resumed and outcome.state == "released", outcome
    assert [e["EndpointName"] for e in local_client(workspace).list_endpoints()["Endpoints"]] == [ENDPOINT]
    assert len(list((workspace / "sagemaker" / "endpoint-configs").iterdir())) == 1
    assert len(list((workspace / "sagemaker" / "models").iterdir())) == 1
    assert len(releases(workspace, version)) == 1
    assert {a.spec.name for a in AlarmStore(workspace / "alarms").list()} == {
        s.name for s in endpoint_alarms(ENDPOINT, [f"v{version}"], MODEL, CONFIG.monitoring)}  # one set


def test_a_linear_release_that_completes_makes_the_version_champion(
        workspace: Path, tiny_model_dir: Path, smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    first = approved_version(tiny_model_dir)
    release(CONFIG)
    second = approved_version(make_tiny_model(smollm2_tokenizer_dir, tmp_path / "second", seed=5))
    linear = CONFIG.model_copy(update={
        "release": CONFIG.release.model_copy(update={"strategy": "linear"}),
        "deployment": CONFIG.deployment.model_copy(update={"linear_step_percent": 50, "wait_seconds": 1,
                                                           "bake_seconds": 1})})
    [outcome] = release(linear)
    assert (outcome.state, outcome.strategy) == ("released", "linear"), outcome
    mlflow = client()
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == second
    assert mlflow.get_model_version(MODEL, second).tags["genaiops.release.previous"] == first
    described = local_client(workspace).describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{second}"]
    assert described["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "LINEAR"
    alarms = {a.spec.name for a in AlarmStore(workspace / "alarms").list()}
    assert not [a for a in alarms if f"/v{first}/" in a]  # the replaced champion's alarms went with its variant


HOSTILE = [  # each refused with a 4XX; the ones a variant refused are captured, as SageMaker captures them
    b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # nested past any parser's depth
    b"\xff\xfe\x00 not UTF-8 \x80\x81",
    b'{"inputs": 5}',
    b'{"inputs": "Ana: hi.", "parameters": {"max_new_tokens": -1}}',
    b'{"inputs": "Ana: hi.", "parameters": {"max_new_tokens": 1000000000}}',
    b"[1, 2, 3]",
    b"{}",
    b"null",
    json.dumps({"inputs": ["Ana: hi."] * 1000}).encode(),
    b'{"inputs": "' + b"x" * (7 << 20) + b'"}',  # over SageMaker's 6 MB
]


def test_hostile_requests_are_refused_and_the_rollout_still_decides(
        workspace: Path, tiny_model_dir: Path, smollm2_tokenizer_dir: Path, tmp_path: Path) -> None:
    """Ten hostile bodies through boto3's runtime client to an endpoint with a shadow: each is a 4XX, the endpoint
    keeps serving, the captured ones that no reader can parse are skipped and counted, and the rollout decides."""
    import pytest
    from botocore.exceptions import ClientError

    from pipelines.backends import make_runtime
    from pipelines.flows.release import rollout

    approved_version(tiny_model_dir)
    second = approved_version(make_tiny_model(smollm2_tokenizer_dir, tmp_path / "second", seed=3))
    release(QUICK)
    release(QUICK)  # the second into shadow
    runtime, forwarded = make_runtime(load_settings()), 0
    for body in HOSTILE:
        with pytest.raises(ClientError) as refused:
            runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=body, ContentType="application/json")
        status = refused.value.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status in (400, 413), (body[:40], refused.value.response["Error"])
        forwarded += status == 400  # 413 is refused before any variant sees it
    traffic(workspace, f"v{second}", 10, already=forwarded)
    decided = rollout(QUICK)
    assert decided.decision is not None and decided.decision.action == "promote", decided.decision
    assert decided.unreadable >= 2  # the body nested too deep and the one that is not UTF-8, in both variants' capture
    assert str(client().get_model_version_by_alias(MODEL, T.CHAMPION).version) == second
