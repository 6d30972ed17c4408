"""Metrics with CloudWatch's model: namespace, name, dimensions, unit, timestamp, value; and their statistics.

`SqliteMetricSink` keeps a local time series (the local backend); `CloudWatchSink` sends the same
datums with `PutMetricData` (the aws backend). Endpoints write per-variant metrics under
SageMaker's names and units (`Invocations`, `ModelLatency` in microseconds, …); the monitors
write theirs under `genaiops/Monitoring`, so that one alarm spec reads either.

Reading is one port, `MetricSource.datapoints`: one value per period of a statistic (`Sum`,
`Average`, `Minimum`, `Maximum`, `SampleCount`, `pNN`), as CloudWatch's `GetMetricData` returns
it, from SQLite locally (`SqliteMetricSink`) or from CloudWatch (`CloudWatchSource`).
`series` adds CloudWatch's metric math for the ratios that error rates need.
"""

from __future__ import annotations

import ast
import json
import math
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
GENAIOPS_NAMESPACE = "genaiops/Monitoring"
Unit = Literal["Count", "Microseconds", "Milliseconds", "Seconds", "Percent", "None", "Bytes"]
# The metrics each namespace has: what an endpoint writes (SageMaker's names) and what the monitors publish.
METRICS: dict[str, frozenset[str]] = {
    SAGEMAKER_NAMESPACE: frozenset({"Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "ModelLatency",
                                    "OverheadLatency"}),
    GENAIOPS_NAMESPACE: frozenset({"InputLengthPSI", "OutputLengthPSI", "InputLengthKS", "OutputLengthKS",
                                   "EmbeddingDrift", "EmptyOutputRate", "DisagreementRate", "CapturedRequests",
                                   "UnfaithfulOutputRate", "ToxicOutputRate", "InputTokenCount", "OutputTokenCount"}),
}
STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d{1,2})?|100)$")


class MetricDatum(BaseModel):
    """One observation, as CloudWatch's PutMetricData takes it."""

    model_config = ConfigDict(frozen=True)
    namespace: str
    name: str
    value: float
    unit: Unit = "None"
    dimensions: dict[str, str] = Field(default_factory=dict)
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))


class MetricSink(Protocol):
    def put(self, datums: Sequence[MetricDatum]) -> None: ...


def is_statistic(stat: str) -> bool:
    """One of CloudWatch's statistics, or a percentile `pNN` / `pNN.NN`."""
    return stat in STATISTICS or bool(_PERCENTILE.match(stat))


def aggregate(values: Sequence[float], stat: str) -> float | None:
    """A CloudWatch statistic of the raw values of one period; None for a period without values."""
    if not values:
        return None
    if stat == "SampleCount":
        return float(len(values))
    if stat == "Sum":
        return float(math.fsum(values))
    if stat == "Average":
        return float(math.fsum(values) / len(values))
    if stat == "Minimum":
        return float(min(values))
    if stat == "Maximum":
        return float(max(values))
    match = _PERCENTILE.match(stat)
    if match is None:
        raise ValueError(f"unknown statistic {stat!r}: one of {', '.join(STATISTICS)} or pNN")
    ordered = sorted(values)  # nearest rank: the smallest value with at least NN% of the values at or below it
    rank = max(1, math.ceil(float(match.group(1)) / 100 * len(ordered)))
    return float(ordered[rank - 1])


