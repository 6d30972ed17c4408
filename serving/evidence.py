"""What the rollout decision rests on: each variant's evidence since its release started, read the same way on
both backends.

- **Capture**, from the endpoint's `DataCaptureConfig` destination in SageMaker's layout (a folder locally, S3 on
  AWS), read past a cursor kept in the artifact store with what it has gathered so far, so a scheduled rollout in
  any process continues where the last one stopped and S3 is not read again from the start. A record nobody can
  read is counted, never raised.
- **Metrics**, per variant: on the local backend, per request from the workspace's series; on AWS, CloudWatch's
  `GetMetricData` (sums of `Invocations`, `Invocation4XXErrors`, `Invocation5XXErrors`, and `ModelLatency`
  percentiles per period, since CloudWatch keeps no per-request samples).

Readers are plain objects over ports passed in (a capture store per endpoint, the artifact store, a metric series
or a CloudWatch client); the backend factory picks one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from monitoring.drift import CaptureCursor, read_capture
from serving.rollout import VariantEvidence
from steps.artifacts import ArtifactNotFoundError, ArtifactStore

log = logging.getLogger(__name__)

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
PERIOD_S = 60  # CloudWatch's SageMaker metrics are per minute


class EvidenceReader(Protocol):
    def __call__(self, endpoint: str, variant: str, since: datetime) -> VariantEvidence:
        """One variant's evidence since `since`."""

    def answered(self, endpoint: str, variant: str, since: datetime) -> int:
        """How many requests the variant answered since `since` (cheap: metrics only)."""


class _Seen(BaseModel):
    model_config = ConfigDict(frozen=True)
    outputs: dict[str, str] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict)
    inference_ids: dict[str, str] = Field(default_factory=dict)


class _Gathered(BaseModel):
    """What capture has shown since a release started, and how far it has been read."""

    model_config = ConfigDict(frozen=True)
    cursor: CaptureCursor = CaptureCursor()
    variants: dict[str, _Seen] = Field(default_factory=dict)


class CaptureLog:
    """Each variant's answered outputs and inference ids since a release started, from its endpoint's capture."""

    def __init__(self, capture: Callable[[str], ArtifactStore], store: ArtifactStore) -> None:
        self.capture, self.store = capture, store  # capture: endpoint -> the store at its capture destination

    def _key(self, endpoint: str, since: datetime) -> str:
        return f"rollout/evidence/{endpoint}/{since.astimezone(UTC).strftime('%Y%m%dT%H%M%S%f')}.json"

    def read(self, endpoint: str, since: datetime) -> tuple[dict[str, _Seen], int]:
        """Per variant what was seen, and how many records could not be read."""
        key = self._key(endpoint, since)
        try:
            gathered = _Gathered.model_validate_json(self.store.get(key))
        except (ArtifactNotFoundError, ValueError):
            gathered = _Gathered()
        records, cursor = read_capture(self.capture(endpoint), endpoint, gathered.cursor)
        if records or cursor != gathered.cursor:
            variants = {name: (seen.model_copy(deep=True)) for name, seen in gathered.variants.items()}
            for record in records:
                if record.at < since:
                    continue
                seen = variants.setdefault(record.variant, _Seen())
                if record.outputs and not record.error:
                    seen.outputs[record.event_id] = record.outputs[0]
                    if record.inputs:
                        seen.inputs[record.event_id] = record.inputs[0]
                if record.inference_id:
                    seen.inference_ids[record.event_id] = record.inference_id
            gathered = _Gathered(cursor=cursor, variants=variants)
            self.store.put(key, gathered.model_dump_json().encode())
        if cursor.skipped:
            log.warning("%s: %d captured records could not be read and were skipped", endpoint, cursor.skipped)
        return gathered.variants, cursor.skipped


