"""The `evaluate` stage: score candidate, base model and champion on the same prompts, then gate.

Every model gets the same held-out prompts, template and decoding settings, in batches. Task
metrics come from rouge-score and sacrebleu; a shipped general-skills set (arithmetic, facts,
short instructions) catches a candidate that wins on the task but forgets what the base model
could do. Gates are declarative; deltas against the base model and the champion carry paired
bootstrap confidence intervals, so a tiny, noisy difference cannot pass a "must beat" gate.
The decision is a pure function of the scores.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import statistics
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contracts.instances import cost_per_1k_tokens
from steps.base_model import token_counter
from steps.data import Example
from steps.data_contract import TokenCounter
from steps.finetune import TrainedModel
from steps.generation import GenerationSettings, Generator, InProcess, LoadedModel, chat_prompts, load_model
from steps.judge import JudgeConfig
from steps.scoring import Encoder, FaithfulnessConfig, Finding, ToxicityConfig, faithfulness, minilm_encoder, toxicity

log = logging.getLogger(__name__)

Direction = Literal["higher", "lower"]
# Every metric a gate may name, and which way is better. length_ratio has no better side: bound it.
METRICS: dict[str, Direction | None] = {
    "rouge1": "higher", "rouge2": "higher", "rougeL": "higher", "bleu": "higher", "exact_match": "higher",
    "length_ratio": None, "empty_rate": "lower", "blocklist_rate": "lower",
    "unfaithful_rate": "lower", "toxic_rate": "lower",
    "latency_p50": "lower", "latency_p95": "lower",
    "output_tokens_per_s": "higher", "cost_per_1k_output_tokens": "lower",
    "general.accuracy": "higher", "general.rougeL": "higher",
}
PER_SAMPLE = ("rouge1", "rouge2", "rougeL", "exact_match", "length_ratio", "empty_rate", "blocklist_rate",
              "unfaithful_rate", "toxic_rate")
QUALITY = ("unfaithful_rate", "toxic_rate")  # from steps.scoring: the share of outputs flagged
DEFAULT_BLOCKLIST = ("idiot", "stupid", "moron", "dumb", "shut up", "hate you", "loser", "damn", "crap", "jerk")


class Gate(BaseModel):
    """One rule on one metric: absolute bounds, a minimum gain over base or champion, or a maximum drop."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    metric: str
    direction: Direction | None = Field(None, description="which way is better; defaults per metric")
    min: float | None = None
    max: float | None = None
    min_delta_vs_base: float | None = Field(None, description="the gain's confidence interval must clear this")
    min_delta_vs_champion: float | None = Field(None, description="the same against the champion, if one exists")
    max_drop: float | None = Field(None, description="largest loss against the base model (forgetting)")
    max_worse_vs_base: float | None = Field(None, description="fails only when the candidate is worse than the base "
                                                              "model by more than this beyond noise (the whole "
                                                              "interval of its loss lies above it)")

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; allowed: {list(METRICS)}")
        return metric

    @model_validator(mode="after")
    def _has_a_rule(self) -> Gate:
        rules = (self.min, self.max, self.min_delta_vs_base, self.min_delta_vs_champion, self.max_drop,
                 self.max_worse_vs_base)
        if all(r is None for r in rules):
            raise ValueError(f"gate on {self.metric!r} needs one of min, max, min_delta_vs_base, "
                             "min_delta_vs_champion, max_drop, max_worse_vs_base")
        relative = (self.min_delta_vs_base, self.min_delta_vs_champion, self.max_drop, self.max_worse_vs_base)
        if any(r is not None for r in relative) and self.better is None:
            raise ValueError(f"{self.metric!r} has no better direction; give `direction` or use min/max")
        return self

    @property
    def better(self) -> Direction | None:
        return self.direction or METRICS[self.metric]


class Bootstrap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    resamples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0


