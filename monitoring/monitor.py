"""What watches an endpoint: its default alarms (tunable in the pipeline config's `monitoring` section),
the drift and quality metrics of new capture, and the evaluation of every alarm with its actions.

Plain functions over ports (a metric sink and source, an alarm store, an encoder, action runners);
the `monitor` flow wires them per backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring import drift
from monitoring.alarms import AlarmAction, AlarmRecord, AlarmSpec, AlarmStore, MissingData, StateChange, evaluate
from monitoring.metrics import (
    GENAIOPS_NAMESPACE,
    MetricDatum,
    MetricMath,
    MetricSource,
    MetricStat,
    series,
)

log = logging.getLogger(__name__)
ActionKind = Literal["notify", "rollback", "retrain"]


class AlarmTuning(BaseModel):
    """Changes to one default alarm; unset fields keep the default."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    threshold: float | None = None
    period: int | None = None
    evaluation_periods: int | None = Field(None, ge=1)
    datapoints_to_alarm: int | None = Field(None, ge=1)
    treat_missing_data: MissingData | None = None
    actions: list[ActionKind] | None = None


class Default(BaseModel):
    """A default alarm of every endpoint (scope endpoint) or of every variant (scope variant)."""

    model_config = ConfigDict(frozen=True)
    scope: Literal["endpoint", "variant"]
    description: str
    metric: dict[str, Any]  # a MetricStat or MetricMath document; dimensions are added per endpoint and variant
    threshold: float
    comparison: str
    evaluation_periods: int = 5
    datapoints_to_alarm: int = 3
    treat_missing_data: MissingData = "notBreaching"
    actions: list[ActionKind] = ["notify"]


def _stat(name: str, stat: str, namespace: str = "AWS/SageMaker") -> dict[str, Any]:
    return {"namespace": namespace, "name": name, "stat": stat}


def _rate(errors: str) -> dict[str, Any]:
    return {"expression": "100 * errors / invocations",
            "metrics": {"errors": _stat(errors, "Sum"), "invocations": _stat("Invocations", "Sum")}}


