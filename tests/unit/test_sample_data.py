"""The sample generator: deterministic, varied, and the shipped file is its output."""

from __future__ import annotations

from collections import Counter

from steps.sample_data import SAMPLE_SIZE, generate_records, sample_path


def test_same_seed_same_records_other_seed_other_records() -> None:
    assert list(generate_records(50, seed=1)) == list(generate_records(50, seed=1))
    assert list(generate_records(50, seed=1)) != list(generate_records(50, seed=2))


def test_shipped_sample_is_the_generator_output() -> None:
    shipped = sample_path().read_text(encoding="utf-8").splitlines()
    import json

    assert [json.loads(line) for line in shipped] == list(generate_records(SAMPLE_SIZE))


def test_sample_is_varied_enough_not_to_be_memorised() -> None:
    records = list(generate_records(SAMPLE_SIZE))
    topics = Counter(r["topic"] for r in records)
    assert len(topics) >= 15
    assert max(topics.values()) < 0.12 * len(records)
    assert len({r["summary"] for r in records}) == len(records)
    assert len({r["dialogue"] for r in records}) == len(records)
    lengths = sorted(len(r["dialogue"]) for r in records)
    assert lengths[-1] > 2 * lengths[0]
    # The same scenario is summarised in several phrasings.
    openings = Counter(" ".join(r["summary"].split()[1:3]) for r in records if r["topic"] == "dinner")
    assert len(openings) >= 3


def test_dialogues_have_two_speakers_and_summaries_mostly_name_them() -> None:
    named = 0
    records = list(generate_records(200))
    for record in records:
        speakers = {line.split(":", 1)[0] for line in record["dialogue"].splitlines()}
        assert len(speakers) == 2, record
        named += any(name in record["summary"] for name in speakers)
    assert named >= 0.9 * len(records)
