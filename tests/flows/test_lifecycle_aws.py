"""The lifecycle on the aws backend, end to end and offline, with the same code that runs on AWS: moto's server for
S3, CloudWatch, SNS, IAM, STS and KMS, JumpStart's training jobs answered with real fine-tuned artifacts, and the
local control plane as SageMaker's endpoint URL (its endpoints put their metrics to CloudWatch and their capture to
S3, as SageMaker's do).

retrain → an approval through the approval server as the approval stack runs it (the flows' store on PostgreSQL, the
approver signed in by a proxy that plays its load balancer, the entries in the Object Lock audit bucket) → release
in shadow against what serves (the base model first)
→ traffic through boto3's sagemaker-runtime → the rollout decides from the S3 capture and CloudWatch's metrics →
promote; then a second candidate, whose rollback alarm goes to ALARM (`SetAlarmState`, CloudWatch's own API for
testing an alarm, stands in for its evaluation, which moto lacks) → the rollout, started with the parameters the
orchestration stack's EventBridge rule sends for that alarm's state change, rolls it back: the old champion serves
alone and a notice is on the SNS topic. Nothing here writes a tag, a capture file or a metric."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow import MlflowClient

from contracts import tags as T
from model_registry.audit import AuditLog
from pipelines.settings import PipelineConfig
from steps.artifacts import LocalStore, S3Store
from tests.approvals import ALB_CONFIG, PEOPLE
from tests.aws import REGION, adapter, aws_backend, jumpstart, notices, with_percentiles
from tests.postgres import postgres

MODEL = "summarizer"
AUDIT_BUCKET = "genaiops-audit"
TEMPLATE = "Summarize the following conversation.\n\n{input}\n\nSummary:"
GENERATION = {"max_new_tokens": 6, "batch_size": 4}


def config(source: Path) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "model_name": MODEL,
        "data": {"source": str(source), "contract": {"min_rows": 20}, "template": TEMPLATE},
        "finetune": {"jumpstart": {"accept_eula": True, "max_run_seconds": 3600}},
        "evaluate": {"max_samples": 4, "general_samples": 2, "generation": GENERATION, "bootstrap": {"resamples": 200},
                     "gates": [{"metric": "empty_rate", "max": 1.0}]},
        "deployment": {"instance_type": "ml.g5.xlarge"},
        "rollout": {"min_duration_s": 0, "min_requests": 6, "max_duration_s": 86400},
        "approval": ALB_CONFIG.model_dump(),
    })


@pytest.fixture
def aws(isolated_env: Path, tiny_model_dir: Path, tmp_path: Path, moto_url: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    with_percentiles(monkeypatch)
    with aws_backend(isolated_env, moto_url, monkeypatch) as world, postgres() as database:
        monkeypatch.setenv("GENAIOPS_MLFLOW_TRACKING_URI", database)
        world["tracking"] = database
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=AUDIT_BUCKET, ObjectLockEnabledForBucket=True)
        boto3.client("s3", region_name=REGION).put_object_lock_configuration(
            Bucket=AUDIT_BUCKET, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {
                "DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
        monkeypatch.setenv("GENAIOPS_AUDIT_BUCKET", AUDIT_BUCKET)
        jumpstart(monkeypatch, tmp_path / "scratch", tiny_model_dir,
                  [adapter(tiny_model_dir, tmp_path / "adapter-1", 1), adapter(tiny_model_dir, tmp_path / "adapter-2", 2)],
                  template=TEMPLATE, generation=GENERATION)
        yield {**world, "workspace": isolated_env}


def approve(aws: dict[str, Any], version: str, note: str) -> None:
    """An approver's approval, made in the approval server's UI routes as a person its load balancer signed in:
    its rules, its stamp, its audit entries in the audit bucket."""
    from pipelines.backends import audit_spec
    from pipelines.settings import load_settings
    from tests.alb import SESSION_COOKIE
    from tests.integration.test_alb_sign_in import send
    from tests.servers import alb_approval_server

    settings = load_settings()
    with alb_approval_server(aws["workspace"], ALB_CONFIG, PEOPLE, audit=audit_spec(settings),
                             database=settings.tracking_uri, artifact_root=settings.mlflow_artifact_root) as server:
        for key, value in ((T.APPROVAL_NOTE, note), (T.APPROVAL_STATUS, T.APPROVED)):
            status, answer = send(f"{server['people_url']}/ajax-api/2.0/mlflow/model-versions/set-tag", "POST",
                                  {"name": MODEL, "version": version, "key": key, "value": value},
                                  {"Cookie": f"{SESSION_COOKIE}=alice"})
            assert status == 200, answer
    entries = [e for e in AuditLog(LocalStore(aws["workspace"]), server=S3Store(AUDIT_BUCKET, boto3.client(
        "s3", region_name=REGION))).server_entries(MODEL, version) if e.key == T.APPROVAL_STATUS]
    assert [(e.user, e.new, e.outcome) for e in entries] == [(PEOPLE["alice"]["email"], T.APPROVED, "accepted")]


def shadow_traffic(pipeline: PipelineConfig, dataset_hash: str) -> None:
    """The candidate's held-out records through boto3's sagemaker-runtime client, until the shadow has answered
    its copies (the evidence the rollout reads in CloudWatch)."""
    from pipelines.backends import make_runtime, make_store
    from pipelines.flows.release import make_rollout
    from pipelines.settings import load_settings
    from serving.traffic import send, until_mirrored
    from steps.data import load_prepared

    settings = load_settings()
    records = load_prepared(make_store(settings), dataset_hash).splits["test"][:8]
    assert send(make_runtime(settings), MODEL, records, TEMPLATE).failed == 0
    rollout = make_rollout(settings, pipeline)
    until_mirrored(rollout, rollout.status(), print)


def eventbridge_trigger(tmp_path: Path, alarm: str, reason: str) -> dict[str, Any]:
    """The `trigger` parameter the orchestration stack's rule sends to `rollout/<model>` for this alarm's state
    change: the rule's pattern must match the event, and its input transformer makes the task's command."""
    from aws_cdk.assertions import Template

    from infra_cdk.app import build_app

    app = build_app(stage="dev", outdir=str(tmp_path / "cdk.out"),
                    context={"models": MODEL, "prefect_api_url": "https://prefect.example.org/api"})
    stack = next(c for c in app.node.children if getattr(c, "stack_name", "") == "genaiops-dev-orchestration")
    rules = [r["Properties"] for r in Template.from_stack(stack).to_json()["Resources"].values()  # type: ignore[attr-defined]
             if r["Type"] == "AWS::Events::Rule" and f"rollout/{MODEL}" in r["Properties"]["Description"]]
    [rule] = rules
    event = {"source": "aws.cloudwatch", "detail-type": "CloudWatch Alarm State Change",
             "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "detail": {"alarmName": alarm, "state": {"value": "ALARM", "reason": reason}}}
    pattern = rule["EventPattern"]
    assert event["source"] in pattern["source"] and event["detail-type"] in pattern["detail-type"]
    assert event["detail"]["state"]["value"] in pattern["detail"]["state"]["value"]
    assert any(fnmatch.fnmatchcase(alarm, p["wildcard"] if isinstance(p, dict) else p)
               for p in pattern["detail"]["alarmName"])
    [target] = rule["Targets"]
    transformer = target["InputTransformer"]
    text = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        text = text.replace(f"<{name}>", str(value))
    command = json.loads(text)["containerOverrides"][0]["command"]
    assert command[:4] == ["prefect", "deployment", "run", f"rollout/{MODEL}"]
    [parameter] = [command[i + 1] for i, part in enumerate(command) if part == "--param"]
    name, _, value = parameter.partition("=")
    assert name == "trigger"
    return dict(json.loads(value))


def test_the_aws_lifecycle_promotes_on_s3_capture_and_cloudwatch_then_rolls_back_on_a_rollback_alarm(
        aws: dict[str, Any], sample_jsonl: Path, tmp_path: Path) -> None:
    from pipelines.flows import approval_watch, retrain
    from pipelines.flows.release import release, rollout
    from pipelines.trigger import Trigger
    from steps.sample_data import generate_records, write_jsonl

    sagemaker = boto3.client("sagemaker", region_name=REGION, endpoint_url=aws["twin"])
    mlflow = MlflowClient(tracking_uri=aws["tracking"], registry_uri=aws["tracking"])
    first = config(sample_jsonl)

    trained = retrain(first)  # JumpStart's training job, evaluated on a temporary endpoint
    assert trained.status == T.PENDING and trained.gate == "passed"
    approve(aws, trained.version, "first fine-tune")
    assert [d["action"] for d in approval_watch(first)] == ["release requested"]
    [released] = release(first)
    assert (released.state, released.strategy) == ("released", "shadow") and "against base" in released.detail
    described = sagemaker.describe_endpoint(EndpointName=MODEL)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == ["base"]
    assert [v["VariantName"] for v in described["ShadowProductionVariants"]] == [f"v{trained.version}"]
    assert described["DataCaptureConfig"]["DestinationS3Uri"].startswith("s3://")

    shadow_traffic(first, trained.dataset_hash)
    decided = rollout(first)
    assert decided.decision is not None and decided.decision.action == "promote", decided.decision
    evidence = {e.name: e for e in decided.decision.evidence}
    assert evidence["agreement"].test.endswith("pairs") and evidence["ROUGE-L"].verdict == "ok"  # from S3 capture
    assert "periods" in evidence["ModelLatency p99"].test  # CloudWatch's percentiles, per period
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == trained.version
    described = sagemaker.describe_endpoint(EndpointName=MODEL)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{trained.version}"]
    assert "ShadowProductionVariants" not in described

    more = tmp_path / "new-data.jsonl"  # new data: a second candidate
    write_jsonl(generate_records(160, seed=11), more)
    second = config(more)
    candidate = retrain(second)
    assert candidate.version != trained.version and candidate.gate == "passed"
    approve(aws, candidate.version, "second fine-tune")
    approval_watch(second)
    [released] = release(second)
    assert released.state == "released" and f"against v{trained.version}" in released.detail
    alarm = f"{MODEL}/v{candidate.version}/5xx-rate"
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    [put] = cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]  # synced by the release
    assert put["AlarmActions"] == [aws["topic"]]
    notices(aws["queue"])  # what was published so far (waiting for approval, twice)

    reason = "Threshold Crossed: 1 out of the last 1 datapoints [50.0] was greater than the threshold (5.0)."
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason=reason)
    trigger = eventbridge_trigger(tmp_path, alarm, reason)
    status = rollout(second, trigger=Trigger.model_validate(trigger))
    assert status.decision is not None and status.decision.action == "rollback"
    assert f"alarm {alarm} is in ALARM" in status.decision.reason
    described = sagemaker.describe_endpoint(EndpointName=MODEL)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == [f"v{trained.version}"]
    assert "ShadowProductionVariants" not in described
    assert str(mlflow.get_model_version_by_alias(MODEL, T.CHAMPION).version) == trained.version
    assert mlflow.get_model_version(MODEL, candidate.version).tags[T.RELEASE_STATE] == "rolled back"
    [notice] = [n for n in notices(aws["queue"]) if "rolled back" in n.get("Subject", "")]
    assert f"v{candidate.version}" in notice["Subject"] and alarm in notice["Message"]
    answer = boto3.client("sagemaker-runtime", region_name=REGION, endpoint_url=aws["twin"]).invoke_endpoint(
        EndpointName=MODEL, Body=b'{"inputs": "Ana: hi. Ben: hello."}', ContentType="application/json")
    assert answer["InvokedProductionVariant"] == f"v{trained.version}"