DEFAULTS: dict[str, Default] = {
    "5xx_rate": Default(scope="variant", description="percent of invocations the model failed (5XX / ModelError)",
                        metric=_rate("Invocation5XXErrors"), threshold=5, comparison="GreaterThanThreshold",
                        actions=["notify", "rollback"]),
    "4xx_rate": Default(scope="variant", description="percent of invocations refused as bad requests (4XX)",
                        metric=_rate("Invocation4XXErrors"), threshold=20, comparison="GreaterThanThreshold"),
    "model_latency_p99": Default(scope="variant", description="p99 of the model's time, microseconds",
                                 metric=_stat("ModelLatency", "p99"), threshold=30_000_000,
                                 comparison="GreaterThanThreshold", actions=["notify", "rollback"]),
    "overhead_latency_p99": Default(scope="variant", description="p99 of the endpoint's own time, microseconds",
                                    metric=_stat("OverheadLatency", "p99"), threshold=50_000,
                                    comparison="GreaterThanThreshold"),
    "no_invocations": Default(scope="variant", description="no invocations for the whole evaluation",
                              metric=_stat("Invocations", "Sum"), threshold=1, comparison="LessThanThreshold",
                              evaluation_periods=15, datapoints_to_alarm=15, treat_missing_data="breaching"),
    "input_length_drift": Default(scope="endpoint", description="PSI of live input token lengths vs the training split",
                                  metric=_stat("InputLengthPSI", "Maximum", GENAIOPS_NAMESPACE), threshold=0.25,
                                  comparison="GreaterThanThreshold", evaluation_periods=1, datapoints_to_alarm=1,
                                  treat_missing_data="ignore", actions=["notify", "retrain"]),
    "embedding_drift": Default(scope="endpoint", description="cosine distance of the mean input embedding (MiniLM) "
                                                             "from the training split's",
                               metric=_stat("EmbeddingDrift", "Maximum", GENAIOPS_NAMESPACE), threshold=0.15,
                               comparison="GreaterThanThreshold", evaluation_periods=1, datapoints_to_alarm=1,
                               treat_missing_data="ignore", actions=["notify", "retrain"]),
    "output_length_drift": Default(scope="variant", description="PSI of output token lengths vs the training targets",
                                   metric=_stat("OutputLengthPSI", "Maximum", GENAIOPS_NAMESPACE), threshold=0.5,
                                   comparison="GreaterThanThreshold", evaluation_periods=1, datapoints_to_alarm=1,
                                   treat_missing_data="ignore"),
    "empty_output_rate": Default(scope="variant", description="percent of empty outputs",
                                 metric=_stat("EmptyOutputRate", "Maximum", GENAIOPS_NAMESPACE), threshold=10,
                                 comparison="GreaterThanThreshold", evaluation_periods=1, datapoints_to_alarm=1,
                                 treat_missing_data="ignore", actions=["notify", "rollback"]),
    "disagreement_rate": Default(scope="variant", description="percent of paired requests whose output differs from "
                                                              "the primary variant's",
                                 metric=_stat("DisagreementRate", "Maximum", GENAIOPS_NAMESPACE), threshold=90,
                                 comparison="GreaterThanThreshold", evaluation_periods=1, datapoints_to_alarm=1,
                                 treat_missing_data="ignore"),
    "unfaithful_output_rate": Default(scope="variant", description="percent of a scored sample of outputs that state "
                                                                   "names, numbers, days or facts their input does not",
                                      metric=_stat("UnfaithfulOutputRate", "Maximum", GENAIOPS_NAMESPACE), threshold=50,
                                      comparison="GreaterThanThreshold", evaluation_periods=1, datapoints_to_alarm=1,
                                      treat_missing_data="ignore"),
    "toxic_output_rate": Default(scope="variant", description="percent of a scored sample of outputs the toxicity "
                                                              "classifier flags",
                                 metric=_stat("ToxicOutputRate", "Maximum", GENAIOPS_NAMESPACE), threshold=5,
                                 comparison="GreaterThanThreshold", evaluation_periods=1, datapoints_to_alarm=1,
                                 treat_missing_data="ignore", actions=["notify", "rollback"]),
}


class DriftConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    min_requests: int = Field(20, ge=1, description="new requests to the primary variant the monitors wait for; "
                                                     "capture accumulates until then")
    reference_size: int = Field(400, ge=10, description="training records the live traffic is compared with")
    embedding: bool = Field(True, description="compute embedding drift (all-MiniLM-L6-v2, CPU)")
    quality_sample: int = Field(64, ge=0, description="outputs per variant scored for faithfulness and toxicity each "
                                                      "run (the newest); 0 turns the quality monitors off")
    reference_dataset: str | None = Field(None, description="hash of the prepared dataset live traffic is compared "
                                                            "with; default: the one the served version's lineage names")


