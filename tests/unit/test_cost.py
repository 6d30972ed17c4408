"""The cost per 1,000 output tokens: from an instance's price per hour and a measured throughput, in the gate and in
the rollout evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.instances import HOURLY_PRICE_USD, cost_per_1k_tokens, hourly_price
from serving.deployer import DeploymentConfig
from serving.rollout import RolloutConfig, VariantEvidence, decide, tokens_per_s
from steps.evaluate import EvalResult, ModelScores, with_cost


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_the_price_comes_from_the_table_or_the_config_and_the_cost_from_the_throughput() -> None:
    assert cost_per_1k_tokens(3.6, 1.0) == pytest.approx(1.0)  # 1,000 s of an instance at $3.60 an hour
    assert cost_per_1k_tokens(3.6, 10.0) == pytest.approx(0.1)
    assert cost_per_1k_tokens(3.6, 0.0) is None
    assert DeploymentConfig(instance_type="ml.m5.xlarge").hourly_price == HOURLY_PRICE_USD["ml.m5.xlarge"]
    assert DeploymentConfig(instance_type="ml.m5.xlarge", hourly_price_usd=0.2).hourly_price == 0.2
    assert DeploymentConfig(instance_type="ml.x9.mystery").hourly_price is None
    assert hourly_price("ml.x9.mystery", 1.5) == 1.5


def _scores(name: str, speed: float | None) -> ModelScores:
    metrics = {"rougeL": 0.3, **({"output_tokens_per_s": speed} if speed is not None else {})}
    return ModelScores(name=name, metrics=metrics, per_sample={}, predictions=[])


def test_the_gate_prices_each_model_at_its_own_throughput() -> None:
    result = EvalResult(n_samples=1, references=["r"], prompts=["p"], candidate=_scores("candidate", 40.0),
                        base=_scores("base", 20.0), champion=_scores("champion", None))
    priced = with_cost(result, 1.44)
    assert priced.candidate.metrics["cost_per_1k_output_tokens"] == pytest.approx(0.01)
    assert priced.base.metrics["cost_per_1k_output_tokens"] == pytest.approx(0.02)  # half as fast: twice the cost
    assert priced.champion is not None and "cost_per_1k_output_tokens" not in priced.champion.metrics
    assert with_cost(result, None) == result  # no price known: no cost claimed


def test_the_rollout_shows_each_variants_cost_from_its_answers_and_model_latency() -> None:
    fast = VariantEvidence(name="v1", requests=2, outputs={"a": "one two three four", "b": "one two three four"},
                           latencies_us=[1_000_000.0, 1_000_000.0])  # 4 tokens in 1 s
    slow = VariantEvidence(name="v2", requests=2, outputs={"c": "one two", "d": "one two"},
                           latency_percentiles_us={"p50": [2_000_000.0, 2_000_000.0]})  # 2 tokens in 2 s
    assert tokens_per_s(fast, words) == pytest.approx(4.0) and tokens_per_s(slow, words) == pytest.approx(1.0)
    assert tokens_per_s(VariantEvidence(name="none"), words) is None
    start = datetime(2026, 12, 1, tzinfo=UTC)
    decision = decide(fast, slow, started=start, now=start + timedelta(hours=1), config=RolloutConfig(), paired=False,
                      cost=(words, 3.6))
    [cost] = [e for e in decision.evidence if e.name.startswith("cost per 1k")]
    assert (cost.champion, cost.candidate) == (pytest.approx(0.25), pytest.approx(1.0))
    assert cost.verdict == "unknown"  # shown, never the reason for a rollback
