"""Alarm specs as typed data, CloudWatch's alarm evaluation as a pure function, and alarm state with its history.

One `AlarmSpec` feeds three consumers: `put_metric_request` (CloudWatch's `PutMetricAlarm`, made at
release time), the CDK monitoring stack, and `evaluate` here, which the local backend runs with
CloudWatch's semantics: M out of N datapoints, the four ways to treat missing data, and the look
back over an evaluation range wider than N when datapoints are missing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from monitoring.metrics import MetricMath, MetricStat, metric_document

State = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
Comparison = Literal["GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold",
                     "LessThanOrEqualToThreshold"]
MissingData = Literal["missing", "ignore", "breaching", "notBreaching"]
SYMBOLS = {"GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=", "LessThanThreshold": "<",
           "LessThanOrEqualToThreshold": "<="}
WORDS = {"GreaterThanThreshold": "greater than", "GreaterThanOrEqualToThreshold": "greater than or equal to",
         "LessThanThreshold": "less than", "LessThanOrEqualToThreshold": "less than or equal to"}
# A metric math document has an `expression`; anything else is one metric. The tags stay out of error paths.
Metric = Annotated[Annotated[MetricStat, Tag("<stat>")] | Annotated[MetricMath, Tag("<math>")],
                   Discriminator(lambda v: "<math>" if (isinstance(v, MetricMath) or
                                                        (isinstance(v, dict) and "expression" in v)) else "<stat>")]
EXTRA_RANGE = 2  # CloudWatch retrieves N + 2 datapoints (its documented tables: N = 3, evaluation range 5)


class AlarmAction(BaseModel):
    """What happens when the alarm goes into ALARM."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["notify", "rollback", "retrain"]
    target: str = Field("", description="notify: an SNS topic ARN on AWS (the log and console locally); "
                                        "rollback: the endpoint; retrain: the registered model")


class AlarmSpec(BaseModel):
    """One CloudWatch metric alarm."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[^\x00-\x1f]{1,255}$")
    description: str = ""
    metric: Metric
    period: int = Field(60, description="seconds: 10, 30 or a multiple of 60, as CloudWatch takes it")
    evaluation_periods: int = Field(5, ge=1)
    datapoints_to_alarm: int | None = Field(None, ge=1, description="M of the M-out-of-N rule (default: N)")
    threshold: float
    comparison: Comparison
    treat_missing_data: MissingData = "missing"
    actions: list[AlarmAction] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> AlarmSpec:
        if self.period not in (10, 30) and (self.period < 60 or self.period % 60):
            raise ValueError(f"period {self.period} s: CloudWatch takes 10, 30 or a multiple of 60")
        if self.datapoints_to_alarm is not None and self.datapoints_to_alarm > self.evaluation_periods:
            raise ValueError(f"datapoints_to_alarm {self.datapoints_to_alarm} exceeds evaluation_periods "
                             f"{self.evaluation_periods}")
        return self

    @property
    def m(self) -> int:
        return self.datapoints_to_alarm or self.evaluation_periods

    @property
    def evaluation_range(self) -> int:
        return self.evaluation_periods + EXTRA_RANGE

    def breaches(self, value: float) -> bool:
        if self.comparison == "GreaterThanThreshold":
            return value > self.threshold
        if self.comparison == "GreaterThanOrEqualToThreshold":
            return value >= self.threshold
        if self.comparison == "LessThanThreshold":
            return value < self.threshold
        return value <= self.threshold


class Evaluation(BaseModel):
    """The state an evaluation arrived at, and why, in CloudWatch's words."""

    model_config = ConfigDict(frozen=True)
    state: State
    reason: str
    evaluated: list[float | None]  # the datapoints the decision rests on, oldest first (None: filled in)


