"""The committed bad-data files are exactly what their cases describe."""

from __future__ import annotations

from tests.data.bad_corpus import CASES, FOLDER, build_all


def test_committed_corpus_matches_its_generator() -> None:
    built = build_all()
    assert sorted(built) == sorted(p.name for p in FOLDER.iterdir())
    for name, data in built.items():
        assert (FOLDER / name).read_bytes() == data, f"{name} drifted: run python -m tests.data.bad_corpus"


def test_corpus_covers_at_least_ten_kinds() -> None:
    assert len(CASES) >= 10
    assert len({c.expected for c in CASES}) == len(CASES)
