"""The CloudWatch side of monitoring against moto: alarms put once and kept equal to their specs, the
dashboard body, and metric data sent in batches and read back as statistics per period."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from monitoring.cloudwatch import alarm_names, delete_alarms, put_dashboard, sync_alarms
from monitoring.metrics import CloudWatchSink, CloudWatchSource, MetricDatum, MetricStat
from monitoring.monitor import MonitoringConfig, endpoint_alarms

REGION = "us-east-1"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="genaiops-alarms")["TopicArn"]
        yield {"cloudwatch": boto3.client("cloudwatch", region_name=REGION), "topic": topic}


def test_alarms_are_put_once_kept_equal_to_their_specs_and_removed_with_the_endpoint(aws: dict[str, Any]) -> None:
    client = aws["cloudwatch"]
    config = MonitoringConfig()
    specs = endpoint_alarms("summaries", ["a", "b"], "dialogue-summarizer", config, notify_topic=aws["topic"])
    sync_alarms(client, "summaries", specs)
    sync_alarms(client, "summaries", specs)  # a re-run creates nothing more
    alarms = {a["AlarmName"]: a for a in client.describe_alarms(AlarmNamePrefix="summaries/")["MetricAlarms"]}
    assert sorted(alarms) == sorted(s.name for s in specs)

    rate = alarms["summaries/a/5xx-rate"]
    assert rate["AlarmActions"] == [aws["topic"]] and rate["OKActions"] == [aws["topic"]]
    assert (rate["EvaluationPeriods"], rate["DatapointsToAlarm"], rate["Threshold"], rate["TreatMissingData"]) == \
        (5, 3, 5.0, "notBreaching")
    assert [m["Id"] for m in rate["Metrics"]] == ["errors", "invocations", "e1"]
    errors = rate["Metrics"][0]["MetricStat"]
    assert errors["Metric"]["MetricName"] == "Invocation5XXErrors" and errors["Stat"] == "Sum"
    assert {d["Name"]: d["Value"] for d in errors["Metric"]["Dimensions"]} == {"EndpointName": "summaries",
                                                                               "VariantName": "a"}
    latency = alarms["summaries/b/model-latency-p99"]
    assert latency["ExtendedStatistic"] == "p99" and latency["MetricName"] == "ModelLatency"
    assert "summaries/b/disagreement-rate" in alarms
    assert not [s for s in endpoint_alarms("solo", ["a"], "m", config) if "disagreement" in s.name]  # one variant
    drift = alarms["summaries/embedding-drift"]
    assert drift["Namespace"] == "genaiops/Monitoring" and drift["TreatMissingData"] == "ignore"

    quieter = MonitoringConfig.model_validate({"alarms": {"4xx_rate": {"enabled": False}, "5xx_rate": {"threshold": 2}}})
    changed = sync_alarms(client, "summaries", endpoint_alarms("summaries", ["a", "b"], "m", quieter,
                                                              notify_topic=aws["topic"]))
    assert changed["deleted"] == ["summaries/a/4xx-rate", "summaries/b/4xx-rate"]
    threshold = client.describe_alarms(AlarmNames=["summaries/a/5xx-rate"])["MetricAlarms"][0]["Threshold"]
    assert threshold == 2.0
    neighbour = endpoint_alarms("summaries-b", ["a"], "m", quieter)  # a name that starts like the other's
    sync_alarms(client, "summaries-b", neighbour)
    with pytest.raises(ValueError, match=r"summaries/a/5xx-rate.*period under 60 s"):
        sync_alarms(client, "summaries", endpoint_alarms("summaries", ["a"], "m", MonitoringConfig(period=10)))
    assert delete_alarms(client, "summaries") and alarm_names(client, "summaries") == []
    assert sorted(alarm_names(client, "summaries-b")) == sorted(s.name for s in neighbour)  # left alone


def test_the_dashboard_shows_every_panel_and_the_endpoints_alarms(aws: dict[str, Any]) -> None:
    client = aws["cloudwatch"]
    sync_alarms(client, "summaries", endpoint_alarms("summaries", ["a"], "m", MonitoringConfig()))
    name = put_dashboard(client, "summaries", ["a"], region=REGION, account="123456789012")
    body = json.loads(client.get_dashboard(DashboardName=name)["DashboardBody"])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert titles[:3] == ["Invocations per variant", "Model latency p50 / p99", "Errors: 4XX and 5XX"]
    [alarms] = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert len(alarms["properties"]["alarms"]) == len(alarm_names(client, "summaries"))
    assert all(arn.startswith("arn:aws:cloudwatch:us-east-1:123456789012:alarm:summaries/")
               for arn in alarms["properties"]["alarms"])
    latency = body["widgets"][1]["properties"]["metrics"]
    assert latency[0] == ["AWS/SageMaker", "ModelLatency", "EndpointName", "summaries", "VariantName", "a",
                          {"stat": "p50", "label": "a p50"}]


def test_metric_data_goes_out_in_batches_of_1000_and_comes_back_per_period(aws: dict[str, Any]) -> None:
    client = aws["cloudwatch"]
    calls: list[int] = []
    client.meta.events.register("provide-client-params.cloudwatch.PutMetricData",
                                lambda params, **_: calls.append(len(params["MetricData"])))
    start = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    dimensions = {"EndpointName": "summaries"}
    datums = [MetricDatum(namespace="genaiops/Monitoring", name="EmptyOutputRate", value=float(i % 3),
                          unit="Percent", dimensions=dimensions, timestamp=start + timedelta(seconds=i))
              for i in range(1500)]  # 25 minutes, one a second
    CloudWatchSink(client).put(datums)
    assert calls == [1000, 500]
    source = CloudWatchSource(client)
    metric = MetricStat(namespace="genaiops/Monitoring", name="EmptyOutputRate", stat="Sum", dimensions=dimensions)
    sums = source.datapoints(metric, period=300, start=start, end=start + timedelta(minutes=30))
    assert sums == [300.0] * 5 + [None]  # 0+1+2 repeated over 300 values a period; nothing in the last
    counts = source.datapoints(metric.model_copy(update={"stat": "SampleCount"}), period=300, start=start,
                               end=start + timedelta(minutes=25))
    assert counts == [300.0] * 5


def test_the_stacks_alarms_are_left_as_the_stack_made_them(aws: dict[str, Any]) -> None:
    """One owner per alarm: an endpoint kept as code has the monitoring stack's alarms (tagged as the stack's); the
    flows' sync neither overwrites their actions nor deletes them, and owns every other endpoint's."""
    from monitoring.cloudwatch import STACK_OWNED, CloudWatchAlarms, alarm_requests

    client = aws["cloudwatch"]
    stack_specs = endpoint_alarms("pinned", ["production"], "m", MonitoringConfig(), notify_topic=aws["topic"])
    for request in alarm_requests("pinned", stack_specs, owner=STACK_OWNED):  # as CloudFormation puts them
        client.put_metric_alarm(**request)
    alarms = CloudWatchAlarms(client, region=REGION, account=lambda: "123456789012")
    flows = endpoint_alarms("pinned", ["production", "other"], "m", MonitoringConfig())  # no topic
    synced = alarms.sync("pinned", flows)
    assert synced.owner == "stack" and synced.put == [] and synced.deleted == []
    kept = client.describe_alarms(AlarmNamePrefix="pinned/")["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in kept) == sorted(s.name for s in stack_specs)
    assert all(a["AlarmActions"] == [aws["topic"]] for a in kept)  # the stack's actions stand
    released = alarms.sync("released", endpoint_alarms("released", ["v1"], "m", MonitoringConfig(),
                                                       notify_topic=aws["topic"]))
    assert released.owner == "flows" and released.put
    assert "released/v1/5xx-rate" in alarms.states(["released/v1/5xx-rate"])
