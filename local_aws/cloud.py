"""What the twin's SageMaker sees of CloudWatch: where its endpoints' metrics go, and the state of the alarms that
guard a deployment (`AutoRollbackConfiguration`).

On a laptop that is the workspace itself: the metric series in `metrics.db`, and the alarms of `alarms/`, which the
local evaluator (CloudWatch's semantics) evaluates whenever a deployment asks. When the twin stands in for SageMaker
in an AWS account (the aws backend pointed at it, as the offline tests do), it is CloudWatch: endpoints put their
metrics with `PutMetricData`, as SageMaker does, and alarm states are CloudWatch's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

CloudKind = Literal["local", "aws"]


class Cloud(Protocol):
    kind: CloudKind
    endpoint_metrics: Literal["", "cloudwatch"]  # where an endpoint's router sends its metrics (EndpointConfig)

    def missing_alarms(self, names: Sequence[str]) -> list[str]:
        """The names among `names` that are no alarm."""

    def alarm_states(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Each alarm's state and reason, evaluated now."""


class WorkspaceCloud:
    kind: CloudKind = "local"
    endpoint_metrics: Literal["", "cloudwatch"] = ""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def missing_alarms(self, names: Sequence[str]) -> list[str]:
        from monitoring.alarms import AlarmStore

        store = AlarmStore(self.workspace / "alarms")
        return [name for name in names if store.get(name) is None]

    def alarm_states(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        from monitoring.alarms import AlarmStore
        from monitoring.metrics import SqliteMetricSink
        from monitoring.monitor import evaluate_alarms

        store = AlarmStore(self.workspace / "alarms")
        evaluate_alarms(store, SqliteMetricSink(self.workspace / "metrics.db"), list(names), datetime.now(UTC))
        return {name: (record.state, record.reason) for name in names if (record := store.get(name)) is not None}


class CloudWatchCloud:
    kind: CloudKind = "aws"
    endpoint_metrics: Literal["", "cloudwatch"] = "cloudwatch"

    def __init__(self, region: str) -> None:
        from monitoring.metrics import cloudwatch_client

        self.client = cloudwatch_client(region)

    def _alarms(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
            answer = self.client.describe_alarms(AlarmNames=list(names[start:start + 100]), AlarmTypes=["MetricAlarm"])
            found.update({a["AlarmName"]: (a["StateValue"], a.get("StateReason", "")) for a in answer["MetricAlarms"]})
        return found

    def missing_alarms(self, names: Sequence[str]) -> list[str]:
        found = self._alarms(names)
        return [name for name in names if name not in found]

    def alarm_states(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        return self._alarms(names)


def cloud_of(kind: CloudKind, workspace: Path, region: str) -> Cloud:
    return CloudWatchCloud(region) if kind == "aws" else WorkspaceCloud(workspace)
