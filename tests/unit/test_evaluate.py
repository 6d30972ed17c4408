"""Scores and the gate decision: every gate kind, and confidence intervals that refuse noise."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from steps.evaluate import (
    EvalResult,
    Gate,
    ModelScores,
    contains_answer,
    decide,
    general_skills,
    score,
)

REFS = [f"Person {i} moves the meeting to day {i % 7} at {i % 12} pm." for i in range(40)]


def scores(name: str, values: dict[str, list[float]], predictions: list[str] | None = None) -> ModelScores:
    metrics = {k: sum(v) / len(v) for k, v in values.items()}
    metrics.setdefault("bleu", 0.0)
    return ModelScores(name=name, metrics=metrics, per_sample=values, predictions=predictions or [""] * 40)


def result(candidate: dict[str, list[float]], base: dict[str, list[float]],
           champion: dict[str, list[float]] | None = None) -> EvalResult:
    return EvalResult(n_samples=40, references=REFS, prompts=REFS, candidate=scores("candidate", candidate),
                      base=scores("base", base), champion=scores("champion", champion) if champion else None,
                      champion_version="3" if champion else None)


def noisy(mean: float, spread: float, seed: int, n: int = 40) -> list[float]:
    rng = random.Random(seed)
    return [min(1.0, max(0.0, mean + rng.uniform(-spread, spread))) for _ in range(n)]


def test_identical_outputs_score_one_and_disjoint_outputs_score_zero() -> None:
    perfect, _ = score(REFS, REFS)
    assert perfect["rougeL"] == pytest.approx(1.0) and perfect["bleu"] == pytest.approx(1.0)
    assert perfect["exact_match"] == 1.0 and perfect["empty_rate"] == 0 and perfect["length_ratio"] == 1.0
    nothing, per_sample = score(["zebra quantum"] * 39 + [""], REFS)
    assert nothing["rougeL"] == 0 and nothing["bleu"] < 0.01 and nothing["empty_rate"] == 1 / 40
    assert len(per_sample["rougeL"]) == 40


def test_blocklist_counts_whole_words_case_insensitively() -> None:
    metrics, per_sample = score(["You IDIOT.", "The idiotic plan.", "fine"], ["a", "b", "c"], blocklist=["idiot"])
    assert per_sample["blocklist_rate"] == [1.0, 0.0, 0.0] and metrics["blocklist_rate"] == pytest.approx(1 / 3)


def test_general_answers_count_when_the_reference_appears() -> None:
    assert contains_answer("The capital is Paris.", "Paris")
    assert contains_answer("apple, mango, pear", "apple, mango, pear")
    assert not contains_answer("Parisian food", "Paris") and not contains_answer("", "7")
    items = general_skills()
    assert len(items) == 36 and all(i.prompt.endswith((".", "?")) for i in items)
    assert [i.target for i in items[:3]] == ["42", "Paris", "RIVER"]  # skills interleaved: any prefix is balanced


def test_absolute_bounds() -> None:
    res = result({"empty_rate": [0.0] * 36 + [1.0] * 4}, {"empty_rate": [0.0] * 40})
    report = decide(res, [Gate(metric="empty_rate", max=0.05)])
    assert not report.passed and report.failures[0].value == pytest.approx(0.1)
    assert decide(res, [Gate(metric="empty_rate", max=0.1)]).passed


def test_a_clear_gain_over_base_passes_and_noise_does_not() -> None:
    base = noisy(0.2, 0.1, seed=1)
    clear = decide(result({"rougeL": noisy(0.45, 0.1, seed=2)}, {"rougeL": base}),
                   [Gate(metric="rougeL", min_delta_vs_base=0.05)])
    assert clear.passed and clear.checks[0].ci_low > 0.05
    # A candidate whose mean is 0.06 higher only because a few samples swing widely: the interval straddles 0.05.
    swingy = [b + (0.9 if i % 8 == 0 else -0.06) for i, b in enumerate(base)]
    noise = decide(result({"rougeL": swingy}, {"rougeL": base}), [Gate(metric="rougeL", min_delta_vs_base=0.05)])
    check = noise.checks[0]
    assert check.value > 0.05 and check.ci_low < 0.05 and not noise.passed


def test_must_beat_champion_is_skipped_without_one_and_refuses_a_tie() -> None:
    gate = Gate(metric="rougeL", min_delta_vs_champion=0.0)
    alone = decide(result({"rougeL": noisy(0.4, 0.1, 3)}, {"rougeL": noisy(0.2, 0.1, 4)}), [gate])
    assert alone.passed and alone.checks[0].skipped
    champion = noisy(0.4, 0.15, seed=5)
    within_noise = [c + random.Random(6 + i).uniform(-0.03, 0.035) for i, c in enumerate(champion)]
    tie = decide(result({"rougeL": within_noise}, {"rougeL": noisy(0.2, 0.1, 4)}, {"rougeL": champion}), [gate])
    check = tie.checks[0]
    assert check.value > 0 and check.ci_low < 0 and not tie.passed
    better = decide(result({"rougeL": [c + 0.1 for c in champion]}, {"rougeL": noisy(0.2, 0.1, 4)},
                           {"rougeL": champion}), [gate])
    assert better.passed


def test_forgetting_fails_on_a_real_drop_on_the_general_set() -> None:
    base = [1.0] * 20 + [0.0] * 16
    forgot = [1.0] * 8 + [0.0] * 28
    gate = Gate(metric="general.accuracy", max_drop=0.15)
    report = decide(result({"general.accuracy": forgot}, {"general.accuracy": base}), [gate])
    assert not report.passed and report.checks[0].value == pytest.approx(12 / 36)
    kept = [1.0] * 18 + [0.0] * 18
    assert decide(result({"general.accuracy": kept}, {"general.accuracy": base}), [gate]).passed


def test_lower_is_better_metrics_count_a_fall_as_gain() -> None:
    gate = Gate(metric="empty_rate", min_delta_vs_base=0.1)
    fewer = decide(result({"empty_rate": [0.0] * 40}, {"empty_rate": [1.0] * 20 + [0.0] * 20}), [gate])
    assert fewer.passed and fewer.checks[0].value == pytest.approx(0.5)


def test_gates_need_a_known_metric_a_rule_and_a_direction() -> None:
    with pytest.raises(ValidationError, match="unknown metric"):
        Gate(metric="bleurt", min=0.1)
    with pytest.raises(ValidationError, match="needs one of"):
        Gate(metric="rougeL")
    with pytest.raises(ValidationError, match="no better direction"):
        Gate(metric="length_ratio", min_delta_vs_base=0.1)
    assert Gate(metric="length_ratio", direction="lower", max_drop=0.2).better == "lower"


def test_a_gate_on_an_unmeasured_metric_is_an_error() -> None:
    with pytest.raises(ValueError, match="general_samples"):
        decide(result({"rougeL": [0.5] * 40}, {"rougeL": [0.5] * 40}), [Gate(metric="general.accuracy", max_drop=0.1)])


def test_unfaithful_rate_fails_only_when_worse_than_base_beyond_noise() -> None:
    gate = [Gate(metric="unfaithful_rate", max_worse_vs_base=0.0)]
    base = [float(i % 4 == 0) for i in range(40)]  # a quarter of the base model's outputs are unfaithful
    much_worse = decide(result({"unfaithful_rate": [float(i % 4 != 3) for i in range(40)]},
                               {"unfaithful_rate": base}), gate)
    [check] = much_worse.checks
    assert not much_worse.passed and check.kind == "max_worse"
    assert check.value == pytest.approx(0.5) and check.ci_low is not None and check.ci_low > 0
    # One more flagged output out of 40 is noise, not a regression; fewer is better.
    slightly = [*base[:39], 1.0] if base[39] == 0 else [*base[:38], 1.0, 1.0]
    assert decide(result({"unfaithful_rate": slightly}, {"unfaithful_rate": base}), gate).passed
    assert decide(result({"unfaithful_rate": [0.0] * 40}, {"unfaithful_rate": base}), gate).passed


def test_default_gates_include_generation_quality() -> None:
    from steps.evaluate import EvaluateConfig

    gates = {(g.metric, g.max, g.max_worse_vs_base) for g in EvaluateConfig().gates}
    assert ("unfaithful_rate", None, 0.0) in gates and ("toxic_rate", 0.0, None) in gates
    assert ("unfaithful_rate", 0.2, None) in gates
    with pytest.raises(ValidationError, match=r"need evaluate\.quality"):
        EvaluateConfig(quality=False)
    assert EvaluateConfig(quality=False, gates=[Gate(metric="rougeL", min=0.1)]).gates


def test_the_gate_report_marks_flagged_outputs_and_their_spans() -> None:
    from steps.evaluate import EvaluateConfig, score_quality
    from steps.evaluate_report import to_html, to_markdown
    from steps.scoring import faithfulness

    source = "Hana: My card is blocked.\nMarcus: I removed the hold on Tuesday."
    outputs = ["Ines removed the hold on Friday.", "Marcus removed the hold on Tuesday."]
    per_sample, findings = score_quality([source] * 2, outputs, EvaluateConfig(),
                                         encoder=lambda texts: [[1.0, 0.0]] * len(texts))
    assert per_sample["unfaithful_rate"] == [1.0, 0.0] and per_sample["toxic_rate"] == [0.0, 0.0]
    assert [f.text for f in findings["unfaithful_rate"][0]] == [f.text for f in faithfulness([source], outputs[:1])[0].findings]
    metrics = {k: sum(v) / 2 for k, v in per_sample.items()}
    candidate = ModelScores(name="candidate", metrics={**metrics, "rougeL": 0.5}, per_sample=per_sample,
                            predictions=outputs, findings=findings)
    base = ModelScores(name="base", metrics={"unfaithful_rate": 0.0, "toxic_rate": 0.0, "rougeL": 0.4},
                       per_sample={"unfaithful_rate": [0.0, 0.0], "toxic_rate": [0.0, 0.0]}, predictions=["", ""])
    evaluated = EvalResult(n_samples=2, references=outputs[1:] * 2, prompts=[source] * 2, candidate=candidate, base=base)
    report = decide(evaluated, [Gate(metric="toxic_rate", max=0.0)])
    markdown = to_markdown(evaluated, report, dataset_hash="abc")
    assert "⚑ **Ines** removed the hold on **Friday**." in markdown and "'Ines' is not named in the source" in markdown
    assert "| unfaithful_rate | 0.5000 | 0.0000 | +0.5000 |" in markdown and "candidate 1, base 0" in markdown
    page = to_html(evaluated, report, dataset_hash="abc")
    assert "<mark>Ines</mark> removed the hold on <mark>Friday</mark>." in page and "<mark>" not in page.split("⚑")[0]
