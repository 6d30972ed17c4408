"""The alarms in the monitoring stack's template are the ones `monitoring/` specifies: the same PutMetricAlarm
documents the release flow puts (`monitoring.cloudwatch.alarm_requests`), so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from infra_cdk.config import EndpointAsCode
from monitoring.cloudwatch import STACK_OWNED, alarm_requests
from monitoring.monitor import MonitoringConfig, endpoint_alarms
from tests.infra.conftest import ENDPOINTS, Synth, synth

TOPIC = "arn:aws:sns:us-east-1:000000000000:topic"


def _alarms(stage: Synth) -> dict[str, dict[str, Any]]:
    document = stage.json("monitoring")
    [topic] = [k for k, v in document["Resources"].items() if v["Type"] == "AWS::SNS::Topic"]

    def plain(value: Any) -> Any:  # the topic's Ref reads as the ARN the spec names
        if value == {"Ref": topic}:
            return TOPIC
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {r["Properties"]["AlarmName"]: plain(r["Properties"]) for r in document["Resources"].values()
            if r["Type"] == "AWS::CloudWatch::Alarm"}


def _expected(config: MonitoringConfig) -> dict[str, dict[str, Any]]:
    expected = {}
    for endpoint in map(EndpointAsCode.model_validate, ENDPOINTS):
        specs = endpoint_alarms(endpoint.name, endpoint.variants, endpoint.model, config, notify_topic=TOPIC)
        expected.update({r["AlarmName"]: r for r in alarm_requests(endpoint.name, specs, owner=STACK_OWNED)})
    return expected


def _equal(template: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    assert sorted(template) == sorted(expected)
    for name, request in expected.items():
        alarm = dict(template[name])
        tags = {t["Key"]: t["Value"] for t in alarm.pop("Tags")}
        want = {k: v for k, v in request.items() if k != "Tags" and v != []}
        assert {k: v for k, v in alarm.items() if v != []} == want, name
        assert {t["Key"]: t["Value"] for t in request["Tags"]}.items() <= tags.items()  # and the cost tags
        assert {"project", "genaiops:stage", "genaiops:stack"} <= set(tags)


def test_the_monitoring_stacks_alarms_are_the_specs_of_monitoring(dev: Synth) -> None:
    alarms = _alarms(dev)
    _equal(alarms, _expected(MonitoringConfig()))
    # two endpoint-wide drift alarms each; ten per variant, disagreement only where there are two variants
    assert len(alarms) == (2 + 10 * 2) + (2 + 9)
    assert any(a["Metrics"] for a in alarms.values() if "Metrics" in a)  # the 5XX rate is metric math


def test_tuning_in_the_monitoring_section_reaches_the_stack(tmp_path: Any) -> None:
    monitoring = {"period": 300, "alarms": {"5xx_rate": {"threshold": 2}, "no_invocations": {"enabled": False}}}
    tuned = synth(tmp_path, "dev", endpoints=ENDPOINTS, monitoring=monitoring)
    alarms = _alarms(tuned)
    _equal(alarms, _expected(MonitoringConfig.model_validate(monitoring)))
    assert alarms["summarizer-pinned/production/5xx-rate"]["Threshold"] == 2
    assert not any(name.endswith("no-invocations") for name in alarms)