def evaluate(alarm: AlarmSpec, datapoints: Sequence[float | None], current: State, *,
             end: datetime | None = None) -> Evaluation:
    """The alarm's new state from its most recent datapoints (oldest first, None for a period with no data).

    CloudWatch's rules (CloudWatch User Guide, "Configuring how CloudWatch alarms treat missing data",
    section "How alarm state is evaluated when data is missing"): the evaluation range is the last N + 2
    periods. With no missing datapoint among the last N, those N decide. With at least N real datapoints
    in the range, the most recent N real ones decide and missing data is not treated at all. With fewer,
    every real datapoint counts and the missing ones are filled in, as few as make N: `breaching` and
    `notBreaching` fill them so; `missing` and `ignore` decide on the real datapoints, except that when
    all of them breach (no "good" datapoint in the range) the alarm goes to ALARM (`missing`) or keeps
    its state (`ignore`) once the oldest is M periods old, and keeps its state before that (no premature
    ALARM). With no real datapoint: INSUFFICIENT_DATA, the state kept, ALARM or OK, mode by mode.
    `end` (the end of the last period) puts timestamps into the reason, as CloudWatch writes them.
    """
    n, m, size = alarm.evaluation_periods, alarm.m, alarm.evaluation_range
    window = ([None] * size + list(datapoints))[-size:]
    stamps = [None if end is None else end - timedelta(seconds=alarm.period * (size - i)) for i in range(size)]
    real = [(v, t) for v, t in zip(window, stamps, strict=True) if v is not None]
    if all(v is not None for v in window[-n:]) or len(real) >= n:
        return _decide(alarm, real[-n:])
    fill, mode = n - len(real), alarm.treat_missing_data
    if mode in ("breaching", "notBreaching"):
        return _decide(alarm, real, filled=fill, breaching_fill=mode == "breaching")
    if not real:
        if mode == "ignore":
            return Evaluation(state=current, evaluated=[], reason=f"no datapoints were received for {size} periods; "
                              "missing data is ignored, so the alarm keeps its state.")
        return Evaluation(state="INSUFFICIENT_DATA", evaluated=[],
                          reason=f"Insufficient Data: {size} datapoints were unknown.")
    if all(alarm.breaches(v) for v, _ in real):
        oldest_age = size - next(i for i, v in enumerate(window) if v is not None)
        if oldest_age >= m and mode == "missing":
            return _decide(alarm, real, filled=fill, breaching_fill=True, premature_guard=True)
        return Evaluation(state=current, evaluated=[v for v, _ in real],
                          reason=f"{len(real)} breaching datapoint(s) and {fill} missing: "
                                 + ("missing data is ignored, so the alarm keeps its state." if oldest_age >= m else
                                    f"not yet {m} periods old, so the alarm keeps its state (no premature ALARM)."))
    return _decide(alarm, real)


def _decide(alarm: AlarmSpec, real: Sequence[tuple[float, datetime | None]], *, filled: int = 0,
            breaching_fill: bool = False, premature_guard: bool = False) -> Evaluation:
    """ALARM when at least M of the evaluated datapoints breach, else OK; with CloudWatch's reason."""
    breaching = sum(alarm.breaches(v) for v, _ in real) + (filled if breaching_fill else 0)
    state: State = "ALARM" if breaching >= alarm.m else "OK"
    count = len(real) + filled
    shown = ", ".join(f"{_number(v)}" + (f" ({t:%d/%m/%y %H:%M:%S})" if t else "") for v, t in reversed(real))
    relation = WORDS[alarm.comparison] if state == "ALARM" else f"not {WORDS[alarm.comparison]}"
    hits = breaching if state == "ALARM" else count - breaching
    if real and filled and not premature_guard:  # as CloudWatch words it: "1 datapoint [0.0 (...)] was less than ..."
        text = f"{len(real)} datapoint{'s' if len(real) > 1 else ''} [{shown}] {'were' if len(real) > 1 else 'was'} " \
               f"{'' if any(alarm.breaches(v) for v, _ in real) else 'not '}{WORDS[alarm.comparison]} the threshold " \
               f"({_number(alarm.threshold)})"
    elif real:
        text = f"{hits} out of the last {count} datapoints [{shown}] {'was' if hits == 1 else 'were'} {relation} " \
               f"the threshold ({_number(alarm.threshold)})"
    else:
        text = f"no datapoints were received for {alarm.evaluation_range} periods"
    if filled and not premature_guard:
        text += f" and {filled} missing datapoint{'s were' if filled > 1 else ' was'} treated as " \
                f"[{'Breaching' if breaching_fill else 'NonBreaching'}]"
    elif premature_guard:
        text += f"; the breach is at least {alarm.m} periods old and nothing newer arrived"
    needed = alarm.m if state == "ALARM" else alarm.evaluation_periods - alarm.m + 1
    transition = "OK -> ALARM" if state == "ALARM" else "ALARM -> OK"
    return Evaluation(state=state, evaluated=[*(v for v, _ in real), *([None] * filled)],
                      reason=f"Threshold Crossed: {text} (minimum {needed} datapoint{'s' if needed > 1 else ''} "
                             f"for {transition} transition).")


def _number(value: float) -> str:
    return repr(float(value))  # CloudWatch prints floats with at least one decimal: 1.0, 0.0


# --- state and history ----------------------------------------------------------------------------

class StateChange(BaseModel):
    """One entry of an alarm's history, as CloudWatch's DescribeAlarmHistory lists a StateUpdate."""

    model_config = ConfigDict(frozen=True)
    at: str
    old: State
    new: State
    reason: str
    datapoints: list[float | None] = Field(default_factory=list)


