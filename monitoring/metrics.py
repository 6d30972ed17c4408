"""Metric sinks with CloudWatch's metric model: namespace, name, dimensions, unit, timestamp, value.

`SqliteMetricSink` keeps a local time series (the local backend); `CloudWatchSink` sends the same
datums with `PutMetricData` (the aws backend). Endpoints write per-variant metrics under
SageMaker's names and units (`Invocations`, `ModelLatency` in microseconds, …) so that one alarm
spec reads either.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
Unit = Literal["Count", "Microseconds", "Milliseconds", "Seconds", "Percent", "None", "Bytes"]


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

    def total(self, namespace: str, name: str, dimensions: Mapping[str, str]) -> float:
        """The Sum statistic over all time."""
        row = self._connect().execute(
            "SELECT COALESCE(SUM(value), 0) FROM datums WHERE namespace = ? AND name = ? AND dimensions = ?",
            (namespace, name, _dimensions(dimensions))).fetchone()
        return float(row[0])


class CloudWatchSink:
    """The same datums sent to CloudWatch with PutMetricData (at most 1000 datums a call)."""

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