class MonitoringConfig(BaseModel):
    """The `monitoring` section: period, the default alarms' tuning, custom alarms, drift. (Where notifications go is
    where the pipeline runs: the `GENAIOPS_NOTIFY_TOPIC_ARN` setting.)"""

    model_config = ConfigDict(frozen=True, extra="forbid")
    period: int = Field(60, description="seconds per datapoint of every default alarm (10, 30 or a multiple of 60)")
    alarms: dict[str, AlarmTuning] = Field(default_factory=dict, description=f"tuning per default alarm: "
                                                                             f"{', '.join(DEFAULTS)}")
    custom: list[AlarmSpec] = Field(default_factory=list, description="more alarms, as full specs")
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _known(self) -> MonitoringConfig:
        unknown = sorted(set(self.alarms) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown default alarm(s) {', '.join(unknown)}: one of {', '.join(DEFAULTS)}")
        for name in DEFAULTS:  # every tuned default must still make a valid spec
            endpoint_alarms("e", ["v"], "m", self, only=name)
        return self


def alarm_name(endpoint: str, variant: str | None, key: str) -> str:
    """`<endpoint>[/<variant>]/<alarm>`: endpoint and variant names hold no "/", so an endpoint's alarms are
    exactly those under its prefix (CloudWatch's AlarmNamePrefix finds them)."""
    return f"{endpoint}/{variant + '/' if variant else ''}{key.replace('_', '-')}"


def endpoint_alarms(endpoint: str, variants: Sequence[str], model: str, config: MonitoringConfig, *,
                    notify_topic: str = "", only: str | None = None) -> list[AlarmSpec]:
    """The alarms of one endpoint: the enabled defaults per endpoint and per variant, then the custom ones.
    `notify_topic` is the SNS topic of their notify actions on AWS (locally the notifier of the run)."""
    specs = []
    for key, default in DEFAULTS.items():
        if only is not None and key != only:
            continue
        tuning = config.alarms.get(key, AlarmTuning())
        if not tuning.enabled or (key == "disagreement_rate" and len(variants) < 2):  # nothing to disagree with
            continue
        scopes = [None] if default.scope == "endpoint" else list(variants)
        for variant in scopes:
            dimensions = {"EndpointName": endpoint, **({"VariantName": variant} if variant else {})}
            targets = {"notify": notify_topic, "rollback": endpoint, "retrain": model}
            kinds = tuning.actions if tuning.actions is not None else default.actions
            evaluation_periods = tuning.evaluation_periods or default.evaluation_periods
            specs.append(AlarmSpec(
                name=alarm_name(endpoint, variant, key),
                description=f"{default.description} ({endpoint}{' / ' + variant if variant else ''})",
                metric=_with_dimensions(default.metric, dimensions), period=tuning.period or config.period,
                evaluation_periods=evaluation_periods,
                datapoints_to_alarm=tuning.datapoints_to_alarm or min(default.datapoints_to_alarm, evaluation_periods),
                threshold=default.threshold if tuning.threshold is None else tuning.threshold,
                comparison=default.comparison,
                treat_missing_data=tuning.treat_missing_data or default.treat_missing_data,
                actions=[AlarmAction(kind=k, target=targets[k]) for k in kinds]))
    return specs if only is not None else [*specs, *config.custom]


def _with_dimensions(metric: Mapping[str, Any], dimensions: dict[str, str]) -> MetricStat | MetricMath:
    if "expression" in metric:
        return MetricMath(expression=metric["expression"], metrics={
            k: MetricStat(**v, dimensions=dimensions) for k, v in metric["metrics"].items()})
    return MetricStat(**metric, dimensions=dimensions)


# --- the monitor ----------------------------------------------------------------------------------

class Reference(BaseModel):
    """What live traffic is compared with: the training split's raw inputs and targets."""

    model_config = ConfigDict(frozen=True)
    inputs: list[str]
    outputs: list[str]


def quality_rates(records: Sequence[drift.Captured], variant: str, sample: int,
                  encode: drift.Encoder | None) -> tuple[float, float]:
    """Percent of the variant's newest `sample` answered requests whose output is unfaithful to its input, and toxic."""
    from steps.scoring import faithfulness, toxicity

    pairs = [(i, o) for r in records if r.variant == variant and r.outputs is not None
             for i, o in zip(r.inputs, r.outputs, strict=False)][-sample:]
    if not pairs:
        return 0.0, 0.0
    faithful = faithfulness([i for i, _ in pairs], [o for _, o in pairs], encode)
    harmless = toxicity([o for _, o in pairs], encoder=encode)
    return (100.0 * sum(s.flagged for s in faithful) / len(pairs), 100.0 * sum(s.flagged for s in harmless) / len(pairs))


def drift_metrics(endpoint: str, records: Sequence[drift.Captured], reference: Reference, primary: str, *,
                  count_tokens: Callable[[Sequence[str]], list[int]], encode: drift.Encoder | None,
                  config: DriftConfig, when: datetime) -> list[MetricDatum]:
    """The drift and quality metrics of new capture (nothing for a statistic with too few live requests)."""
    datums: list[MetricDatum] = []

    def put(name: str, value: float, variant: str | None = None, unit: str = "None") -> None:
        dimensions = {"EndpointName": endpoint, **({"VariantName": variant} if variant else {})}
        datums.append(MetricDatum(namespace=GENAIOPS_NAMESPACE, name=name, value=round(value, 6), unit=unit,
                                  dimensions=dimensions, timestamp=when))

    production = [r for r in records if r.variant == primary]
    inputs = [text for r in production for text in r.inputs]
    put("CapturedRequests", float(len(records)), unit="Count")
    if len(inputs) >= config.min_requests:
        psi, ks = drift.length_stats(count_tokens(reference.inputs), count_tokens(inputs))
        put("InputLengthPSI", psi)
        put("InputLengthKS", ks)
        if encode is not None:
            put("EmbeddingDrift", drift.embedding_drift(reference.inputs, inputs, encode))
    reference_lengths = count_tokens(reference.outputs)
    for variant in sorted({r.variant for r in records}):  # what the cost per token is of: every answered request
        answered = [r for r in records if r.variant == variant and r.outputs is not None]
        if answered:
            put("InputTokenCount", float(sum(count_tokens([t for r in answered for t in r.inputs]))), variant,
                unit="Count")
            put("OutputTokenCount", float(sum(count_tokens([t for r in answered for t in r.outputs or []]))), variant,
                unit="Count")
    for variant in sorted({r.variant for r in records}):
        outputs = [text for r in records if r.variant == variant and r.outputs is not None for text in r.outputs]
        if len(outputs) >= config.min_requests:
            psi, ks = drift.length_stats(reference_lengths, count_tokens(outputs))
            put("OutputLengthPSI", psi, variant)
            put("OutputLengthKS", ks, variant)
            put("EmptyOutputRate", drift.empty_rate(outputs), variant, unit="Percent")
            if config.quality_sample:
                unfaithful, toxic = quality_rates(records, variant, config.quality_sample, encode)
                put("UnfaithfulOutputRate", unfaithful, variant, unit="Percent")
                put("ToxicOutputRate", toxic, variant, unit="Percent")
    for variant, rate in drift.disagreement(records, primary).items():
        put("DisagreementRate", rate, variant, unit="Percent")
    return datums


class Transition(BaseModel):
    """An alarm that changed state in this evaluation."""

    model_config = ConfigDict(frozen=True)
    alarm: str
    change: StateChange
    actions: list[AlarmAction]


def evaluate_alarms(store: AlarmStore, source: MetricSource, names: Sequence[str], now: datetime) -> list[Transition]:
    """Evaluate each named alarm at `now` (the current, partial period counts as the last one) and record it."""
    transitions = []
    for name in names:
        record = store.get(name)
        if record is None:
            continue
        spec = record.spec
        end = datetime.fromtimestamp((int(now.timestamp()) // spec.period + 1) * spec.period, now.tzinfo)
        start = end - timedelta(seconds=spec.period * spec.evaluation_range)
        values = series(source, spec.metric, period=spec.period, start=start, end=end)
        updated, change = store.record(name, evaluate(spec, values, record.state, end=end))
        if change is not None:
            log.info("alarm %s: %s -> %s: %s", name, change.old, change.new, change.reason)
            transitions.append(Transition(alarm=name, change=change, actions=updated.spec.actions))
    return transitions


def run_actions(transitions: Sequence[Transition], runners: Mapping[str, Callable[[AlarmAction, str, str], None]]) -> int:
    """Run the actions of every alarm that went into ALARM, once per transition; returns how many ran."""
    ran = 0
    for transition in transitions:
        if transition.change.new != "ALARM":
            continue
        for action in transition.actions:
            runner = runners.get(action.kind)
            if runner is None:
                log.warning("alarm %s: no runner for the %s action", transition.alarm, action.kind)
                continue
            runner(action, transition.alarm, transition.change.reason)
            ran += 1
    return ran


def alarm_records(store: AlarmStore, endpoint: str | None = None) -> list[AlarmRecord]:
    """The alarms in the store, or those of one endpoint."""
    records = store.list()
    return [r for r in records if endpoint is None or r.spec.name.startswith(f"{endpoint}/")]


# --- where alarms live -----------------------------------------------------------------------------

class AlarmSync(BaseModel):
    """What syncing an endpoint's alarms did."""

    model_config = ConfigDict(frozen=True)
    put: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    owner: Literal["flows", "stack"] = Field("flows", description="stack: the endpoint's alarms are a stack's (an "
                                                                  "endpoint kept as code), left as the stack made them")


class AlarmView(BaseModel):
    """One alarm as `genaiops alarms list` shows it, wherever it lives."""

    model_config = ConfigDict(frozen=True)
    name: str
    state: str
    since: str = Field(description="when it last changed state (UTC)")
    rule: str
    actions: list[str]
    reason: str


def rule_text(comparison: str, threshold: float, datapoints: int, periods: int, period: int) -> str:
    from monitoring.alarms import SYMBOLS

    return f"{SYMBOLS.get(comparison, comparison)} {threshold:g} ({datapoints}/{periods} x {period}s)"


class Alarms(Protocol):
    """An endpoint's alarms where they live: the workspace's store, evaluated here with CloudWatch's semantics, or
    CloudWatch, which evaluates them itself and runs their actions."""

    def sync(self, endpoint: str, specs: Sequence[AlarmSpec]) -> AlarmSync:
        """Make the endpoint's alarms these specs (created or updated by name, the stale ones deleted)."""

    def evaluate(self, specs: Sequence[AlarmSpec], now: datetime) -> list[Transition]:
        """Evaluate them now, if that is this side's job; the state changes (none where CloudWatch evaluates)."""

    def states(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Each alarm's state and reason (absent: no such alarm)."""

    def dashboard(self, endpoint: str, variants: Sequence[str], *, period: int, hours: float) -> str:
        """The endpoint's dashboard, refreshed; where to look at it."""

    def views(self, endpoint: str | None) -> list[AlarmView]:
        """Every alarm, or an endpoint's, with its state."""

    def history(self, name: str) -> list[StateChange] | None:
        """An alarm's state changes, oldest first; None when there is no such alarm."""


class LocalAlarms:
    """The workspace's alarms (`alarms/`), its metric series, and the dashboard pages under `dashboards/`."""

    def __init__(self, store: AlarmStore, metrics: Any, dashboards: Path) -> None:
        self.store, self.metrics, self.dashboards = store, metrics, dashboards

    def sync(self, endpoint: str, specs: Sequence[AlarmSpec]) -> AlarmSync:
        return AlarmSync(put=sorted(s.name for s in specs), deleted=sorted(self.store.sync(endpoint, specs)))

    def evaluate(self, specs: Sequence[AlarmSpec], now: datetime) -> list[Transition]:
        return evaluate_alarms(self.store, self.metrics, [s.name for s in specs], now)

    def states(self, names: Sequence[str]) -> dict[str, tuple[str, str]]:
        return {name: (record.state, record.reason) for name in names if (record := self.store.get(name)) is not None}

    def dashboard(self, endpoint: str, variants: Sequence[str], *, period: int, hours: float) -> str:
        from monitoring.dashboards import panels, render_local

        page = render_local(endpoint, panels(endpoint, variants), self.metrics, alarm_records(self.store, endpoint),
                            self.dashboards / endpoint, end=datetime.now(UTC), hours=hours, period=period)
        return str(page)

    def views(self, endpoint: str | None) -> list[AlarmView]:
        return [AlarmView(name=r.spec.name, state=r.state, since=r.updated, reason=r.reason,
                          rule=rule_text(r.spec.comparison, r.spec.threshold, r.spec.m, r.spec.evaluation_periods,
                                         r.spec.period), actions=[a.kind for a in r.spec.actions])
                for r in alarm_records(self.store, endpoint)]

    def history(self, name: str) -> list[StateChange] | None:
        record = self.store.get(name)
        return None if record is None else list(record.history)
