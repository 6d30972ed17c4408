"""CloudWatch alarms and dashboards exactly as `monitoring/` specifies them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra_cdk.constructs.ids import pascal
from monitoring.alarms import AlarmSpec
from monitoring.cloudwatch import STACK_OWNED, alarm_requests
from monitoring.dashboards import cloudwatch_body, panels


def _snake(key: str) -> str:
    return "ok_actions" if key == "OKActions" else re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def _props(request: dict[str, Any]) -> dict[str, Any]:
    """A PutMetricAlarm request as CfnAlarm's keyword arguments: the same document, its top-level keys in snake
    case, the structs inside it as jsii passes them (camel case)."""
    return {_snake(k): _camel(v) for k, v in request.items()}


class EndpointAlarms(Construct):
    """One endpoint's alarms and dashboard. Each alarm's properties are the PutMetricAlarm request the release flow
    would make for the same spec (`monitoring.cloudwatch.alarm_requests`): one source, three consumers. They are
    tagged as the stack's, so that the flows leave them as the stack made them."""

    def __init__(self, scope: Construct, id: str, *, endpoint: str, variants: Sequence[str], specs: Sequence[AlarmSpec],
                 period: int) -> None:
        super().__init__(scope, id)
        self.specs = list(specs)
        self.alarms: dict[str, cloudwatch.CfnAlarm] = {}
        for spec, request in zip(specs, alarm_requests(endpoint, specs, owner=STACK_OWNED), strict=True):
            props = _props(request)
            props["tags"] = [cdk.CfnTag(key=t["key"], value=t["value"]) for t in props.get("tags", [])]
            self.alarms[spec.name] = cloudwatch.CfnAlarm(self, pascal(spec.name), **props)
        stack = cdk.Stack.of(self)
        body = cloudwatch_body(panels(endpoint, variants), region=stack.region, period=period,
                               alarm_arns=[a.attr_arn for a in self.alarms.values()])
        self.dashboard = cloudwatch.CfnDashboard(self, "Dashboard", dashboard_name=f"genaiops-{endpoint}",
                                                 dashboard_body=stack.to_json_string(body))

    def rollback_alarms(self) -> list[str]:
        """The names of the alarms whose breach rolls a deployment back (SageMaker's AutoRollbackConfiguration)."""
        return [spec.name for spec in self.specs if any(a.kind == "rollback" for a in spec.actions)]
