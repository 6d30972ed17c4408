"""The `evaluate` stage: score candidate and base model on the same held-out prompts, then gate.

Both models get the same prompts, template and decoding settings. Scores come from
rouge-score; the gate decision is a pure function of the scores, so it is easy to test and
to show to an approver.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steps.data import Example
from steps.finetune import TrainedModel
from steps.generation import GenerationSettings, LoadedModel, generate, load_model

log = logging.getLogger(__name__)

METRICS = ("rouge1", "rouge2", "rougeL", "empty_rate", "length_ratio", "seconds_per_sample")
LOWER_IS_BETTER = frozenset({"empty_rate", "seconds_per_sample"})


class Gate(BaseModel):
    """One rule a candidate must meet: bounds on a metric, or a minimum gain over the base model."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: str
    min: float | None = None
    max: float | None = None
    min_delta_vs_base: float | None = Field(None, description="candidate minus base must be at least this")

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; allowed: {list(METRICS)}")
        return metric

    @model_validator(mode="after")
    def _has_a_rule(self) -> Gate:
        if self.min is None and self.max is None and self.min_delta_vs_base is None:
            raise ValueError(f"gate on {self.metric!r} needs at least one of min, max, min_delta_vs_base")
        return self


class EvaluateConfig(BaseModel):
    """Held-out evaluation: how many samples, how to decode, which gates to pass."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_samples: int | None = Field(40, gt=0, description="held-out records scored; null for all")
    generation: GenerationSettings = GenerationSettings()
    gates: list[Gate] = Field(default_factory=lambda: [
        Gate(metric="rougeL", min_delta_vs_base=0.05),
        Gate(metric="empty_rate", max=0.1),
    ])


class ModelScores(BaseModel):
    """What one model scored, with its predictions for the report."""

    model_config = ConfigDict(frozen=True)
    name: str
    metrics: dict[str, float]
    predictions: list[str]


class EvalResult(BaseModel):
    """Candidate and base scores on the same held-out samples."""

    model_config = ConfigDict(frozen=True)
    n_samples: int
    candidate: ModelScores
    base: ModelScores
    references: list[str]


class GateCheck(BaseModel):
    model_config = ConfigDict(frozen=True)
    metric: str
    rule: str
    threshold: float
    value: float
    passed: bool

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.metric} {self.rule} {self.threshold:g}: {self.value:.4f} ({verdict})"


class GateReport(BaseModel):
    """The gate verdict and every check behind it."""

    model_config = ConfigDict(frozen=True)
    passed: bool
    checks: list[GateCheck]

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.passed:
            return "all gates passed: " + "; ".join(c.describe() for c in self.checks)
        return "gates failed: " + "; ".join(c.describe() for c in self.failures)


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (rouge-score, stemmed), empty-output rate and length ratio, averaged."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references) or not references:
        raise ValueError(f"score() needs as many predictions as references (got {len(predictions)} and {len(references)})")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    metrics = {key: statistics.fmean(r[key].fmeasure for r in rows) for key in ("rouge1", "rouge2", "rougeL")}
    metrics["empty_rate"] = sum(not p.strip() for p in predictions) / len(predictions)
    metrics["length_ratio"] = statistics.fmean(
        len(p.split()) / max(len(r.split()), 1) for p, r in zip(predictions, references, strict=True)
    )
    return metrics


def score_model(model: LoadedModel, samples: Sequence[Example], settings: GenerationSettings) -> ModelScores:
    """Generate for every sample and score against the references."""
    started = time.monotonic()
    predictions = generate(model, [s.prompt for s in samples], settings)
    seconds = time.monotonic() - started
    metrics = score(predictions, [s.target for s in samples])
    metrics["seconds_per_sample"] = seconds / len(samples)
    log.info("%s: rougeL %.3f on %d samples in %.0f s", model.name, metrics["rougeL"], len(samples), seconds)
    return ModelScores(name=model.name, metrics=metrics, predictions=predictions)


def evaluate(candidate: LoadedModel, base: LoadedModel, samples: Sequence[Example],
             config: EvaluateConfig) -> EvalResult:
    """Score a candidate and its base model on the same held-out samples."""
    if not samples:
        raise ValueError("evaluate() needs at least one held-out sample")
    chosen = list(samples if config.max_samples is None else samples[: config.max_samples])
    return EvalResult(
        n_samples=len(chosen),
        candidate=score_model(candidate, chosen, config.generation),
        base=score_model(base, chosen, config.generation),
        references=[s.target for s in chosen],
    )


def decide(candidate: dict[str, float], base: dict[str, float], gates: Sequence[Gate]) -> GateReport:
    """Check the candidate's metrics against every gate; pure, so approvers and tests see the same thing."""
    checks = []
    for gate in gates:
        value = candidate[gate.metric]
        if gate.min is not None:
            checks.append(GateCheck(metric=gate.metric, rule=">=", threshold=gate.min, value=value,
                                    passed=value >= gate.min))
        if gate.max is not None:
            checks.append(GateCheck(metric=gate.metric, rule="<=", threshold=gate.max, value=value,
                                    passed=value <= gate.max))
        if gate.min_delta_vs_base is not None:
            gain = value - base[gate.metric]
            if gate.metric in LOWER_IS_BETTER:
                gain = -gain
            checks.append(GateCheck(metric=gate.metric, rule="gain over base >=", threshold=gate.min_delta_vs_base,
                                    value=gain, passed=gain >= gate.min_delta_vs_base))
    return GateReport(passed=all(c.passed for c in checks), checks=checks)


def evaluate_trained(trained: TrainedModel, samples: Sequence[Example], config: EvaluateConfig) -> EvalResult:
    """Load a trained candidate and its base model, then score both on the same samples."""
    if trained.kind == "adapter":
        candidate = load_model(trained.base_model_path, trained.path, name="candidate")
    else:
        candidate = load_model(trained.path, None, name="candidate")
    base = load_model(trained.base_model_path, None, name="base")
    return evaluate(candidate, base, samples, config)