class WorkspaceEvidence:
    """The local backend's reader: capture, and per-request metrics from the workspace's series."""

    def __init__(self, capture: CaptureLog, metrics: Any) -> None:
        self.capture, self.metrics = capture, metrics  # metrics: a SqliteMetricSink

    def _values(self, endpoint: str, variant: str, name: str, since: datetime) -> list[float]:
        dimensions = {"EndpointName": endpoint, "VariantName": variant}
        return [d.value for d in self.metrics.query(SAGEMAKER_NAMESPACE, name, dimensions, start=since)]

    def answered(self, endpoint: str, variant: str, since: datetime) -> int:
        return len(self._values(endpoint, variant, "Invocations", since))

    def __call__(self, endpoint: str, variant: str, since: datetime) -> VariantEvidence:
        seen, skipped = self.capture.read(endpoint, since)
        mine = seen.get(variant, _Seen())
        return VariantEvidence(name=variant, requests=self.answered(endpoint, variant, since),
                               errors_4xx=int(sum(self._values(endpoint, variant, "Invocation4XXErrors", since))),
                               errors_5xx=int(sum(self._values(endpoint, variant, "Invocation5XXErrors", since))),
                               latencies_us=self._values(endpoint, variant, "ModelLatency", since),
                               outputs=mine.outputs, inputs=mine.inputs, inference_ids=mine.inference_ids, unreadable=skipped)


class CloudWatchEvidence:
    """The aws backend's reader: capture in S3, and the endpoint's CloudWatch metrics (`GetMetricData`)."""

    PERCENTILES = ("p50", "p99")

    def __init__(self, capture: CaptureLog, client: Any, *, now: Callable[[], datetime] | None = None) -> None:
        self.capture, self.client = capture, client
        self.now = now or (lambda: datetime.now(UTC))

    def _window(self, since: datetime) -> tuple[datetime, datetime]:
        start = since.astimezone(UTC).replace(second=0, microsecond=0)  # periods start on the minute
        end = self.now().astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        return start, max(end, start + timedelta(minutes=1))

    def _query(self, endpoint: str, variant: str, stats: dict[str, tuple[str, str]], since: datetime
               ) -> dict[str, list[float]]:
        """Per query id, its values per period (oldest first): `stats` maps an id to (metric name, statistic)."""
        start, end = self._window(since)
        dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
        queries = [{"Id": key, "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": SAGEMAKER_NAMESPACE, "MetricName": name, "Dimensions": dimensions},
            "Period": PERIOD_S, "Stat": stat}} for key, (name, stat) in stats.items()]
        found: dict[str, list[float]] = {key: [] for key in stats}
        token: dict[str, str] = {}
        while True:
            answer = self.client.get_metric_data(MetricDataQueries=queries, StartTime=start, EndTime=end,
                                                 ScanBy="TimestampAscending", **token)
            for result in answer.get("MetricDataResults", []):
                found[result["Id"]].extend(float(v) for v in result.get("Values", []) if _number(v))
            if not answer.get("NextToken"):
                return found
            token = {"NextToken": answer["NextToken"]}

    def answered(self, endpoint: str, variant: str, since: datetime) -> int:
        return int(sum(self._query(endpoint, variant, {"n": ("Invocations", "Sum")}, since)["n"]))

    def __call__(self, endpoint: str, variant: str, since: datetime) -> VariantEvidence:
        from botocore.exceptions import ClientError

        sums = self._query(endpoint, variant, {"n": ("Invocations", "Sum"), "e4": ("Invocation4XXErrors", "Sum"),
                                               "e5": ("Invocation5XXErrors", "Sum")}, since)
        try:
            percentiles = self._query(endpoint, variant, {q: ("ModelLatency", q) for q in self.PERCENTILES}, since)
        except ClientError as exc:  # the counts above stand; latency is then shown as unknown, with why
            log.warning("%s/%s: CloudWatch gave no ModelLatency percentiles: %s", endpoint, variant, exc)
            percentiles = {}
        seen, skipped = self.capture.read(endpoint, since)
        mine = seen.get(variant, _Seen())
        return VariantEvidence(name=variant, requests=int(sum(sums["n"])), errors_4xx=int(sum(sums["e4"])),
                               errors_5xx=int(sum(sums["e5"])), latency_percentiles_us=percentiles,
                               outputs=mine.outputs, inputs=mine.inputs, inference_ids=mine.inference_ids, unreadable=skipped)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))
