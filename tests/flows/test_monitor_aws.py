"""The monitor flow on the aws backend, offline: a version deployed through the deployer to the twin standing in
for SageMaker (moto for S3 and CloudWatch), traffic through boto3's sagemaker-runtime client, capture in S3 in
SageMaker's layout (written by the endpoint), read past a cursor kept in S3; the drift metrics go out with
PutMetricData, and the endpoint's alarms and dashboard are put to CloudWatch once, however often the flow runs."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from monitoring.metrics import CloudWatchSource, MetricStat
from pipelines.settings import PipelineConfig
from steps.data import Example
from steps.prompts import render_prompt
from tests.aws import BUCKET, REGION, aws_backend

NAME, MODEL = "summaries", "dialogue-summarizer"
OTHER = ["Photosynthesis converts light into chemical energy.", "The index rebuild held a lock on the table for hours."]


@pytest.fixture
def aws(isolated_env: Path, tiny_model_dir: Path, moto_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from contracts.names import BASELINE
    from pipelines.backends import make_deployer, make_store
    from pipelines.settings import load_settings
    from serving import package
    from serving.deployer import Version
    from steps.base_model import token_counter
    from steps.data import DataConfig, prepare_dataset
    from steps.sample_data import generate_records, write_jsonl

    with aws_backend(isolated_env, moto_url, monkeypatch) as world:
        settings = load_settings()
        store = make_store(settings)
        source = tmp_path / "dialogues.jsonl"
        write_jsonl(generate_records(600, seed=7), source)
        data = DataConfig.model_validate({"source": str(source), "contract": {"min_rows": 20}})
        dataset = prepare_dataset(data, store, token_counter(tiny_model_dir))
        config = PipelineConfig.model_validate({
            "model_name": MODEL, "finetune": {"base_model": str(tiny_model_dir)},
            "monitoring": {"drift": {"reference_dataset": dataset.hash, "min_requests": 20}}})
        built = package.of_base(str(tiny_model_dir), str(tiny_model_dir), template=data.template,
                                generation={"max_new_tokens": 4}, store=store, region=REGION)
        assert built.uri.startswith(f"s3://{BUCKET}/")
        base = Version(model=MODEL, version=BASELINE, package_uri=built.uri, digest=built.digest, image=built.image)
        make_deployer(settings, config).deploy(NAME, base, "all_at_once")  # tags its model, captures to S3
        yield {**world, "settings": settings, "config": config, "dataset": dataset, "template": data.template}


def traffic(aws: dict[str, Any], texts: list[str]) -> None:
    """Through boto3's sagemaker-runtime client, then until the endpoint has stored their capture in S3 (an upper
    bound on a few tiny-model answers, not a race)."""
    from pipelines.backends import make_runtime
    from serving.traffic import send

    before = captured(aws)
    records = [Example(id=f"r{i}", prompt=render_prompt(aws["template"], text), target="") for i, text in
               enumerate(texts)]
    assert send(make_runtime(aws["settings"]), NAME, records, aws["template"]).failed == 0
    deadline = time.monotonic() + 300
    while captured(aws) < before + len(texts):
        assert time.monotonic() < deadline, "the endpoint's capture did not reach S3"
        time.sleep(0.2)


def captured(aws: dict[str, Any]) -> int:
    lines = 0
    for page in aws["s3"].get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"genaiops/capture/{NAME}/"):
        for item in page.get("Contents", []):
            lines += len(aws["s3"].get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().splitlines())
    return lines


def test_the_aws_monitor_reads_s3_capture_publishes_metrics_and_puts_alarms_once(aws: dict[str, Any]) -> None:
    from pipelines.flows.monitor import MonitorError, monitor
    from steps.prompts import raw_input

    held_out = [raw_input(aws["template"], e.prompt) for e in aws["dataset"].splits["test"]]
    traffic(aws, held_out)
    first = monitor(NAME, aws["config"])
    assert first.new_records == len(held_out) and first.metrics["EmbeddingDrift"] < 0.15
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    alarms = cloudwatch.describe_alarms(AlarmNamePrefix=f"{NAME}/")["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == sorted(first.alarms.put)
    assert f"{NAME}/embedding-drift" in first.alarms.put and f"{NAME}/base/5xx-rate" in first.alarms.put
    assert all(a["AlarmActions"] == [aws["topic"]] for a in alarms)  # the setting's topic
    dashboard = cloudwatch.get_dashboard(DashboardName=f"genaiops-{NAME}")["DashboardBody"]
    assert "alarm" in dashboard and first.dashboard.endswith(f"genaiops-{NAME}")
    invocations = CloudWatchSource(cloudwatch).datapoints(  # what the endpoint itself put, as SageMaker does
        MetricStat(namespace="AWS/SageMaker", name="Invocations", stat="Sum",
                   dimensions={"EndpointName": NAME, "VariantName": "base"}),
        period=60, start=datetime.now(UTC) - timedelta(minutes=10), end=datetime.now(UTC) + timedelta(minutes=1))
    assert sum(v for v in invocations if v) == len(held_out)

    rng = random.Random(3)
    traffic(aws, [" ".join(rng.choice(OTHER) for _ in range(rng.randint(1, 5))) for _ in range(len(held_out))])
    second = monitor(NAME, aws["config"])
    assert second.new_records == len(held_out)  # the cursor in S3: only what came since
    assert second.metrics["EmbeddingDrift"] > 0.15
    assert len(cloudwatch.describe_alarms(AlarmNamePrefix=f"{NAME}/")["MetricAlarms"]) == len(alarms)  # not twice
    drift = MetricStat(namespace="genaiops/Monitoring", name="EmbeddingDrift", stat="Maximum",
                       dimensions={"EndpointName": NAME})
    now = datetime.now(UTC)
    values = CloudWatchSource(cloudwatch).datapoints(drift, period=60, start=now - timedelta(minutes=5),
                                                     end=now + timedelta(minutes=1))
    assert max(v for v in values if v is not None) == pytest.approx(second.metrics["EmbeddingDrift"])
    assert monitor(NAME, aws["config"]).new_records == 0
    assert first.metrics["InputTokenCount/base"] > 0 and first.metrics["OutputTokenCount/base"] >= 0
    for name in ("UnfaithfulOutputRate", "ToxicOutputRate", "InputTokenCount"):  # of the captured answers
        assert first.metrics[f"{name}/base"] >= 0
        rate = MetricStat(namespace="genaiops/Monitoring", name=name, stat="Maximum",
                          dimensions={"EndpointName": NAME, "VariantName": "base"})
        points = CloudWatchSource(cloudwatch).datapoints(rate, period=60, start=now - timedelta(minutes=10),
                                                         end=now + timedelta(minutes=1))
        assert [v for v in points if v is not None], name
    assert f"{NAME}/base/toxic-output-rate" in first.alarms.put

    with pytest.raises(MonitorError, match="Could not find endpoint"):
        monitor("elsewhere", aws["config"])