class AlarmRecord(BaseModel):
    """An alarm's spec, its current state and every change of state."""

    model_config = ConfigDict(frozen=True)
    spec: AlarmSpec
    state: State = "INSUFFICIENT_DATA"
    reason: str = "Unchecked: Initial alarm creation"
    updated: str = ""
    history: list[StateChange] = Field(default_factory=list)


class AlarmStore:
    """Alarms of the local backend, one JSON file each under `<workspace>/alarms/`, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        from urllib.parse import quote

        return self.folder / f"{quote(name, safe='')}.json"  # one file per name, whatever characters it holds

    def put(self, spec: AlarmSpec) -> AlarmRecord:
        """Create the alarm, or update its spec and keep its state and history (PutMetricAlarm's behaviour)."""
        existing = self.get(spec.name)
        record = existing.model_copy(update={"spec": spec}) if existing else AlarmRecord(spec=spec, updated=_now())
        self._write(record)
        return record

    def get(self, name: str) -> AlarmRecord | None:
        path = self._path(name)
        return AlarmRecord.model_validate_json(path.read_text()) if path.exists() else None

    def list(self) -> list[AlarmRecord]:
        return [AlarmRecord.model_validate_json(p.read_text()) for p in sorted(self.folder.glob("*.json"))]

    def delete(self, name: str) -> bool:
        path = self._path(name)
        if not path.exists():
            return False
        path.unlink()
        return True

    def sync(self, endpoint: str, specs: Sequence[AlarmSpec]) -> tuple[str, ...]:
        """Make the endpoint's alarms (`<endpoint>/...`) these specs, as `monitoring.cloudwatch.sync_alarms` does on
        AWS: put each (its state and history kept), delete the others; returns the names deleted."""
        for spec in specs:
            self.put(spec)
        wanted = {spec.name for spec in specs}
        stale = [r.spec.name for r in self.list() if r.spec.name.startswith(f"{endpoint}/") and r.spec.name not in wanted]
        for name in stale:
            self.delete(name)
        return tuple(stale)

    def record(self, name: str, evaluation: Evaluation) -> tuple[AlarmRecord, StateChange | None]:
        """Store an evaluation; returns the record and the state change it made (None: the state stayed)."""
        record = self.get(name)
        if record is None:
            raise KeyError(f"no alarm named {name!r}")
        if evaluation.state == record.state:
            return record, None
        change = StateChange(at=_now(), old=record.state, new=evaluation.state, reason=evaluation.reason,
                             datapoints=evaluation.evaluated)
        updated = record.model_copy(update={"state": evaluation.state, "reason": evaluation.reason,
                                            "updated": change.at, "history": [*record.history, change]})
        self._write(updated)
        return updated, change

    def _write(self, record: AlarmRecord) -> None:
        path = self._path(record.spec.name)
        with tempfile.NamedTemporaryFile("w", dir=self.folder, delete=False, suffix=".tmp") as out:
            out.write(record.model_dump_json(indent=2))
        os.replace(out.name, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- CloudWatch ------------------------------------------------------------------------------------

def put_metric_request(spec: AlarmSpec, *, alarm_actions: Sequence[str] = (), ok_actions: Sequence[str] = (),
                       tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The PutMetricAlarm request of a spec (the CDK stack builds its CfnAlarm from the same spec)."""
    request: dict[str, Any] = {
        "AlarmName": spec.name, "AlarmDescription": spec.description[:1024], "ActionsEnabled": True,
        "EvaluationPeriods": spec.evaluation_periods, "DatapointsToAlarm": spec.m, "Threshold": spec.threshold,
        "ComparisonOperator": spec.comparison, "TreatMissingData": spec.treat_missing_data,
        "AlarmActions": list(alarm_actions), "OKActions": list(ok_actions),
        "Tags": [{"Key": k, "Value": v} for k, v in sorted((tags or {}).items())],
    }
    if isinstance(spec.metric, MetricStat):
        document = metric_document(spec.metric)
        request.update(Namespace=document["Namespace"], MetricName=document["MetricName"],
                       Dimensions=document["Dimensions"], Period=spec.period)
        request["Statistic" if spec.metric.stat in ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
                else "ExtendedStatistic"] = spec.metric.stat
    else:
        request["Metrics"] = [
            *({"Id": name, "ReturnData": False, "MetricStat": {"Metric": metric_document(stat), "Period": spec.period,
                                                               "Stat": stat.stat}}
              for name, stat in spec.metric.metrics.items()),
            {"Id": "e1", "Expression": spec.metric.expression, "Label": spec.metric.label or spec.name,
             "ReturnData": True}]
    return request


def describe(record: AlarmRecord) -> dict[str, Any]:
    """A plain document of an alarm for `genaiops alarms list --json`."""
    return json.loads(record.model_dump_json(exclude={"history"})) | {"transitions": len(record.history)}
