"""Scores and the gate decision."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from steps.evaluate import Gate, decide, score


def test_identical_outputs_score_one_and_disjoint_outputs_score_zero() -> None:
    refs = ["Ann moves the meeting to Friday.", "Bob lends Cleo his drill."]
    perfect = score(refs, refs)
    assert perfect["rougeL"] == pytest.approx(1.0) and perfect["rouge2"] == pytest.approx(1.0)
    assert perfect["empty_rate"] == 0 and perfect["length_ratio"] == pytest.approx(1.0)
    nothing = score(["zebra quantum", ""], refs)
    assert nothing["rougeL"] == 0 and nothing["empty_rate"] == 0.5


def test_partial_overlap_scores_between() -> None:
    value = score(["Ann moves the meeting."], ["Ann moves the meeting to Friday."])["rougeL"]
    assert 0.5 < value < 1.0


def test_score_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="as many predictions as references"):
        score(["a"], ["a", "b"])


def test_gates_pass_and_fail_with_their_numbers() -> None:
    gates = [Gate(metric="rougeL", min_delta_vs_base=0.05), Gate(metric="empty_rate", max=0.1),
             Gate(metric="rouge1", min=0.3)]
    good = decide({"rougeL": 0.40, "empty_rate": 0.0, "rouge1": 0.5}, {"rougeL": 0.20}, gates)
    assert good.passed and len(good.checks) == 3
    bad = decide({"rougeL": 0.22, "empty_rate": 0.25, "rouge1": 0.5}, {"rougeL": 0.20}, gates)
    assert not bad.passed
    assert [c.metric for c in bad.failures] == ["rougeL", "empty_rate"]
    assert "0.0200" in bad.summary() and "0.2500" in bad.summary()


def test_delta_on_a_lower_is_better_metric_counts_a_drop_as_gain() -> None:
    gate = Gate(metric="empty_rate", min_delta_vs_base=0.1)
    assert decide({"empty_rate": 0.0}, {"empty_rate": 0.5}, [gate]).passed
    assert not decide({"empty_rate": 0.5}, {"empty_rate": 0.5}, [gate]).passed


def test_a_gate_needs_a_known_metric_and_a_rule() -> None:
    with pytest.raises(ValidationError, match="unknown metric"):
        Gate(metric="bleurt", min=0.1)
    with pytest.raises(ValidationError, match="needs at least one"):
        Gate(metric="rougeL")