class MetricStat(BaseModel):
    """One metric and the statistic to take of it each period (CloudWatch's MetricStat)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    namespace: str = SAGEMAKER_NAMESPACE
    name: str
    dimensions: dict[str, str] = Field(default_factory=dict)
    stat: str = "Average"

    @field_validator("stat")
    @classmethod
    def _known_statistic(cls, stat: str) -> str:
        if not is_statistic(stat):
            raise ValueError(f"unknown statistic {stat!r}: one of {', '.join(STATISTICS)} or a percentile pNN")
        return stat

    @model_validator(mode="after")
    def _known_metric(self) -> MetricStat:
        known = METRICS.get(self.namespace)
        if known is None:
            raise ValueError(f"unknown namespace {self.namespace!r}: one of {', '.join(METRICS)}")
        if self.name not in known:
            raise ValueError(f"unknown metric {self.name!r} in {self.namespace}: one of {', '.join(sorted(known))}")
        return self


class MetricMath(BaseModel):
    """CloudWatch metric math over named metrics, e.g. `100 * errors / invocations` for an error rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    expression: str
    metrics: dict[str, MetricStat] = Field(min_length=1)
    label: str = ""

    @model_validator(mode="after")
    def _parses(self) -> MetricMath:
        for name in self.metrics:
            if not re.fullmatch(r"[a-z][a-zA-Z0-9_]*", name):
                raise ValueError(f"metric id {name!r} must start with a lower-case letter (CloudWatch's Id rule)")
        names = _expression_names(self.expression)
        unknown = sorted(names - set(self.metrics))
        if unknown:
            raise ValueError(f"expression {self.expression!r} names {', '.join(unknown)}, which are not among "
                             f"its metrics ({', '.join(self.metrics)})")
        return self


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub, ast.UAdd,
            ast.Constant, ast.Name, ast.Load)


