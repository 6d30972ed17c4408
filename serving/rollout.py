"""The rollout decision: after a shadow or A/B period, the candidate against the champion on live evidence.

Pure, like the gate's `decide`: it takes what the endpoint recorded for both variants (data
capture and per-request metrics) and returns **promote**, **roll back** or **wait**, naming the
evidence. Every comparison has a significance test: a one-sided two-proportion z-test for rates
(4XX, 5XX, empty outputs: is the candidate worse by more than the allowed margin?), a bootstrap
for the rest (ModelLatency p50 and p99 ratios, agreement with the champion on the same inputs,
ROUGE-L against references when requests carry them). Latency is compared on per-request samples
where the endpoint records them (locally), and on the percentiles per period where only those exist
(CloudWatch): the bootstrap then resamples periods. Not enough evidence is a wait; a wait that
outlasts the maximum period is a rollback.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["ok", "worse", "unknown"]
# (inputs, outputs) -> per record (unfaithful, toxic)
Quality = Callable[[Sequence[str], Sequence[str]], tuple[list[bool], list[bool]]]


class RolloutConfig(BaseModel):
    """When a candidate has shown enough, and what counts as worse (the `rollout` section of a pipeline config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_duration_s: int = Field(30, ge=0, description="the shortest period a decision may rest on (a laptop's "
                                                      "default: production configs set hours)")
    min_requests: int = Field(30, ge=1, description="requests of each variant (pairs, for a shadow) before deciding")
    max_duration_s: int = Field(86_400, gt=0, description="after this long without enough evidence: roll back")
    error_rate_margin: float = Field(0.01, ge=0, description="how much higher the candidate's 4XX or 5XX rate may "
                                                            "be (absolute)")
    empty_rate_margin: float = Field(0.02, ge=0)
    latency_ratio_max: float = Field(1.5, gt=0, description="candidate over champion ModelLatency, p50 and p99")
    min_agreement: float = Field(0.0, ge=0, le=1, description="share of shadow pairs with the champion's output "
                                                             "(0: reported, not required)")
    rouge_margin: float = Field(0.02, ge=0, description="how much lower the candidate's ROUGE-L may be")
    unfaithful_rate_margin: float = Field(0.05, ge=0, description="how much higher the candidate's share of "
                                                                 "unfaithful outputs may be (absolute)")
    toxic_rate_margin: float = Field(0.0, ge=0, description="how much higher its share of toxic outputs may be")
    bad_rating_margin: float = Field(0.05, ge=0, description="how much higher the share of its answers people rated "
                                                             "bad (`genaiops feedback`) may be (absolute)")
    quality_sample: int = Field(200, ge=0, description="answered requests per variant scored for faithfulness and "
                                                       "toxicity (the newest); 0: not judged")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="significance level of every test")
    resamples: int = Field(1000, ge=100)
    seed: int = 0


class VariantEvidence(BaseModel):
    """What one variant recorded since the rollout started."""

    model_config = ConfigDict(frozen=True)
    name: str
    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    latencies_us: list[float] = Field(default_factory=list, description="ModelLatency per request, where recorded")
    latency_percentiles_us: dict[str, list[float]] = Field(
        default_factory=dict, description="ModelLatency percentiles per period (p50, p99), where only those exist")
    outputs: dict[str, str] = Field(default_factory=dict, description="event id -> output text (answered requests)")
    inputs: dict[str, str] = Field(default_factory=dict, description="event id -> the input it answered")
    inference_ids: dict[str, str] = Field(default_factory=dict, description="event id -> the request's inference id, "
                                                                           "which names its reference when it has one")
    unreadable: int = Field(0, description="captured records of the endpoint that could not be read (skipped)")


class Evidence(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    champion: float | None
    candidate: float | None
    verdict: Verdict
    test: str

    def describe(self) -> str:
        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4g}"

        return f"{self.name}: champion {show(self.champion)}, candidate {show(self.candidate)} — {self.verdict} ({self.test})"


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)
    action: Literal["promote", "rollback", "wait"]
    reason: str
    evidence: list[Evidence]
    requests: int
    elapsed_s: float


