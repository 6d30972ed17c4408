"""Feedback: what a piece of it may say, how it is kept, how corrections join the next dataset, and how ratings
count in the rollout decision."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from serving.rollout import RolloutConfig, VariantEvidence, decide
from steps.artifacts import LocalStore
from steps.data import DataConfig, prepare_dataset
from steps.feedback import Correction, Feedback, FeedbackStore, check_feedback, feedback_id, source_hash


def count_words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_each_field_of_bad_feedback_is_named() -> None:
    assert check_feedback("dialogue-summarizer", "req-1", "bad", "Hana asks to unblock her card.") == []
    assert check_feedback("dialogue-summarizer", "req-1", "good", None) == []
    problems = check_feedback("no_underscores", "", "meh", None)
    assert [p.split(":")[0] for p in problems] == ["endpoint", "inference_id", "rating"]
    assert "a correction goes with rating bad" in check_feedback("e", "i", "good", "better text")[0]
    assert "personal data (email)" in check_feedback("e", "i", "bad", "Write to hana@example.com")[0]
    assert "give the text" in check_feedback("e", "i", "bad", "   ")[0]
    assert "at most" in check_feedback("e", "i", "bad", "x" * 20_001)[0]
    assert check_feedback("e", "x" * 65, "bad", None)[0].startswith("inference_id")


def test_a_person_judging_again_replaces_their_judgement_and_two_people_both_count(tmp_path: Path) -> None:
    store = FeedbackStore(LocalStore(tmp_path))
    at = datetime(2026, 12, 1, tzinfo=UTC)
    first = Feedback(endpoint="ep", inference_id="req-1", rating="good", by="carol", at=at.isoformat())
    store.record(first)
    store.record(first.model_copy(update={"rating": "bad", "at": (at + timedelta(minutes=1)).isoformat()}))
    store.record(first.model_copy(update={"by": "dan"}))
    entries = store.entries("ep")
    assert sorted((e.by, e.rating) for e in entries) == [("carol", "bad"), ("dan", "good")]
    assert store.entries("ep", since=at + timedelta(seconds=30))[0].by == "carol"
    assert store.entries("other") == []
    (tmp_path / "feedback" / "ep" / "junk.json").write_text("{not json")
    (tmp_path / "feedback" / "ep" / "bad-time.json").write_text(
        first.model_dump_json().replace(first.at, "last Tuesday"))
    assert len(store.entries("ep", since=at)) == 2  # an unreadable object is skipped, not raised


def _records(n: int) -> list[dict[str, str]]:
    from steps.sample_data import generate_records

    return list(generate_records(n, seed=3))


def test_corrections_replace_the_target_of_a_known_input_and_add_new_inputs_to_training(tmp_path: Path) -> None:
    records = _records(80)
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = DataConfig(source=str(source))
    store = LocalStore(tmp_path / "store")
    plain = prepare_dataset(config, store, count_words)
    assert plain.feedback == []

    known = records[5]
    split = next(name for name, rows in plain.splits.items() for e in rows if known["dialogue"] in e.prompt)
    new_input = "Lena: Can you move my dentist visit to Friday? Omar: Yes, Friday at nine works."
    fixes = [Correction(feedback_id=feedback_id("ep", "a", "carol"), input=known["dialogue"].upper(),
                        target="The corrected summary of a known dialogue.", endpoint="ep", inference_id="a"),
             Correction(feedback_id=feedback_id("ep", "b", "carol"), input=new_input,
                        target="Omar moves Lena's dentist visit to Friday at nine.", endpoint="ep", inference_id="b")]
    corrected = prepare_dataset(config, store, count_words, fixes)
    assert corrected.hash != plain.hash and corrected.source_hash == source_hash(source.read_bytes(), fixes)
    assert corrected.source_hash != plain.source_hash
    assert corrected.feedback == sorted(f.feedback_id for f in fixes)
    assert sum(corrected.counts.values()) == sum(plain.counts.values()) + 1  # the known input is not repeated
    [replaced] = [e for e in corrected.splits[split] if known["dialogue"] in e.prompt]
    assert replaced.target == "The corrected summary of a known dialogue."  # in the split its input was in
    [added] = [e for e in corrected.splits["train"] if new_input in e.prompt]
    assert added.id == f"feedback-{fixes[1].feedback_id}"
    manifest = json.loads(store.get(f"datasets/{corrected.hash}/manifest.json"))
    assert manifest["feedback"] == corrected.feedback
    again = prepare_dataset(config, store, count_words, list(reversed(fixes)))  # order does not matter
    assert again.reused and again.hash == corrected.hash and again.feedback == corrected.feedback


def test_a_correction_meets_the_data_contract_like_any_record(tmp_path: Path) -> None:
    from steps.data import DataValidationError

    records = _records(80)
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = DataConfig(source=str(source), contract={"max_target_tokens": 40})
    long = Correction(feedback_id="f" * 16, input="Ana: Is the shop open? Ben: Until six.", target="word " * 60,
                      endpoint="ep", inference_id="x")
    with pytest.raises(DataValidationError) as raised:
        prepare_dataset(config, LocalStore(tmp_path / "store"), count_words, [long])
    assert "81" in str(raised.value)  # the added record, numbered after the source's 80


def _variant(name: str, ids: list[str]) -> VariantEvidence:
    return VariantEvidence(name=name, requests=len(ids), outputs={i: "ok" for i in ids},
                           inference_ids={i: f"req-{i}" for i in ids})


def test_answers_people_rate_bad_roll_the_candidate_back_and_a_shadow_is_not_rated() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    champion, candidate = _variant("v1", [f"a{i}" for i in range(60)]), _variant("v2", [f"b{i}" for i in range(60)])
    ratings = {f"req-a{i}": ["good"] for i in range(40)} | {f"req-b{i}": ["bad"] for i in range(30)} \
        | {f"req-b{i}": ["good"] for i in range(30, 40)}
    config = RolloutConfig(min_duration_s=0, min_requests=10)
    decision = decide(champion, candidate, started=start, now=start + timedelta(minutes=5), config=config,
                      paired=False, ratings=ratings)
    assert decision.action == "rollback" and "bad-rating rate" in decision.reason
    [rated] = [e for e in decision.evidence if e.name == "bad-rating rate"]
    assert (rated.champion, rated.candidate) == (0.0, 0.75)
    fair = {k: ["good"] for k in ratings}
    assert decide(champion, candidate, started=start, now=start + timedelta(minutes=5), config=config,
                  paired=False, ratings=fair).action == "promote"
    shadowed = decide(champion, candidate, started=start, now=start + timedelta(minutes=5), config=config,
                      paired=True, ratings=ratings)
    [unrated] = [e for e in shadowed.evidence if e.name == "bad-rating rate"]
    assert unrated.verdict == "unknown" and "reach no one" in unrated.test