def _expression_names(expression: str) -> set[str]:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"expression {expression!r} is not arithmetic over metric ids: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED) or (isinstance(node, ast.Constant) and not isinstance(node.value, int | float)):
            raise ValueError(f"expression {expression!r}: only + - * / over metric ids and numbers")
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def evaluate_expression(expression: str, values: Mapping[str, float | None]) -> float | None:
    """The expression's value for one period; None where an operand has no value or a division is by zero."""
    def walk(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value) if isinstance(node.value, int | float) else None
        if isinstance(node, ast.Name):
            return values.get(node.id)
        if isinstance(node, ast.UnaryOp):
            inner = walk(node.operand)
            return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
        assert isinstance(node, ast.BinOp)
        left, right = walk(node.left), walk(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return None if right == 0 else left / right

    _expression_names(expression)
    return walk(ast.parse(expression, mode="eval"))


class MetricSource(Protocol):
    def datapoints(self, metric: MetricStat, *, period: int, start: datetime, end: datetime) -> list[float | None]:
        """One value per period from `start` to `end` (exclusive), oldest first; None for a period with no data."""
        ...


def series(source: MetricSource, metric: MetricStat | MetricMath, *, period: int, start: datetime,
           end: datetime) -> list[float | None]:
    """Datapoints of a metric or of a metric math expression, one per period, oldest first."""
    if isinstance(metric, MetricStat):
        return source.datapoints(metric, period=period, start=start, end=end)
    columns = {name: source.datapoints(stat, period=period, start=start, end=end) for name, stat in metric.metrics.items()}
    count = len(next(iter(columns.values())))
    return [evaluate_expression(metric.expression, {name: values[i] for name, values in columns.items()})
            for i in range(count)]


class SqliteMetricSink:
    """A local time series in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("""CREATE TABLE IF NOT EXISTS datums (
                namespace TEXT NOT NULL, name TEXT NOT NULL, dimensions TEXT NOT NULL, unit TEXT NOT NULL,
                timestamp REAL NOT NULL, value REAL NOT NULL)""")
            db.execute("CREATE INDEX IF NOT EXISTS by_metric ON datums (namespace, name, dimensions, timestamp)")

    def _connect(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30)
            self._local.connection = connection
        return connection

    def put(self, datums: Sequence[MetricDatum]) -> None:
        if not datums:
            return
        rows = [(d.namespace, d.name, _dimensions(d.dimensions), d.unit, d.timestamp.timestamp(), d.value)
                for d in datums]
        with self._connect() as db:
            db.executemany("INSERT INTO datums VALUES (?, ?, ?, ?, ?, ?)", rows)

    def query(self, namespace: str, name: str, dimensions: Mapping[str, str] | None = None,
              start: datetime | None = None, end: datetime | None = None) -> list[MetricDatum]:
        """Datums of one metric (exact dimensions, as CloudWatch matches them), oldest first."""
        sql = "SELECT namespace, name, dimensions, unit, timestamp, value FROM datums WHERE namespace = ? AND name = ?"
        args: list[Any] = [namespace, name]
        if dimensions is not None:
            sql += " AND dimensions = ?"
            args.append(_dimensions(dimensions))
        if start is not None:
            sql += " AND timestamp >= ?"
            args.append(start.timestamp())
        if end is not None:
            sql += " AND timestamp < ?"
            args.append(end.timestamp())
        rows = self._connect().execute(sql + " ORDER BY timestamp", args).fetchall()
        return [MetricDatum(namespace=r[0], name=r[1], dimensions=json.loads(r[2]), unit=r[3],
                            timestamp=datetime.fromtimestamp(r[4], UTC), value=r[5]) for r in rows]

    def datapoints(self, metric: MetricStat, *, period: int, start: datetime, end: datetime) -> list[float | None]:
        count = max(0, math.ceil((end - start).total_seconds() / period))
        buckets: list[list[float]] = [[] for _ in range(count)]
        for datum in self.query(metric.namespace, metric.name, metric.dimensions, start, end):
            index = int((datum.timestamp - start).total_seconds() // period)
            if 0 <= index < count:
                buckets[index].append(datum.value)
        return [aggregate(values, metric.stat) for values in buckets]

    def total(self, namespace: str, name: str, dimensions: Mapping[str, str]) -> float:
        """The Sum statistic over all time."""
        row = self._connect().execute(
            "SELECT COALESCE(SUM(value), 0) FROM datums WHERE namespace = ? AND name = ? AND dimensions = ?",
            (namespace, name, _dimensions(dimensions))).fetchone()
        return float(row[0])


class CloudWatchSource:
    """Datapoints read back from CloudWatch with GetMetricData."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def datapoints(self, metric: MetricStat, *, period: int, start: datetime, end: datetime) -> list[float | None]:
        count = max(0, math.ceil((end - start).total_seconds() / period))
        found: dict[int, float] = {}
        kwargs: dict[str, Any] = {}
        while True:
            answer = self.client.get_metric_data(
                MetricDataQueries=[{"Id": "m", "ReturnData": True, "MetricStat": {
                    "Metric": metric_document(metric), "Period": period, "Stat": metric.stat}}],
                StartTime=start, EndTime=end, ScanBy="TimestampAscending", **kwargs)
            for result in answer.get("MetricDataResults", []):
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    found[int((stamp - start).total_seconds() // period)] = float(value)
            if not answer.get("NextToken"):
                break
            kwargs = {"NextToken": answer["NextToken"]}
        return [found.get(i) for i in range(count)]


def metric_document(metric: MetricStat) -> dict[str, Any]:
    """The `Metric` structure of CloudWatch's API for one metric."""
    return {"Namespace": metric.namespace, "MetricName": metric.name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(metric.dimensions.items())]}


class CloudWatchSink:
    """The same datums sent to CloudWatch with PutMetricData (at most 1000 datums a call).

    Throttled calls are retried by the client (`cloudwatch_client` configures botocore's adaptive retries)."""

    BATCH = 1000

    def __init__(self, client: Any) -> None:
        self.client = client

    def put(self, datums: Sequence[MetricDatum]) -> None:
        by_namespace: dict[str, list[MetricDatum]] = {}
        for datum in datums:
            by_namespace.setdefault(datum.namespace, []).append(datum)
        for namespace, group in by_namespace.items():
            for start in range(0, len(group), self.BATCH):
                self.client.put_metric_data(Namespace=namespace, MetricData=[
                    {"MetricName": d.name, "Value": d.value, "Unit": d.unit, "Timestamp": d.timestamp,
                     "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(d.dimensions.items())]}
                    for d in group[start: start + self.BATCH]])


def _dimensions(dimensions: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(dimensions.items())), separators=(",", ":"))


def cloudwatch_client(region: str) -> Any:
    """A CloudWatch client that backs off and retries when CloudWatch throttles it."""
    import boto3
    from botocore.config import Config

    return boto3.client("cloudwatch", region_name=region, config=Config(retries={"mode": "adaptive", "max_attempts": 8}))