def decide(champion: VariantEvidence, candidate: VariantEvidence, *, started: datetime, now: datetime,
           config: RolloutConfig, paired: bool, references: Mapping[str, str] | None = None,
           rouge: Callable[[str, str], float] | None = None, latency_comparable: bool = True,
           quality: Quality | None = None, ratings: Mapping[str, Sequence[str]] | None = None,
           cost: tuple[Callable[[Sequence[str]], list[int]], float] | None = None) -> Decision:
    """Promote, roll back or wait. `paired`: the candidate answered copies of the champion's requests (a shadow).

    `latency_comparable` is False for a shadow that shares its machine with production (the local endpoint
    stops it while production works, so its ModelLatency counts the stops): latency is then shown, not judged.
    `quality` flags each (input, output) as unfaithful and as toxic (steps.scoring), compared like error rates;
    `ratings` are people's judgements (good, bad) by inference id, counted for the variant that gave the answer;
    `cost` (a token counter, the instance's price per hour) shows each variant's cost per 1,000 output tokens."""
    rng = random.Random(config.seed)
    evidence = [
        _rate("5XX rate", champion.errors_5xx, champion.requests, candidate.errors_5xx, candidate.requests,
              config.error_rate_margin, config.alpha),
        _rate("4XX rate", champion.errors_4xx, champion.requests, candidate.errors_4xx, candidate.requests,
              config.error_rate_margin, config.alpha),
        _rate("empty-output rate", _empty(champion), len(champion.outputs), _empty(candidate), len(candidate.outputs),
              config.empty_rate_margin, config.alpha),
        _latency("ModelLatency p50", champion, candidate, 50, config, rng),
        _latency("ModelLatency p99", champion, candidate, 99, config, rng),
    ]
    if not latency_comparable:
        evidence = [e.model_copy(update={"verdict": "unknown", "test": "not judged: the shadow shares the machine and "
                                         "steps aside while production works"}) if e.name.startswith("ModelLatency")
                    else e for e in evidence]
    pairs = sorted(set(champion.outputs) & set(candidate.outputs)) if paired else []
    if paired:
        evidence.append(_agreement(pairs, champion, candidate, config, rng))
    if quality is not None and config.quality_sample:
        evidence += _quality(champion, candidate, quality, config)
    if ratings is not None:
        evidence.append(_ratings(champion, candidate, ratings, paired, config))
    if cost is not None:
        evidence.append(_cost(champion, candidate, *cost))
    if references and rouge is not None:
        evidence.append(_rouge(champion, candidate, references, rouge, pairs if paired else None, config, rng))
    elapsed = (now - started).total_seconds()
    seen = len(pairs) if paired else min(champion.requests, candidate.requests)
    worse = [e for e in evidence if e.verdict == "worse"]
    if worse:
        return Decision(action="rollback", reason="; ".join(e.describe() for e in worse), evidence=evidence,
                        requests=seen, elapsed_s=elapsed)
    short = []
    if elapsed < config.min_duration_s:
        short.append(f"{elapsed:.0f} s of {config.min_duration_s} s")
    if seen < config.min_requests:
        short.append(f"{seen} of {config.min_requests} {'pairs' if paired else 'requests per variant'}")
    if short:
        if elapsed >= config.max_duration_s:
            return Decision(action="rollback", reason=f"not enough evidence within {config.max_duration_s} s: "
                                                      + ", ".join(short), evidence=evidence, requests=seen,
                            elapsed_s=elapsed)
        return Decision(action="wait", reason="not enough evidence yet: " + ", ".join(short), evidence=evidence,
                        requests=seen, elapsed_s=elapsed)
    judged = "; ".join(e.describe() for e in evidence if e.verdict == "ok")
    return Decision(action="promote", reason=f"no evidence against the candidate after {seen} "
                                             f"{'pairs' if paired else 'requests per variant'} and {elapsed:.0f} s: "
                                             f"{judged}",
                    evidence=evidence, requests=seen, elapsed_s=elapsed)


def _empty(variant: VariantEvidence) -> int:
    return sum(1 for text in variant.outputs.values() if not text.strip())


def _rate(name: str, bad_a: int, n_a: int, bad_b: int, n_b: int, margin: float, alpha: float) -> Evidence:
    """One-sided two-proportion z-test of H1: rate_b > rate_a + margin."""
    if n_a == 0 or n_b == 0:
        return Evidence(name=name, champion=bad_a / n_a if n_a else None, candidate=bad_b / n_b if n_b else None,
                        verdict="unknown", test="no requests yet")
    p_a, p_b = bad_a / n_a, bad_b / n_b
    pooled = (bad_a + bad_b) / (n_a + n_b)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_a + 1 / n_b))
    z = (p_b - p_a - margin) / se
    p_value = 0.5 * math.erfc(z / math.sqrt(2))
    verdict: Verdict = "worse" if p_value < alpha else "ok"
    return Evidence(name=name, champion=p_a, candidate=p_b, verdict=verdict,
                    test=f"two-proportion z-test, margin {margin:g}: p = {p_value:.3g}")


