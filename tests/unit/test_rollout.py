"""The rollout decision on live evidence: each comparison's test can say worse, and waits are bounded."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from serving.rollout import RolloutConfig, VariantEvidence, decide

START = datetime(2026, 11, 30, 12, tzinfo=UTC)
CONFIG = RolloutConfig(min_duration_s=600, min_requests=50, max_duration_s=3600)


def variant(name: str, n: int = 200, *, errors: int = 0, latency: float = 100_000, empty: int = 0,
            text: str = "a summary", seed: int = 0) -> VariantEvidence:
    rng = random.Random(seed)
    outputs = {f"e{i}": ("" if i < empty else text) for i in range(n)}
    return VariantEvidence(name=name, requests=n, errors_5xx=errors, latencies_us=[latency * rng.uniform(0.8, 1.2)
                                                                                    for _ in range(n)], outputs=outputs)


def test_a_candidate_like_its_champion_is_promoted_after_the_minimum_period() -> None:
    decision = decide(variant("v1"), variant("v2", seed=1), started=START, now=START + timedelta(seconds=900),
                      config=CONFIG, paired=True)
    assert decision.action == "promote" and decision.requests == 200, decision.reason
    assert {e.name for e in decision.evidence} >= {"5XX rate", "4XX rate", "empty-output rate", "ModelLatency p99",
                                                   "agreement"}


def test_too_little_evidence_waits_then_rolls_back_at_the_maximum() -> None:
    early = decide(variant("v1", 20), variant("v2", 20), started=START, now=START + timedelta(seconds=60),
                   config=CONFIG, paired=True)
    assert early.action == "wait" and "60 s of 600 s" in early.reason and "20 of 50 pairs" in early.reason
    late = decide(variant("v1", 20), variant("v2", 20), started=START, now=START + timedelta(seconds=4000),
                  config=CONFIG, paired=True)
    assert late.action == "rollback" and "not enough evidence within 3600 s" in late.reason


def test_errors_empty_outputs_slowness_and_worse_summaries_each_roll_back_and_are_named() -> None:
    later = START + timedelta(seconds=900)
    cases = {
        "5XX rate": variant("v2", errors=20),
        "empty-output rate": variant("v2", empty=30),
        "ModelLatency p99": variant("v2", latency=300_000),  # p50 with it
    }
    for name, candidate in cases.items():
        decision = decide(variant("v1"), candidate, started=START, now=later, config=CONFIG, paired=True)
        assert decision.action == "rollback" and name in decision.reason, (name, decision.reason)
    references = {f"e{i}": "a summary" for i in range(200)}
    rouge = decide(variant("v1"), variant("v2", text="something else"), started=START, now=later, config=CONFIG,
                   paired=True, references=references, rouge=lambda out, ref: float(out == ref))
    assert rouge.action == "rollback" and "ROUGE-L" in rouge.reason


def test_a_small_difference_within_the_margin_is_not_called_worse() -> None:
    decision = decide(variant("v1", 400, errors=2), variant("v2", 400, errors=4), started=START,
                      now=START + timedelta(seconds=900), config=CONFIG, paired=False)
    assert decision.action == "promote", decision.reason


def test_a_shadow_sharing_the_machine_is_not_judged_on_latency() -> None:
    slow = variant("v2", latency=300_000)
    decision = decide(variant("v1"), slow, started=START, now=START + timedelta(seconds=900), config=CONFIG,
                      paired=True, latency_comparable=False)
    assert decision.action == "promote", decision.reason
    assert {e.verdict for e in decision.evidence if e.name.startswith("ModelLatency")} == {"unknown"}


def test_a_challenger_naming_the_wrong_people_is_rolled_back_though_its_rouge_is_as_good() -> None:
    from steps.evaluate import rouge_l
    from steps.sample_data import generate_records
    from steps.scoring import quality_flags

    records = [r for r in generate_records(160, seed=77) if r["dialogue"].split(":")[0] in r["summary"]][:100]
    inputs = {f"e{i}": r["dialogue"] for i, r in enumerate(records)}
    references = {f"e{i}": r["summary"] for i, r in enumerate(records)}
    speaker = {f"e{i}": r["dialogue"].split(":")[0] for i, r in enumerate(records)}
    # The champion leaves the first speaker unnamed ("the caller"), the challenger names a stranger instead:
    # the same words lost, fewer added, so the challenger's ROUGE-L is no worse; only one of them is faithful.
    unnamed = {e: ref.replace(speaker[e], "the caller") for e, ref in references.items()}
    stranger = {e: ref.replace(speaker[e], "Bartholomew") for e, ref in references.items()}

    def evidence(name: str, outputs: dict[str, str]) -> VariantEvidence:
        return VariantEvidence(name=name, requests=len(outputs), outputs=outputs, inputs=inputs,
                               latencies_us=[100_000.0] * len(outputs))

    champion, challenger = evidence("v1", unnamed), evidence("v2", stranger)
    decision = decide(champion, challenger, started=START, now=START + timedelta(seconds=900), config=CONFIG,
                      paired=True, references=references, rouge=rouge_l, quality=quality_flags)
    shown = {e.name: e for e in decision.evidence}
    assert shown["ROUGE-L"].verdict == "ok" and shown["ROUGE-L"].candidate >= shown["ROUGE-L"].champion
    assert decision.action == "rollback", decision.reason
    assert "unfaithful-output rate" in decision.reason and "ROUGE-L" not in decision.reason
    assert shown["unfaithful-output rate"].candidate > 0.9 > 0.1 > shown["unfaithful-output rate"].champion
    assert shown["toxic-output rate"].verdict == "ok"
    # The faithful champion against itself: promoted, the quality evidence judged ok.
    same = decide(champion, evidence("v2", unnamed), started=START, now=START + timedelta(seconds=900),
                  config=CONFIG, paired=True, quality=quality_flags)
    assert same.action == "promote" and {e.verdict for e in same.evidence if "output rate" in e.name} == {"ok"}
