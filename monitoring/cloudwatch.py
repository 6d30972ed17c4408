"""The AWS side of monitoring: an endpoint's alarms kept equal to their specs, and its dashboard.

Every call is idempotent: `PutMetricAlarm` creates or updates by name, alarms of the endpoint that
are no longer specified are deleted, and `PutDashboard` replaces the body. The client is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from contracts.tags import ENDPOINT
from monitoring.alarms import AlarmSpec, put_metric_request
from monitoring.dashboards import cloudwatch_body, panels


def alarm_names(client: Any, endpoint: str) -> list[str]:
    """The metric alarms of the endpoint (named `<endpoint>/...`)."""
    names: list[str] = []
    for page in client.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{endpoint}/",
                                                                  AlarmTypes=["MetricAlarm"]):
        names.extend(alarm["AlarmName"] for alarm in page.get("MetricAlarms", []))
    return names


def alarm_requests(endpoint: str, specs: Sequence[AlarmSpec]) -> list[dict[str, Any]]:
    """The PutMetricAlarm request of each spec of an endpoint: its notify targets as alarm and OK actions, tagged
    with the endpoint. The release flow puts these, and the CDK monitoring stack's alarms are these documents.

    Metrics go to CloudWatch at standard resolution, so an alarm's period is at least 60 s there."""
    short = [spec.name for spec in specs if spec.period < 60]
    if short:
        raise ValueError(f"alarms {', '.join(short)}: a period under 60 s needs high-resolution metrics; "
                         "CloudWatch gets standard-resolution ones: use 60 s or more")
    requests = []
    for spec in specs:
        topics = [a.target for a in spec.actions if a.kind == "notify" and a.target]
        requests.append(put_metric_request(spec, alarm_actions=topics, ok_actions=topics, tags={ENDPOINT: endpoint}))
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