class EvaluateConfig(BaseModel):
    """Held-out evaluation: how many samples, how to decode, what is blocked, which gates to pass."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_samples: int | None = Field(40, gt=0, description="held-out records scored; null for all")
    generation: GenerationSettings = GenerationSettings()
    general_samples: int | None = Field(24, ge=0, description="general-skills items for the forgetting check; 0 skips")
    general_max_new_tokens: int = Field(16, gt=0, description="answers there are a few words")
    endpoint_ttl_s: int = Field(7200, ge=600, description="aws backend: the temporary evaluation endpoint is tagged to "
                                                         "expire after this long (`genaiops endpoints gc` deletes it)")
    blocklist: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKLIST),
                                 description="words or phrases counted by blocklist_rate")
    quality: bool = Field(True, description="score faithfulness and toxicity of every output (unfaithful_rate, "
                                            "toxic_rate)")
    faithfulness: FaithfulnessConfig = FaithfulnessConfig()
    toxicity: ToxicityConfig = ToxicityConfig()
    judge: JudgeConfig = Field(JudgeConfig(), description="the LLM judge of `genaiops score --metrics judge`")
    bootstrap: Bootstrap = Bootstrap()
    gates: list[Gate] = Field(default_factory=lambda: [
        Gate(metric="rougeL", min_delta_vs_base=0.05),
        Gate(metric="rougeL", min_delta_vs_champion=0.0),
        Gate(metric="general.accuracy", max_drop=0.15),
        Gate(metric="empty_rate", max=0.1),
        Gate(metric="blocklist_rate", max=0.0),
        Gate(metric="unfaithful_rate", max_worse_vs_base=0.0),
        Gate(metric="unfaithful_rate", max=0.2),  # a base model that rambles is no excuse
        Gate(metric="toxic_rate", max=0.0),
    ])

    @model_validator(mode="after")
    def _quality_for_its_gates(self) -> EvaluateConfig:
        named = sorted({g.metric for g in self.gates if g.metric in QUALITY})
        if named and not self.quality:
            raise ValueError(f"gates on {named} need evaluate.quality: true")
        return self


class ModelScores(BaseModel):
    """What one model scored: aggregate metrics, per-sample values (for the bootstrap) and outputs."""

    model_config = ConfigDict(frozen=True)
    name: str
    metrics: dict[str, float]
    per_sample: dict[str, list[float]]
    predictions: list[str]
    general_predictions: list[str] = []
    findings: dict[str, list[list[Finding]]] = {}  # metric -> per sample: the spans that flagged it


class EvalResult(BaseModel):
    """Every model's scores on the same held-out and general-skills samples."""

    model_config = ConfigDict(frozen=True)
    n_samples: int
    references: list[str]
    prompts: list[str]
    general_references: list[str] = []
    candidate: ModelScores
    base: ModelScores
    champion: ModelScores | None = None
    champion_version: str | None = None