def _quality(champion: VariantEvidence, candidate: VariantEvidence, quality: Quality,
             config: RolloutConfig) -> list[Evidence]:
    """Unfaithful- and toxic-output rates of each variant's newest scored answers, by the same z-test as errors."""
    counts = []
    for variant in (champion, candidate):
        events = [e for e in variant.outputs if e in variant.inputs][-config.quality_sample:]
        unfaithful, toxic = quality([variant.inputs[e] for e in events], [variant.outputs[e] for e in events]) \
            if events else ([], [])
        counts.append((sum(unfaithful), sum(toxic), len(events)))
    (ch_u, ch_t, ch_n), (ca_u, ca_t, ca_n) = counts
    return [_rate("unfaithful-output rate", ch_u, ch_n, ca_u, ca_n, config.unfaithful_rate_margin, config.alpha),
            _rate("toxic-output rate", ch_t, ch_n, ca_t, ca_n, config.toxic_rate_margin, config.alpha)]


def _ratings(champion: VariantEvidence, candidate: VariantEvidence, ratings: Mapping[str, Sequence[str]],
             paired: bool, config: RolloutConfig) -> Evidence:
    """The share of each variant's rated answers that people rated bad, by the same z-test as errors."""
    if paired:
        return Evidence(name="bad-rating rate", champion=None, candidate=None, verdict="unknown",
                        test="a shadow's answers reach no one, so no one rates them")
    counts = []
    for variant in (champion, candidate):
        given = [rating for inference in set(variant.inference_ids.values()) for rating in ratings.get(inference, ())]
        counts.append((sum(rating == "bad" for rating in given), len(given)))
    (ch_bad, ch_n), (ca_bad, ca_n) = counts
    found = _rate("bad-rating rate", ch_bad, ch_n, ca_bad, ca_n, config.bad_rating_margin, config.alpha)
    return found if ch_n and ca_n else found.model_copy(update={"test": "no rated answers of both variants yet"})


def tokens_per_s(variant: VariantEvidence, count_tokens: Callable[[Sequence[str]], list[int]]) -> float | None:
    """Output tokens per second of model time: the mean captured answer's tokens over the mean ModelLatency (per
    request where recorded, else the median of the periods' p50)."""
    outputs = list(variant.outputs.values())
    if not outputs:
        return None
    if variant.latencies_us:
        latency_s = statistics.fmean(variant.latencies_us) / 1e6
    elif variant.latency_percentiles_us.get("p50"):
        latency_s = statistics.median(variant.latency_percentiles_us["p50"]) / 1e6
    else:
        return None
    tokens = statistics.fmean(count_tokens(outputs))
    return tokens / latency_s if latency_s > 0 and tokens > 0 else None


def _cost(champion: VariantEvidence, candidate: VariantEvidence, count_tokens: Callable[[Sequence[str]], list[int]],
          price: float) -> Evidence:
    from contracts.instances import cost_per_1k_tokens

    def of(variant: VariantEvidence) -> float | None:
        speed = tokens_per_s(variant, count_tokens)
        return None if speed is None else cost_per_1k_tokens(price, speed)

    return Evidence(name="cost per 1k output tokens (USD)", champion=of(champion), candidate=of(candidate),
                    verdict="unknown", test=f"shown, not judged: ${price:g} an instance-hour at the measured output "
                                            "tokens per second of model time (one request at a time)")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _latency(name: str, champion: VariantEvidence, candidate: VariantEvidence, q: int, config: RolloutConfig,
             rng: random.Random) -> Evidence:
    """Bootstrap of the ratio of percentiles; worse when even its lower bound exceeds the allowed ratio. On
    per-request samples where both variants have them; else on each period's percentile (CloudWatch's): the
    ratio of their medians, resampling periods."""
    a, b = champion.latencies_us, candidate.latencies_us
    if (len(a) < 2 or len(b) < 2) and f"p{q}" in champion.latency_percentiles_us:
        return _period_latency(name, champion.latency_percentiles_us.get(f"p{q}", []),
                               candidate.latency_percentiles_us.get(f"p{q}", []), config, rng)
    if len(a) < 2 or len(b) < 2:
        return Evidence(name=name, champion=_percentile(a, q) if a else None, candidate=_percentile(b, q) if b else None,
                        verdict="unknown", test="too few requests")
    ratios = sorted(_percentile([rng.choice(b) for _ in b], q) / max(_percentile([rng.choice(a) for _ in a], q), 1e-9)
                    for _ in range(config.resamples))
    low = ratios[int(config.alpha * (len(ratios) - 1))]
    verdict: Verdict = "worse" if low > config.latency_ratio_max else "ok"
    return Evidence(name=name, champion=_percentile(a, q), candidate=_percentile(b, q), verdict=verdict,
                    test=f"bootstrap ratio, {100 * (1 - config.alpha):.0f}% lower bound {low:.3g} vs "
                         f"{config.latency_ratio_max:g}")


