"""The monitor flow on the aws backend, offline against moto: a SageMaker endpoint's capture in S3 (SageMaker's
layout) is read past a cursor kept in S3, the drift metrics go out with PutMetricData, and the endpoint's alarms
and dashboard are put to CloudWatch once, however often the flow runs."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from monitoring.metrics import CloudWatchSource, MetricStat
from pipelines.flows.monitor import VERSION_TAG, MonitorError, monitor
from pipelines.settings import PipelineConfig
from serving.capture import capture_record
from steps.artifacts import S3Store
from steps.base_model import token_counter
from steps.data import DataConfig, prepare_dataset
from steps.prompts import raw_input
from steps.sample_data import generate_records, write_jsonl

REGION, BUCKET, NAME = "us-east-1", "genaiops-artifacts", "summaries"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "GENAIOPS_BACKEND": "aws", "GENAIOPS_REGION": REGION, "GENAIOPS_ARTIFACT_BUCKET": BUCKET,
           "GENAIOPS_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "GENAIOPS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/genaiops-sagemaker"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        store = S3Store(BUCKET, s3, prefix="genaiops")
        source = tmp_path / "dialogues.jsonl"
        write_jsonl(generate_records(600, seed=7), source)
        data = DataConfig.model_validate({"source": str(source), "contract": {"min_rows": 20}})
        dataset = prepare_dataset(data, store, token_counter(tiny_model_dir))
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model(ModelName="summarizer-1", ExecutionRoleArn=env["GENAIOPS_SAGEMAKER_ROLE_ARN"],
                               PrimaryContainer={"Image": "image", "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"},
                               Tags=[{"Key": VERSION_TAG, "Value": "models:/dialogue-summarizer/1"}])
        sagemaker.create_endpoint_config(
            EndpointConfigName="summaries-1", ProductionVariants=[{
                "VariantName": "champion", "ModelName": "summarizer-1", "InitialInstanceCount": 1,
                "InstanceType": "ml.g4dn.xlarge", "InitialVariantWeight": 1.0}],
            DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                               "DestinationS3Uri": f"s3://{BUCKET}/data-capture",
                               "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]})
        sagemaker.create_endpoint(EndpointName=NAME, EndpointConfigName="summaries-1")
        config = PipelineConfig.model_validate({
            "finetune": {"base_model": str(tiny_model_dir)},
            "monitoring": {"notify_topic_arn": "arn:aws:sns:us-east-1:123456789012:genaiops-alarms",
                           "drift": {"reference_dataset": dataset.hash, "min_requests": 20}}})
        yield {"s3": s3, "dataset": dataset, "template": data.template, "config": config}


def capture(aws: dict[str, Any], texts: list[str], start: datetime) -> None:
    """Capture records as SageMaker writes them: <prefix>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl."""
    lines = []
    for i, text in enumerate(texts):
        when = start + timedelta(seconds=i)
        record = capture_record(json.dumps({"inputs": text}).encode(), b'[{"generated_text": "A short summary."}]',
                                content_type="application/json", accept="application/json", inference_id=None,
                                when=when)
        lines.append(json.dumps(record))
    key = f"data-capture/{NAME}/champion/{start:%Y/%m/%d/%H}/{start:%M-%S-%f}.jsonl"
    aws["s3"].put_object(Bucket=BUCKET, Key=key, Body="\n".join(lines).encode())


def test_the_aws_monitor_reads_s3_capture_publishes_metrics_and_puts_alarms_once(aws: dict[str, Any]) -> None:
    held_out = [raw_input(aws["template"], e.prompt) for e in aws["dataset"].splits["test"]]
    rng = random.Random(3)
    drifted = [" ".join(rng.choice(["Photosynthesis converts light into chemical energy.",
                                    "The index rebuild held a lock on the table for four hours."])
                        for _ in range(rng.randint(1, 5))) for _ in range(len(held_out))]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    capture(aws, held_out, start)
    first = monitor(NAME, aws["config"])
    assert first.new_records == len(held_out) and first.metrics["EmbeddingDrift"] < 0.15
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix=f"{NAME}/")["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == sorted(first.cloudwatch["put"])
    assert f"{NAME}/embedding-drift" in first.cloudwatch["put"]
    assert all(a["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:genaiops-alarms"] for a in alarms)
    body = json.loads(cloudwatch.get_dashboard(DashboardName=first.cloudwatch["dashboard"])["DashboardBody"])
    assert any(w["type"] == "alarm" for w in body["widgets"])

    capture(aws, drifted, start + timedelta(minutes=2))
    second = monitor(NAME, aws["config"])
    assert second.new_records == len(drifted)  # the cursor in S3: only what came since
    assert second.metrics["EmbeddingDrift"] > 0.15
    assert len(cloudwatch.describe_alarms(AlarmNamePrefix=f"{NAME}/")["MetricAlarms"]) == len(alarms)  # not twice
    drift = MetricStat(namespace="genaiops/Monitoring", name="EmbeddingDrift", stat="Maximum",
                       dimensions={"EndpointName": NAME})
    now = datetime.now(UTC)
    values = CloudWatchSource(cloudwatch).datapoints(drift, period=60, start=now - timedelta(minutes=5),
                                                     end=now + timedelta(minutes=1))
    assert max(v for v in values if v is not None) == pytest.approx(second.metrics["EmbeddingDrift"])
    assert monitor(NAME, aws["config"]).new_records == 0

    with pytest.raises(MonitorError, match="Could not find endpoint"):
        monitor("elsewhere", aws["config"])
