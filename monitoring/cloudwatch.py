"""The AWS side of monitoring: an endpoint's alarms kept equal to their specs, and its dashboard.

Every call is idempotent: `PutMetricAlarm` creates or updates by name, alarms of the endpoint that
are no longer specified are deleted, and `PutDashboard` replaces the body. The client is passed in.

One owner per alarm: the alarms of an endpoint kept as code belong to the monitoring stack, which tags them
(`genaiops:alarms` = `stack`); the flows leave those as the stack made them, and own every other endpoint's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contracts.tags import ALARMS_OWNER, ENDPOINT
from monitoring.alarms import AlarmSpec, put_metric_request
from monitoring.dashboards import cloudwatch_body, panels


def alarm_names(client: Any, endpoint: str) -> list[str]:
    """The metric alarms of the endpoint (named `<endpoint>/...`)."""
    names: list[str] = []
    for page in client.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{endpoint}/",
                                                                  AlarmTypes=["MetricAlarm"]):
        names.extend(alarm["AlarmName"] for alarm in page.get("MetricAlarms", []))
    return names


STACK_OWNED = "stack"


def alarm_requests(endpoint: str, specs: Sequence[AlarmSpec], *, owner: str | None = None) -> list[dict[str, Any]]:
    """The PutMetricAlarm request of each spec of an endpoint: its notify targets as alarm and OK actions, tagged
    with the endpoint (and, for the monitoring stack's own, `genaiops:alarms` = `stack`). The release and monitor
    flows put these, and the CDK monitoring stack's alarms are these documents.

    Metrics go to CloudWatch at standard resolution, so an alarm's period is at least 60 s there."""
    short = [spec.name for spec in specs if spec.period < 60]
    if short:
        raise ValueError(f"alarms {', '.join(short)}: a period under 60 s needs high-resolution metrics; "
                         "CloudWatch gets standard-resolution ones: use 60 s or more")
    requests = []
    for spec in specs:
        topics = [a.target for a in spec.actions if a.kind == "notify" and a.target]
        tags = {ENDPOINT: endpoint, **({ALARMS_OWNER: owner} if owner else {})}
        requests.append(put_metric_request(spec, alarm_actions=topics, ok_actions=topics, tags=tags))
    return requests


def sync_alarms(client: Any, endpoint: str, specs: Sequence[AlarmSpec]) -> dict[str, list[str]]:
    """Put every spec's alarm (`alarm_requests`) and delete the endpoint's stale ones."""
    for request in alarm_requests(endpoint, specs):
        client.put_metric_alarm(**request)
    wanted = {spec.name for spec in specs}
    stale = sorted(set(alarm_names(client, endpoint)) - wanted)
    for start in range(0, len(stale), 100):  # DeleteAlarms takes at most 100 names
        client.delete_alarms(AlarmNames=stale[start: start + 100])
    return {"put": sorted(wanted), "deleted": stale}


def delete_alarms(client: Any, endpoint: str) -> list[str]:
    """Remove every alarm of the endpoint (when the endpoint is deleted)."""
    return sync_alarms(client, endpoint, [])["deleted"]


def put_dashboard(client: Any, endpoint: str, variants: Sequence[str], *, region: str, account: str,
                  period: int = 60) -> str:
    """The endpoint's dashboard, `genaiops-<endpoint>`, with an alarm widget of its alarms; returns its name."""
    arns = [f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}" for name in alarm_names(client, endpoint)]
    name = f"genaiops-{endpoint}"
    client.put_dashboard(DashboardName=name, DashboardBody=json.dumps(
        cloudwatch_body(panels(endpoint, variants), region=region, period=period, alarm_arns=arns)))
    return name


def owned_by_stack(client: Any, endpoint: str) -> bool:
    """Whether the endpoint's alarms are a stack's (one of them carries the stack's owner tag)."""
    names = alarm_names(client, endpoint)
    if not names:
        return False
    arn = client.describe_alarms(AlarmNames=names[:1])["MetricAlarms"][0]["AlarmArn"]
    tags = {t["Key"]: t["Value"] for t in client.list_tags_for_resource(ResourceARN=arn).get("Tags", [])}
    return tags.get(ALARMS_OWNER) == STACK_OWNED


class CloudWatchAlarms:
    """The `Alarms` of the aws backend: CloudWatch holds them, evaluates them and runs their actions."""

    def __init__(self, client: Any, *, region: str, account: Any) -> None:
        self.client, self.region = client, region
        self.account = account  # () -> the account id, asked once a dashboard needs it

    def sync(self, endpoint: str, specs: Sequence[AlarmSpec]) -> Any:
        from monitoring.monitor import AlarmSync

        if owned_by_stack(self.client, endpoint):
            return AlarmSync(owner="stack")
        return AlarmSync(**sync_alarms(self.client, endpoint, specs))

    def evaluate(self, specs: Sequence[AlarmSpec], now: Any) -> list[Any]:
        return []  # CloudWatch evaluates them, every period

    def states(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
            answer = self.client.describe_alarms(AlarmNames=list(names[start:start + 100]), AlarmTypes=["MetricAlarm"])
            found.update({a["AlarmName"]: (a["StateValue"], a.get("StateReason", "")) for a in answer["MetricAlarms"]})
        return found

    def dashboard(self, endpoint: str, variants: Sequence[str], *, period: int, hours: float) -> str:
        name = put_dashboard(self.client, endpoint, variants, region=self.region, account=self.account(),
                             period=max(60, period))
        return f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}#dashboards/dashboard/{name}"

    def views(self, endpoint: str | None) -> list[Any]:
        from monitoring.monitor import AlarmView, rule_text

        found = []
        pages = self.client.get_paginator("describe_alarms").paginate(
            AlarmTypes=["MetricAlarm"], **({"AlarmNamePrefix": f"{endpoint}/"} if endpoint else {}))
        for alarm in (a for page in pages for a in page.get("MetricAlarms", [])):
            period = alarm.get("Period") or next((m["MetricStat"]["Period"] for m in alarm.get("Metrics", [])
                                                  if "MetricStat" in m), 0)
            found.append(AlarmView(
                name=alarm["AlarmName"], state=alarm["StateValue"], reason=alarm.get("StateReason", ""),
                since=_time(alarm.get("StateUpdatedTimestamp")),
                rule=rule_text(alarm["ComparisonOperator"], alarm["Threshold"],
                               alarm.get("DatapointsToAlarm") or alarm["EvaluationPeriods"], alarm["EvaluationPeriods"],
                               period),
                actions=["notify"] if alarm.get("AlarmActions") else []))
        return found

    def history(self, name: str) -> list[Any] | None:
        from monitoring.alarms import StateChange

        if not self.client.describe_alarms(AlarmNames=[name])["MetricAlarms"]:
            return None
        changes = []
        for page in self.client.get_paginator("describe_alarm_history").paginate(
                AlarmName=name, HistoryItemType="StateUpdate", ScanBy="TimestampAscending"):
            for item in page.get("AlarmHistoryItems", []):
                data = json.loads(item.get("HistoryData") or "{}")
                changes.append(StateChange(at=_time(item["Timestamp"]),
                                           old=(data.get("oldState") or {}).get("stateValue", "INSUFFICIENT_DATA"),
                                           new=(data.get("newState") or {}).get("stateValue", "INSUFFICIENT_DATA"),
                                           reason=item.get("HistorySummary", "")))
        return changes


def _time(value: Any) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value or "")
