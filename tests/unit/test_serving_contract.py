"""The hosting contract's pure parts: request parsing, endpoint configs, capture records, metric sinks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from local_aws.capture import capture_record
from local_aws.endpoint import EndpointConfig
from monitoring.metrics import SAGEMAKER_NAMESPACE, CloudWatchSink, MetricDatum, SqliteMetricSink
from serving.handler import MAX_BODY_BYTES, RequestError, parse_request
from serving.protocol import error_response


@pytest.mark.parametrize(("body", "message"), [
    (b"{nope", "body is not valid JSON"),
    (b"[1, 2]", "body must be a JSON object with 'inputs', not list"),
    (b'{"input": "a"}', "inputs: Field required"),
    (b'{"inputs": 3}', "inputs: Input should be a valid string"),
    (b'{"inputs": ["a", ""]}', "inputs[1]: is empty"),
    (b'{"inputs": []}', "inputs: must hold at least one input"),
    (b'{"inputs": "a", "parameters": {"max_new_tokens": 0}}', "parameters.max_new_tokens: Input should be greater than 0"),
    (b'{"inputs": "a", "parameters": {"temperature": -1}}', "parameters.temperature"),
    (b'{"inputs": "a", "parameters": {"beams": 2}}', "parameters.beams: Extra inputs are not permitted"),
    (b"\xff\xfe", "body is not valid JSON"),
])
def test_a_bad_request_is_refused_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_request(body)


def test_requests_in_the_hf_llm_container_shape_parse() -> None:
    one = parse_request(b'{"inputs": "A: hi. B: hello.", "parameters": {"max_new_tokens": 8, "temperature": 0}}')
    assert one.texts == ["A: hi. B: hello."] and one.parameters.max_new_tokens == 8
    assert parse_request(b'{"inputs": ["a", "b"]}').texts == ["a", "b"]
    assert parse_request(b'"just text"').texts == ["just text"]
    with pytest.raises(RequestError, match="the limit is"):
        parse_request(b" " * (MAX_BODY_BYTES + 1))
    with pytest.raises(RequestError, match="Content-Type 'text/csv' is not supported"):
        parse_request(b'{"inputs": "a"}', "text/csv")


def test_errors_carry_the_type_boto3_raises() -> None:
    body, headers = error_response(424, "boom", original_status=500)
    assert headers["x-amzn-ErrorType"] == "ModelError"
    assert json.loads(body).items() >= {"OriginalStatusCode": 500, "OriginalMessage": "boom", "Message": "boom"}.items()
    assert error_response(400, "bad")[1]["x-amzn-ErrorType"] == "ValidationError"


def test_endpoint_configs_are_checked_before_anything_starts() -> None:
    variant = {"name": "a", "model": "/m"}
    with pytest.raises(ValidationError, match="variant names must be unique; repeated: a"):
        EndpointConfig(name="e", variants=[variant, variant])
    with pytest.raises(ValidationError, match="at least one production"):
        EndpointConfig(name="e", variants=[{**variant, "shadow": True}])
    with pytest.raises(ValidationError, match="must not all be 0"):
        EndpointConfig(name="e", variants=[{**variant, "weight": 0}])
    with pytest.raises(ValidationError, match="name"):
        EndpointConfig(name="bad_name", variants=[variant])
    config = EndpointConfig(name="e", variants=[variant, {"name": "b", "model": "/m", "weight": 3}])
    assert [v.weight for v in config.with_weights({"a": 0}).production] == [0, 3]
    with pytest.raises(ValueError, match=r"unknown production variant\(s\) \['c'\]"):
        config.with_weights({"c": 1})


def test_capture_records_follow_sagemakers_format() -> None:
    when = datetime(2026, 11, 28, 12, 0, 1, 250000, tzinfo=UTC)
    record = capture_record(b'{"inputs": "x"}', b'[{"generated_text": "y"}]', content_type="application/json",
                            accept="application/json", inference_id="req-7", when=when)
    assert record["captureData"]["endpointInput"] == {"observedContentType": "application/json", "mode": "INPUT",
                                                      "data": '{"inputs": "x"}', "encoding": "JSON"}
    assert record["captureData"]["endpointOutput"]["mode"] == "OUTPUT"
    assert record["eventMetadata"]["inferenceId"] == "req-7"
    assert record["eventMetadata"]["inferenceTime"] == "2026-11-28T12:00:01.250Z"
    assert record["eventVersion"] == "0" and len(record["eventMetadata"]["eventId"]) == 36
    binary = capture_record(b"\xff", b"", content_type="application/octet-stream", accept="x", inference_id=None,
                            when=when)
    assert binary["captureData"]["endpointInput"]["encoding"] == "BASE64"


def datums(at: datetime) -> list[MetricDatum]:
    dims = {"EndpointName": "e", "VariantName": "a"}
    return [MetricDatum(namespace=SAGEMAKER_NAMESPACE, name="Invocations", value=1, unit="Count", dimensions=dims,
                        timestamp=at + timedelta(seconds=i)) for i in range(3)] + \
           [MetricDatum(namespace=SAGEMAKER_NAMESPACE, name="ModelLatency", value=1500, unit="Microseconds",
                        dimensions=dims, timestamp=at)]


def test_the_sqlite_sink_keeps_cloudwatchs_metric_model(tmp_path: Path) -> None:
    sink = SqliteMetricSink(tmp_path / "metrics.db")
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    sink.put(datums(at))
    dims = {"VariantName": "a", "EndpointName": "e"}  # dimension order does not matter
    found = sink.query(SAGEMAKER_NAMESPACE, "Invocations", dims, start=at + timedelta(seconds=1))
    assert [d.timestamp for d in found] == [at + timedelta(seconds=1), at + timedelta(seconds=2)]
    assert sink.total(SAGEMAKER_NAMESPACE, "Invocations", dims) == 3
    assert sink.query(SAGEMAKER_NAMESPACE, "ModelLatency", dims)[0].unit == "Microseconds"
    assert sink.query(SAGEMAKER_NAMESPACE, "Invocations", {"EndpointName": "e"}) == []


def test_the_cloudwatch_sink_sends_the_same_datums() -> None:
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        now = datetime.now(UTC).replace(microsecond=0)
        CloudWatchSink(client).put(datums(now - timedelta(minutes=5)))
        metrics = client.list_metrics(Namespace=SAGEMAKER_NAMESPACE)["Metrics"]
        assert {m["MetricName"] for m in metrics} == {"Invocations", "ModelLatency"}
        assert {d["Name"]: d["Value"] for d in metrics[0]["Dimensions"]} == {"EndpointName": "e", "VariantName": "a"}
        stats = client.get_metric_statistics(
            Namespace=SAGEMAKER_NAMESPACE, MetricName="Invocations", Statistics=["Sum"], Period=3600,
            Dimensions=[{"Name": "EndpointName", "Value": "e"}, {"Name": "VariantName", "Value": "a"}],
            StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=1))
        assert sum(p["Sum"] for p in stats["Datapoints"]) == 3


def test_two_fleets_share_the_traffic_by_their_shares_and_keep_their_own_variants() -> None:
    blue, green = {"name": "a", "model": "/m", "fleet": "blue"}, {"name": "a", "model": "/n", "fleet": "green"}
    config = EndpointConfig(name="e", variants=[blue, green], fleet_shares={"blue": 0.9, "green": 0.1})
    assert [v.key for v in config.variants] == ["blue/a", "green/a"] and config.fleets == ["blue", "green"]
    with pytest.raises(ValidationError, match="needs a traffic share for each"):
        EndpointConfig(name="e", variants=[blue, green])
    with pytest.raises(ValidationError, match="not all 0"):
        EndpointConfig(name="e", variants=[blue, green], fleet_shares={"blue": 0, "green": 0})
    with pytest.raises(ValidationError, match=r"production \(non-shadow\) variant of fleet green"):
        EndpointConfig(name="e", variants=[blue, {**green, "shadow": True}], fleet_shares={"blue": 1, "green": 0})
    assert [v.weight for v in config.with_weights({"a": 2}).variants] == [2, 2]