class GateCheck(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["absolute", "vs_base", "vs_champion", "max_drop", "max_worse"]
    metric: str
    rule: str
    threshold: float
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    passed: bool
    skipped: bool = False

    def describe(self) -> str:
        if self.skipped:
            return f"{self.metric} {self.rule} {self.threshold:g}: skipped (no champion yet)"
        ci = f" [{self.ci_low:+.4f}, {self.ci_high:+.4f}]" if self.ci_low is not None else ""
        value = f"{self.value:.4f}" if self.kind == "absolute" else f"{self.value:+.4f}"
        return f"{self.metric} {self.rule} {self.threshold:g}: {value}{ci} ({'ok' if self.passed else 'FAILED'})"


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

    def to_json(self, dataset_hash: str) -> str:
        """The verdict as `gate_report.json`: what the registry checks a new version's gate tags against."""
        return json.dumps({"passed": self.passed, "summary": self.summary(), "dataset_hash": dataset_hash,
                           "checks": [c.model_dump(mode="json") for c in self.checks]}, indent=2)


def general_skills() -> list[Example]:
    """The shipped general-capability set (arithmetic, facts, short instructions, interleaved), with references.

    Prompts are the bare questions; `general_prompts` asks them the way the model is meant to be asked.
    """
    path = Path(str(resources.files("steps") / "resources" / "general_skills.jsonl"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [Example(id=r["id"], prompt=r["question"], target=r["answer"]) for r in rows]


def general_prompts(model: LoadedModel, questions: Sequence[str]) -> list[str]:
    """General-skills questions the way the model is meant to be asked (its chat template)."""
    return chat_prompts(model.tokenizer, questions)


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.casefold()).split()


def contains_answer(prediction: str, reference: str) -> bool:
    """The reference's words appear, in order and together, in the prediction."""
    pred, ref = _words(prediction), _words(reference)
    return bool(ref) and any(pred[i : i + len(ref)] == ref for i in range(len(pred) - len(ref) + 1))


def score(predictions: Sequence[str], references: Sequence[str], blocklist: Sequence[str] = DEFAULT_BLOCKLIST,
          ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Task metrics averaged over samples, and the per-sample values behind the averages."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(predictions) != len(references) or not references:
        raise ValueError(f"score() needs as many predictions as references (got {len(predictions)} and {len(references)})")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    blocked = [re.compile(rf"(?<!\w){re.escape(w.casefold())}(?!\w)") for w in blocklist]
    per_sample: dict[str, list[float]] = {key: [r[key].fmeasure for r in rouge] for key in ("rouge1", "rouge2", "rougeL")}
    per_sample["exact_match"] = [float(_words(p) == _words(r)) for p, r in zip(predictions, references, strict=True)]
    per_sample["length_ratio"] = [len(p.split()) / max(len(r.split()), 1)
                                  for p, r in zip(predictions, references, strict=True)]
    per_sample["empty_rate"] = [float(not p.strip()) for p in predictions]
    per_sample["blocklist_rate"] = [float(any(b.search(p.casefold()) for b in blocked)) for p in predictions]
    metrics = {key: statistics.fmean(values) for key, values in per_sample.items()}
    metrics["bleu"] = sacrebleu.corpus_bleu(list(predictions), [list(references)]).score / 100
    return metrics, per_sample


@functools.cache
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one prediction against its reference (what the rollout decision compares live)."""
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def score_general(predictions: Sequence[str], references: Sequence[str]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The forgetting check: answer accuracy and ROUGE-L on the general-skills set."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    per_sample = {
        "general.accuracy": [float(contains_answer(p, r)) for p, r in zip(predictions, references, strict=True)],
        "general.rougeL": [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)],
    }
    return {key: statistics.fmean(values) for key, values in per_sample.items()}, per_sample


def score_model(model: LoadedModel | Generator, samples: Sequence[Example], general: Sequence[Example],
                config: EvaluateConfig, count_tokens: TokenCounter | None = None) -> ModelScores:
    """Generate for every sample (task, then general skills) and score against the references. With
    `count_tokens` (the base model's tokenizer), also the measured generation throughput in output tokens/s."""
    model = InProcess(model) if isinstance(model, LoadedModel) else model
    predictions, latencies = model.complete([s.prompt for s in samples], config.generation)
    metrics, per_sample = score(predictions, [s.target for s in samples], config.blocklist)
    findings: dict[str, list[list[Finding]]] = {}
    if config.quality:
        quality, findings = score_quality([s.prompt for s in samples], predictions, config)
        per_sample.update(quality)
        metrics.update({key: statistics.fmean(values) for key, values in quality.items()})
    quantiles = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
    metrics["latency_p50"], metrics["latency_p95"] = statistics.median(latencies), quantiles[18]
    if count_tokens is not None and sum(latencies) > 0:  # the batches' wall time: latencies share each batch's
        metrics["output_tokens_per_s"] = sum(count_tokens(predictions)) / sum(latencies)
    general_predictions: list[str] = []
    if general:
        short = config.generation.model_copy(update={"max_new_tokens": config.general_max_new_tokens})
        general_predictions = model.ask([g.prompt for g in general], short)
        general_metrics, general_samples = score_general(general_predictions, [g.target for g in general])
        metrics.update(general_metrics)
        per_sample.update(general_samples)
    log.info("%s: rougeL %.3f, general accuracy %s on %d + %d samples", model.name, metrics["rougeL"],
             f"{metrics['general.accuracy']:.3f}" if general else "-", len(samples), len(general))
    return ModelScores(name=model.name, metrics=metrics, per_sample=per_sample, predictions=predictions,
                       general_predictions=general_predictions, findings=findings)


def score_quality(sources: Sequence[str], predictions: Sequence[str], config: EvaluateConfig,
                  encoder: Encoder | None = None) -> tuple[dict[str, list[float]], dict[str, list[list[Finding]]]]:
    """Per sample: is the output unfaithful to its source, is it toxic; and the spans that say so."""
    encoder = encoder or minilm_encoder()
    faithful = faithfulness(sources, predictions, encoder, config.faithfulness)
    harmless = toxicity(predictions, config.toxicity, encoder)
    return ({"unfaithful_rate": [float(s.flagged) for s in faithful], "toxic_rate": [float(s.flagged) for s in harmless]},
            {"unfaithful_rate": [s.findings for s in faithful], "toxic_rate": [s.findings for s in harmless]})


def evaluate(candidate: LoadedModel | Generator, base: LoadedModel | Generator, samples: Sequence[Example],
             config: EvaluateConfig, champion: LoadedModel | Generator | None = None,
             champion_version: str | None = None, count_tokens: TokenCounter | None = None) -> EvalResult:
    """Score candidate, base model and (if any) champion on the same samples and settings (`count_tokens`: the
    base model's tokenizer, for each model's output tokens/s)."""
    if not samples:
        raise ValueError("evaluate() needs at least one held-out sample")
    chosen = list(samples if config.max_samples is None else samples[: config.max_samples])
    general = general_skills()[: config.general_samples] if config.general_samples else []
    return EvalResult(
        n_samples=len(chosen), references=[s.target for s in chosen], prompts=[s.prompt for s in chosen],
        general_references=[g.target for g in general],
        candidate=score_model(candidate, chosen, general, config, count_tokens),
        base=score_model(base, chosen, general, config, count_tokens),
        champion=score_model(champion, chosen, general, config, count_tokens) if champion is not None else None,
        champion_version=champion_version,
    )


def with_cost(result: EvalResult, price_per_hour: float | None) -> EvalResult:
    """Each model's cost per 1,000 output tokens at its measured throughput on an instance of that hourly price."""
    if price_per_hour is None:
        return result

    def priced(model: ModelScores | None) -> ModelScores | None:
        if model is None or not model.metrics.get("output_tokens_per_s"):
            return model
        cost = cost_per_1k_tokens(price_per_hour, model.metrics["output_tokens_per_s"])
        return model if cost is None else model.model_copy(
            update={"metrics": {**model.metrics, "cost_per_1k_output_tokens": cost}})

    return result.model_copy(update={"candidate": priced(result.candidate), "base": priced(result.base),
                                     "champion": priced(result.champion)})


def evaluate_trained(trained: TrainedModel, samples: Sequence[Example], config: EvaluateConfig,
                     champion: LoadedModel | None = None, champion_version: str | None = None) -> EvalResult:
    """Load a trained candidate and its base model, then score them (and the champion) on the same samples."""
    if not trained.base_model_path:
        raise ValueError(f"{trained.path} has no local base model to compare against; evaluate it where both are")
    if trained.kind == "adapter":
        candidate = load_model(trained.base_model_path, trained.path, name="candidate")
    else:
        candidate = load_model(trained.path, None, name="candidate")
    base = load_model(trained.base_model_path, None, name="base")
    return evaluate(candidate, base, samples, config, champion, champion_version,
                    count_tokens=token_counter(Path(trained.base_model_path)))


def bootstrap_delta(metric: str, result: EvalResult, other: ModelScores, settings: Bootstrap) -> tuple[float, float, float]:
    """Candidate minus `other` on `metric`: the point estimate and a paired percentile interval."""
    candidate = result.candidate
    point = candidate.metrics[metric] - other.metrics[metric]
    statistic = _statistic(metric, result, candidate, other)
    n = len(next(iter(candidate.per_sample.values())))
    if metric.startswith("general."):
        n = len(candidate.per_sample[metric])
    rng = random.Random(settings.seed)
    deltas = sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(settings.resamples))
    tail = (1 - settings.confidence) / 2
    low = deltas[int(tail * (len(deltas) - 1))]
    high = deltas[int((1 - tail) * (len(deltas) - 1))]
    return point, low, high


def _statistic(metric: str, result: EvalResult, candidate: ModelScores,
               other: ModelScores) -> Callable[[list[int]], float]:
    if metric in candidate.per_sample:
        a, b = candidate.per_sample[metric], other.per_sample[metric]
        return lambda idx: statistics.fmean(a[i] for i in idx) - statistics.fmean(b[i] for i in idx)
    if metric == "bleu":
        import sacrebleu

        refs = result.references

        def bleu_gain(idx: list[int]) -> float:
            chosen = [refs[i] for i in idx]
            mine = sacrebleu.corpus_bleu([candidate.predictions[i] for i in idx], [chosen]).score
            theirs = sacrebleu.corpus_bleu([other.predictions[i] for i in idx], [chosen]).score
            return (mine - theirs) / 100

        return bleu_gain
    point = candidate.metrics[metric] - other.metrics[metric]  # latency: no per-sample pairing
    return lambda idx: point


def decide(result: EvalResult, gates: Sequence[Gate], bootstrap: Bootstrap | None = None) -> GateReport:
    """Check the candidate against every gate; pure, so approvers and tests see the same thing."""
    bootstrap = bootstrap or Bootstrap()
    checks = []
    for gate in gates:
        value = result.candidate.metrics.get(gate.metric)
        if value is None:
            raise ValueError(f"gate on {gate.metric!r}: not measured (set evaluate.general_samples > 0 for general.*)")
        sign = -1.0 if gate.better == "lower" else 1.0
        if gate.min is not None:
            checks.append(GateCheck(kind="absolute", metric=gate.metric, rule=">=", threshold=gate.min, value=value,
                                    passed=value >= gate.min))
        if gate.max is not None:
            checks.append(GateCheck(kind="absolute", metric=gate.metric, rule="<=", threshold=gate.max, value=value,
                                    passed=value <= gate.max))
        if gate.min_delta_vs_base is not None:
            point, low, high = (sign * x for x in bootstrap_delta(gate.metric, result, result.base, bootstrap))
            low, high = min(low, high), max(low, high)
            checks.append(GateCheck(kind="vs_base", metric=gate.metric, rule="gain over base >=",
                                    threshold=gate.min_delta_vs_base, value=point, ci_low=low, ci_high=high,
                                    passed=low >= gate.min_delta_vs_base))
        if gate.min_delta_vs_champion is not None:
            if result.champion is None:
                checks.append(GateCheck(kind="vs_champion", metric=gate.metric, rule="gain over champion >=",
                                        threshold=gate.min_delta_vs_champion, value=0.0, passed=True, skipped=True))
            else:
                point, low, high = (sign * x for x in bootstrap_delta(gate.metric, result, result.champion, bootstrap))
                low, high = min(low, high), max(low, high)
                # Strictly above: a candidate that only matches the champion has not beaten it.
                checks.append(GateCheck(kind="vs_champion", metric=gate.metric, rule="gain over champion >",
                                        threshold=gate.min_delta_vs_champion, value=point, ci_low=low, ci_high=high,
                                        passed=low > gate.min_delta_vs_champion))
        if gate.max_drop is not None or gate.max_worse_vs_base is not None:
            # The loss against the base model (positive is worse), with its interval.
            point, low, high = (-sign * x for x in bootstrap_delta(gate.metric, result, result.base, bootstrap))
            low, high = min(low, high), max(low, high)
        if gate.max_drop is not None:
            checks.append(GateCheck(kind="max_drop", metric=gate.metric, rule="drop from base <=",
                                    threshold=gate.max_drop, value=point, ci_low=low, ci_high=high,
                                    passed=point <= gate.max_drop))
        if gate.max_worse_vs_base is not None:
            # Worse beyond noise: even the interval's most favourable end is a loss above the threshold.
            checks.append(GateCheck(kind="max_worse", metric=gate.metric, rule="worse than base (beyond noise) <=",
                                    threshold=gate.max_worse_vs_base, value=point, ci_low=low, ci_high=high,
                                    passed=low <= gate.max_worse_vs_base))
    return GateReport(passed=all(c.passed for c in checks), checks=checks)
