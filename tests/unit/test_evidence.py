"""The rollout's evidence from CloudWatch, request by request under botocore's Stubber (which checks each against
CloudWatch's service model), and the latency test on CloudWatch's percentiles per period."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from botocore.stub import Stubber

from monitoring.drift import CaptureCursor
from serving.evidence import CaptureLog, CloudWatchEvidence
from serving.rollout import RolloutConfig, VariantEvidence, decide
from steps.artifacts import LocalStore

START = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)
NOW = START + timedelta(minutes=4)


def dimensions(variant: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": "summaries"}, {"Name": "VariantName", "Value": variant}]


def query(key: str, name: str, stat: str, variant: str) -> dict[str, object]:
    return {"Id": key, "ReturnData": True, "MetricStat": {"Metric": {
        "Namespace": "AWS/SageMaker", "MetricName": name, "Dimensions": dimensions(variant)}, "Period": 60, "Stat": stat}}


def test_cloudwatch_evidence_sums_the_counts_and_takes_the_percentiles_per_period(tmp_path: Path) -> None:
    client = boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    window = {"StartTime": START.replace(second=0), "EndTime": NOW.replace(second=0) + timedelta(minutes=1),
              "ScanBy": "TimestampAscending"}
    stub = Stubber(client)
    stub.add_response("get_metric_data", {"MetricDataResults": [
        {"Id": "n", "Values": [20.0, 22.0], "Timestamps": [START, START]},
        {"Id": "e4", "Values": [1.0, 0.0], "Timestamps": [START, START]},
        {"Id": "e5", "Values": [0.0, 2.0], "Timestamps": [START, START]}]},
        {"MetricDataQueries": [query("n", "Invocations", "Sum", "v2"), query("e4", "Invocation4XXErrors", "Sum", "v2"),
                               query("e5", "Invocation5XXErrors", "Sum", "v2")], **window})
    stub.add_response("get_metric_data", {"MetricDataResults": [
        {"Id": "p50", "Values": [1.0e6, 1.2e6, 1.1e6], "Timestamps": [START] * 3},
        {"Id": "p99", "Values": [3.0e6, 3.5e6, 2.9e6], "Timestamps": [START] * 3}]},
        {"MetricDataQueries": [query("p50", "ModelLatency", "p50", "v2"), query("p99", "ModelLatency", "p99", "v2")],
         **window})
    capture = LocalStore(tmp_path / "capture")
    reader = CloudWatchEvidence(CaptureLog(lambda endpoint: capture, LocalStore(tmp_path / "artifacts")), client,
                                now=lambda: NOW)
    with stub:
        evidence = reader("summaries", "v2", START)
    stub.assert_no_pending_responses()
    assert (evidence.requests, evidence.errors_4xx, evidence.errors_5xx) == (42, 1, 2)
    assert evidence.latency_percentiles_us == {"p50": [1.0e6, 1.2e6, 1.1e6], "p99": [3.0e6, 3.5e6, 2.9e6]}
    assert evidence.latencies_us == [] and evidence.outputs == {}
    [kept] = (tmp_path / "artifacts" / "rollout" / "evidence" / "summaries").glob("*.json")  # the cursor, for the next
    assert CaptureCursor.model_validate(json.loads(kept.read_text())["cursor"]).read == {}  # nothing captured yet


def test_the_latency_test_works_on_percentiles_per_period() -> None:
    config = RolloutConfig(min_duration_s=0, min_requests=10, resamples=400)
    periods = 8

    def variant(name: str, p99: float) -> VariantEvidence:
        return VariantEvidence(name=name, requests=200, latency_percentiles_us={
            "p50": [p99 / 3 * (1 + 0.02 * i) for i in range(periods)],
            "p99": [p99 * (1 + 0.03 * (i % 3)) for i in range(periods)]})

    slow = decide(variant("champion", 1e6), variant("candidate", 3e6), started=START, now=NOW, config=config,
                  paired=False)
    [p99] = [e for e in slow.evidence if e.name == "ModelLatency p99"]
    assert p99.verdict == "worse" and f"over {periods} periods" in p99.test
    assert slow.action == "rollback" and "ModelLatency p99" in slow.reason
    alike = decide(variant("champion", 1e6), variant("candidate", 1.05e6), started=START, now=NOW, config=config,
                   paired=False)
    assert {e.name: e.verdict for e in alike.evidence}["ModelLatency p99"] == "ok"
    few = decide(VariantEvidence(name="a", requests=50, latency_percentiles_us={"p99": [1e6]}),
                 VariantEvidence(name="b", requests=50, latency_percentiles_us={"p99": [9e6]}), started=START,
                 now=NOW, config=config, paired=False)
    assert {e.name: e.verdict for e in few.evidence}["ModelLatency p99"] == "unknown"  # one period is no evidence