def _period_latency(name: str, a: Sequence[float], b: Sequence[float], config: RolloutConfig,
                    rng: random.Random) -> Evidence:
    if len(a) < 2 or len(b) < 2:
        return Evidence(name=name, champion=statistics.median(a) if a else None,
                        candidate=statistics.median(b) if b else None, verdict="unknown",
                        test="too few periods of CloudWatch percentiles")
    ratios = sorted(statistics.median([rng.choice(b) for _ in b]) / max(statistics.median([rng.choice(a) for _ in a]),
                                                                         1e-9) for _ in range(config.resamples))
    low = ratios[int(config.alpha * (len(ratios) - 1))]
    verdict: Verdict = "worse" if low > config.latency_ratio_max else "ok"
    return Evidence(name=name, champion=statistics.median(a), candidate=statistics.median(b), verdict=verdict,
                    test=f"bootstrap over {min(len(a), len(b))} periods of the ratio of median percentiles, "
                         f"{100 * (1 - config.alpha):.0f}% lower bound {low:.3g} vs {config.latency_ratio_max:g}")


def _agreement(pairs: Sequence[str], champion: VariantEvidence, candidate: VariantEvidence, config: RolloutConfig,
               rng: random.Random) -> Evidence:
    if not pairs:
        return Evidence(name="agreement", champion=None, candidate=None, verdict="unknown", test="no paired requests")
    same = [float(" ".join(champion.outputs[e].split()) == " ".join(candidate.outputs[e].split())) for e in pairs]
    rate = statistics.fmean(same)
    means = sorted(statistics.fmean(rng.choice(same) for _ in same) for _ in range(config.resamples))
    high = means[int((1 - config.alpha) * (len(means) - 1))]
    verdict: Verdict = "worse" if config.min_agreement and high < config.min_agreement else "ok"
    return Evidence(name="agreement", champion=1.0, candidate=rate, verdict=verdict,
                    test=f"bootstrap, upper bound {high:.3g} vs {config.min_agreement:g} over {len(pairs)} pairs")


def _rouge(champion: VariantEvidence, candidate: VariantEvidence, references: Mapping[str, str],
           rouge: Callable[[str, str], float], pairs: Sequence[str] | None, config: RolloutConfig,
           rng: random.Random) -> Evidence:
    if pairs is not None:  # paired: the same inputs, a paired bootstrap of the difference
        events = [e for e in pairs if e in references]
        if len(events) < 2:
            return Evidence(name="ROUGE-L", champion=None, candidate=None, verdict="unknown", test="too few references")
        deltas = [rouge(candidate.outputs[e], references[e]) - rouge(champion.outputs[e], references[e]) for e in events]
        a = statistics.fmean(rouge(champion.outputs[e], references[e]) for e in events)
        b = a + statistics.fmean(deltas)
        means = sorted(statistics.fmean(rng.choice(deltas) for _ in deltas) for _ in range(config.resamples))
    else:  # A/B: different requests, an unpaired bootstrap of the difference of means
        mine = [rouge(candidate.outputs[e], references[e]) for e in candidate.outputs if e in references]
        theirs = [rouge(champion.outputs[e], references[e]) for e in champion.outputs if e in references]
        if len(mine) < 2 or len(theirs) < 2:
            return Evidence(name="ROUGE-L", champion=None, candidate=None, verdict="unknown", test="too few references")
        a, b = statistics.fmean(theirs), statistics.fmean(mine)
        means = sorted(statistics.fmean(rng.choice(mine) for _ in mine) - statistics.fmean(rng.choice(theirs) for _ in theirs)
                       for _ in range(config.resamples))
    high = means[int((1 - config.alpha) * (len(means) - 1))]
    verdict: Verdict = "worse" if high < -config.rouge_margin else "ok"
    return Evidence(name="ROUGE-L", champion=a, candidate=b, verdict=verdict,
                    test=f"bootstrap of the difference, upper bound {high:.3g} vs -{config.rouge_margin:g}")
