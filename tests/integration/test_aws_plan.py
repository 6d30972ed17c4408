"""`genaiops retrain` on the aws backend before anything is paid for: missing settings are named (exit 2, no
traceback), and `--plan` checks the role, bucket, KMS key, JumpStart spec and quotas with read calls only
(moto for IAM, S3 and KMS; botocore hooks answer DescribeHubContent and ListServiceQuotas, which moto lacks,
after botocore validated the requests against the service model), then prints what the run creates."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws
from typer.testing import CliRunner

from tests.jumpstart import ROLE_ARN, answer_describe_hub_content, create_role

REPO = Path(__file__).resolve().parents[2]
BUCKET = "genaiops-artifacts"


def test_missing_aws_settings_are_named_each_and_exit_2_without_a_traceback(isolated_env: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENAIOPS_")}
    result = subprocess.run([str(Path(sys.executable).parent / "genaiops"), "retrain", "--plan"],
                            env={**env, "GENAIOPS_BACKEND": "aws", "GENAIOPS_WORKSPACE": str(isolated_env),
                                 "COLUMNS": "200"}, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    for name in ("GENAIOPS_ARTIFACT_BUCKET", "GENAIOPS_MLFLOW_TRACKING_URI", "GENAIOPS_SAGEMAKER_ROLE_ARN"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def answer_service_quotas(model: Any, **_: Any) -> tuple[Any, dict[str, Any]] | None:
    """SageMaker's instance-usage quotas, as Service Quotas lists them (moto only knows VPC quotas)."""
    if model.name != "ListServiceQuotas":
        return None
    from botocore.awsrequest import AWSResponse

    quotas = [{"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": f"L-{i:08d}", "Value": value}
              for i, (name, value) in enumerate([("ml.g5.2xlarge for training job usage", 2.0),
                                                 ("ml.g5.xlarge for endpoint usage", 4.0)])]
    return AWSResponse(url="https://servicequotas.us-east-1.amazonaws.com", status_code=200, headers={}, raw=None), \
        {"Quotas": quotas, "ResponseMetadata": {"HTTPStatusCode": 200}}


@pytest.fixture
def aws(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto's IAM, S3 and KMS with the role, bucket and key a retrain needs; every call the plan makes is recorded."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        create_role()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
        topic = boto3.client("sns").create_topic(Name="genaiops-notifications")["TopicArn"]
        calls: list[str] = []

        def observed(settings: Any) -> Any:
            session = boto3.Session(region_name=settings.region)
            events = session._session
            events.register("before-call.sagemaker.DescribeHubContent", answer_describe_hub_content)
            events.register("before-call.service-quotas.*", answer_service_quotas)
            events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
            return session

        monkeypatch.setattr("pipelines.backends.boto_session", observed)
        for name, value in {"BACKEND": "aws", "ARTIFACT_BUCKET": BUCKET, "KMS_KEY_ID": key,
                            "SAGEMAKER_ROLE_ARN": ROLE_ARN, "NOTIFY_TOPIC_ARN": topic,
                            "MLFLOW_TRACKING_URI": "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/x"
                            }.items():
            monkeypatch.setenv(f"GENAIOPS_{name}", value)
        yield {"calls": calls, "key": key}


def plan(config: Path) -> Any:
    from pipelines.cli import app

    return CliRunner().invoke(app, ["retrain", "--plan", "--config", str(config)], env={"COLUMNS": "250"})


def test_the_plan_of_configs_aws_yaml_reads_only_and_names_the_license_it_needs(aws: dict[str, Any]) -> None:
    result = plan(REPO / "configs" / "aws.yaml")
    text = result.output
    assert result.exit_code == 2, text
    assert "plan: retrain dialogue-summarizer on aws (us-east-1)" in text
    assert "cannot start: JumpStart model: finetune.jumpstart.accept_eula" in text
    assert {"GetRole", "HeadBucket", "DescribeKey", "DescribeHubContent", "ListServiceQuotas"} <= set(aws["calls"])
    assert all(name.startswith(("Get", "Head", "Describe", "List")) for name in aws["calls"]), aws["calls"]


def test_a_ready_plan_lists_the_jobs_endpoints_and_instance_hours_and_writes_nothing(
        aws: dict[str, Any], tmp_path: Path) -> None:
    document = yaml.safe_load((REPO / "configs" / "aws.yaml").read_text())
    document["finetune"]["jumpstart"]["accept_eula"] = True
    config = tmp_path / "aws.yaml"
    config.write_text(yaml.safe_dump(document))
    result = plan(config)
    text = result.output
    assert result.exit_code == 0, text
    for line in ("ok       execution role: arn:aws:iam::123456789012:role/genaiops-training exists",
                 f"ok       artifact bucket: s3://{BUCKET} is reachable",
                 "ok       KMS key:", "ok       notification topic: arn:aws:sns:us-east-1:",
                 "ok       JumpStart model: meta-textgeneration-llama-3-2-1b-instruct",
                 "ok       quota: ml.g5.2xlarge for training job usage: 2 ≥ 1 needed",
                 "ok       quota: ml.g5.xlarge for endpoint usage: 4 ≥ 2 needed",
                 "training job: meta-textgeneration-llama-3-2-1b-instruc-<dataset hash> on 1 x ml.g5.2xlarge, "
                 "at most 14400 s",
                 "endpoint (temporary): dialogue-summarizer-eval-<dataset hash> on 2 x ml.g5.xlarge, at most 7200 s",
                 "at most 8.00 instance-hours"):
        assert line in text, line
    assert all(name.startswith(("Get", "Head", "Describe", "List")) for name in aws["calls"]), aws["calls"]
    assert not boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents")  # nothing written


def test_a_missing_role_stops_the_run_before_any_cost(aws: dict[str, Any], tmp_path: Path) -> None:
    boto3.client("iam").delete_role(RoleName="genaiops-training")
    result = plan(REPO / "configs" / "aws.yaml")
    assert result.exit_code == 2
    assert "execution role: GENAIOPS_SAGEMAKER_ROLE_ARN arn:aws:iam::123456789012:role/genaiops-training: " \
           "NoSuchEntity" in result.output


def test_without_a_notification_topic_the_plan_names_the_setting(aws: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENAIOPS_NOTIFY_TOPIC_ARN")
    result = plan(REPO / "configs" / "aws.yaml")
    assert result.exit_code == 2
    assert "notification topic: GENAIOPS_NOTIFY_TOPIC_ARN is unset" in result.output


def test_the_plan_session_refuses_any_call_that_is_not_a_read() -> None:
    from pipelines.plan import refuse_writes

    s3 = boto3.client("s3", region_name="us-east-1").meta.service_model
    refuse_writes(model=s3.operation_model("HeadBucket"))
    with pytest.raises(RuntimeError, match=r"a plan made a mutating AWS call: s3\.PutObject"):
        refuse_writes(model=s3.operation_model("PutObject"))
