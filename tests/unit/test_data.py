"""The prepare stage: contract, stable splits, content hash, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.artifacts import LocalStore
from steps.data import (
    DataConfig,
    DataSourceError,
    DataValidationError,
    build_splits,
    content_hash,
    load_records,
    normalise,
    prepare_dataset,
    split_of,
    validate_records,
)


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_split_depends_on_content_only() -> None:
    text = "Ann: hi\nBob: hello"
    assert split_of(text, 0.1, 0.1) == split_of("Ann:  hi \nBob:   hello", 0.1, 0.1)
    shares = [split_of(f"record {i}", 0.1, 0.1) for i in range(5000)]
    assert 0.08 < shares.count("test") / 5000 < 0.12
    assert 0.08 < shares.count("validation") / 5000 < 0.12


def test_records_keep_their_split_when_data_is_reordered_or_grows(sample_jsonl: Path, tmp_path: Path) -> None:
    config = DataConfig(source=str(sample_jsonl))
    frame = load_records(sample_jsonl)
    before = {e.id: name for name, rows in build_splits(frame, config).items() for e in rows}
    lines = sample_jsonl.read_text().splitlines()[::-1]
    extra = json.dumps({"id": "new-1", "dialogue": "Zed: hi\nYan: bye", "summary": "They greet."})
    grown = tmp_path / "grown.jsonl"
    grown.write_text("\n".join([*lines, extra]) + "\n")
    after = {e.id: name for name, rows in build_splits(load_records(grown), config).items() for e in rows}
    assert {k: after[k] for k in before} == before


def test_content_hash_is_stable_and_sensitive(sample_jsonl: Path) -> None:
    config = DataConfig(source=str(sample_jsonl))
    splits = build_splits(load_records(sample_jsonl), config)
    assert content_hash(splits) == content_hash(build_splits(load_records(sample_jsonl), config))
    changed = build_splits(load_records(sample_jsonl), config.model_copy(update={"template": "S: {input}"}))
    assert content_hash(changed) != content_hash(splits)


def test_template_is_applied_to_every_prompt(sample_jsonl: Path) -> None:
    config = DataConfig(source=str(sample_jsonl), template="Dialogue:\n{input}\nTL;DR:")
    for rows in build_splits(load_records(sample_jsonl), config).values():
        for example in rows:
            assert example.prompt.startswith("Dialogue:\n") and example.prompt.endswith("\nTL;DR:")


def test_normalise_collapses_blanks_and_keeps_lines() -> None:
    assert normalise("  Ann:   hi  there \n\n Bob:\tyes ") == "Ann: hi there\nBob: yes"


def test_good_sample_passes_the_contract(sample_jsonl: Path) -> None:
    report = validate_records(load_records(sample_jsonl), DataConfig(), str(sample_jsonl))
    assert report.success, report.to_markdown()
    assert report.rows == 120


@pytest.mark.parametrize(
    ("mutate", "expectation", "rows"),
    [
        (lambda r: r[3].update(summary=None), "expect_column_values_to_not_be_null", [4]),
        (lambda r: r[5].update(dialogue=""), "expect_column_value_lengths_to_be_between", [6]),
        (lambda r: r[7].update(dialogue=r[2]["dialogue"]), "expect_column_values_to_be_unique", [3, 8]),
        (lambda r: r[9].update(summary=42), "expect_column_values_to_be_in_type_list", [10]),
        (lambda r: r[1].update(summary="x" * 2000), "expect_column_value_lengths_to_be_between", [2]),
    ],
)
def test_contract_names_the_failed_expectation_and_rows(
    sample_jsonl: Path, tmp_path: Path, mutate: object, expectation: str, rows: list[int]
) -> None:
    records = [json.loads(line) for line in sample_jsonl.read_text().splitlines()]
    mutate(records)  # type: ignore[operator]
    path = _write(tmp_path / "bad.jsonl", records)
    report = validate_records(load_records(path), DataConfig(), str(path))
    failed = {(c.expectation, tuple(c.rows)) for c in report.failed}
    assert (expectation, tuple(rows)) in failed, report.to_markdown()


def test_missing_column_and_too_few_rows_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "few.jsonl", [{"dialogue": f"A: {i}", "text": "t"} for i in range(5)])
    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(DataConfig(source=str(path)), LocalStore(tmp_path / "store"))
    failed = {c.expectation for c in caught.value.report.failed}
    assert {"expect_column_to_exist", "expect_table_row_count_to_be_between"} <= failed
    assert "summary" in str(caught.value)
    assert not (tmp_path / "store").exists()  # nothing half-written


def test_unreadable_sources_are_named(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"dialogue": "a", "summary": "b"}\n{not json\n')
    with pytest.raises(DataSourceError, match=r"bad\.jsonl:2: not valid JSON"):
        load_records(bad_json)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"dialogue": "caf\xe9", "summary": "b"}\n')
    with pytest.raises(DataSourceError, match="not valid UTF-8"):
        load_records(latin)
    with pytest.raises(DataSourceError, match="does not exist"):
        load_records(tmp_path / "missing.jsonl")
    with pytest.raises(DataSourceError, match="cannot tell the format"):
        load_records(_write(tmp_path / "data.txt", []))


def test_csv_and_parquet_sources_read_like_jsonl(sample_jsonl: Path, tmp_path: Path) -> None:
    frame = load_records(sample_jsonl)
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    config = DataConfig()
    expected = build_splits(frame, config)
    assert build_splits(load_records(tmp_path / "s.csv"), config) == expected
    assert build_splits(load_records(tmp_path / "s.parquet"), config) == expected


def test_prepare_reuses_an_identical_earlier_result(sample_jsonl: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    config = DataConfig(source=str(sample_jsonl))
    first = prepare_dataset(config, store)
    second = prepare_dataset(config, store)
    assert not first.reused and second.reused
    assert second.hash == first.hash and second.splits == first.splits
    assert sum(first.counts.values()) == 120 and all(first.counts.values())
    assert store.exists(f"datasets/{first.hash}/validation.md")
    changed = prepare_dataset(config.model_copy(update={"test_fraction": 0.2}), store)
    assert not changed.reused and changed.hash != first.hash
