"""The prepare stage: sources, cleaning policies, the contract, stable splits, content hash, reuse."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pytest

from steps.artifacts import LocalStore
from steps.data import (
    DataConfig,
    DataSourceError,
    DataValidationError,
    assign_splits,
    build_splits,
    check_records,
    content_hash,
    prepare_dataset,
    render_prompt,
    split_of,
)
from steps.data_contract import near_duplicate_key, normalise
from steps.data_sources import parse_records


def words(texts: Sequence[str]) -> list[int]:
    """A stand-in token counter: one token per word."""
    return [len(t.split()) for t in texts]


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check(path: Path, config: DataConfig | None = None, counter: Callable[[Sequence[str]], list[int]] = words):
    return check_records(path.read_bytes(), str(path), config or DataConfig(source=str(path)), counter)


def test_normalise_collapses_blanks_and_keeps_lines() -> None:
    assert normalise("  Ann:   hi  there \n\n Bob:\tyes ") == "Ann: hi there\nBob: yes"
    assert normalise(42) == 42


def test_near_duplicates_share_a_key() -> None:
    assert near_duplicate_key("Ann: Hi, Bob!") == near_duplicate_key("ann:   hi bob")
    assert near_duplicate_key("Ann: hi Bob") != near_duplicate_key("Ann: hi Cy")


def test_split_depends_on_content_only_and_follows_the_fractions() -> None:
    shares = [split_of(f"record {i}", 0.1, 0.1) for i in range(5000)]
    assert 0.08 < shares.count("test") / 5000 < 0.12
    assert 0.08 < shares.count("validation") / 5000 < 0.12
    frame = pd.DataFrame({"dialogue": ["Ann: Hi, Bob!", "ann: hi bob"], "summary": ["a", "b"]}, dtype=object)
    assigned = assign_splits(frame, DataConfig())
    assert assigned["_split"].nunique() == 1  # near-duplicates always land together


def test_records_keep_their_split_when_data_is_reordered_or_grows(sample_jsonl: Path, tmp_path: Path) -> None:
    config = DataConfig(source=str(sample_jsonl))
    before = {e.id: name for name, rows in build_splits(check(sample_jsonl, config)[0], config).items() for e in rows}
    grown = write(tmp_path / "grown.jsonl", [*records(sample_jsonl)[::-1],
                                             {"id": "new-1", "dialogue": "Zed: hi\nYan: bye", "summary": "Greeting."}])
    after = {e.id: name for name, rows in build_splits(check(grown, config)[0], config).items() for e in rows}
    assert {k: after[k] for k in before} == before


def test_content_hash_is_stable_and_sensitive(sample_jsonl: Path) -> None:
    config = DataConfig(source=str(sample_jsonl))
    splits = build_splits(check(sample_jsonl, config)[0], config)
    assert content_hash(splits) == content_hash(build_splits(check(sample_jsonl, config)[0], config))
    other = config.model_copy(update={"template": "S: {input}"})
    assert content_hash(build_splits(check(sample_jsonl, other)[0], other)) != content_hash(splits)


def test_the_template_renders_prompts_the_same_everywhere(sample_jsonl: Path) -> None:
    config = DataConfig(source=str(sample_jsonl), template="Dialogue:\n{input}\nTL;DR:")
    first = records(sample_jsonl)[0]
    splits = build_splits(check(sample_jsonl, config)[0], config)
    prompts = {e.id: e.prompt for rows in splits.values() for e in rows}
    assert prompts[str(first["id"])] == render_prompt(config.template, str(first["dialogue"]))
    assert render_prompt(config.template, "  Ann:  hi \n\n Bob: yo") == "Dialogue:\nAnn: hi\nBob: yo\nTL;DR:"


def test_instruction_task_defaults_its_columns_and_template(tmp_path: Path) -> None:
    rows = [{"instruction": f"Add {i} and {i + 1}.", "response": str(2 * i + 1)} for i in range(60)]
    path = write(tmp_path / "inst.jsonl", rows)
    config = DataConfig(source=str(path), task="instruction")
    frame, report = check(path, config)
    assert report.success, report.to_markdown()
    example = build_splits(frame, config)["train"][0]
    assert "### Instruction:\nAdd" in example.prompt and example.prompt.endswith("### Response:")


def test_good_sample_passes_every_check(sample_jsonl: Path) -> None:
    _, report = check(sample_jsonl)
    assert report.success, report.to_markdown()
    assert report.rows == report.kept == 120
    assert len(report.checks) >= 15


def test_token_bounds_use_the_base_model_tokenizer(sample_jsonl: Path, tiny_model_dir: Path) -> None:
    from steps.base_model import token_counter

    counter = token_counter(tiny_model_dir)
    config = DataConfig.model_validate({"source": str(sample_jsonl), "contract": {"max_target_tokens": 12}})
    _, report = check(sample_jsonl, config, counter)
    [failed] = report.failed
    assert failed.description == "summary has at most 12 tokens"
    longest = max(records(sample_jsonl), key=lambda r: counter([str(r["summary"])])[0])
    assert counter([str(longest["summary"])])[0] > 12 > len(str(longest["summary"]).split()) // 2


def test_duplicates_fail_by_default_and_are_dropped_on_request(sample_jsonl: Path, tmp_path: Path) -> None:
    rows = records(sample_jsonl)
    rows[9]["dialogue"] = str(rows[2]["dialogue"]).upper().replace(":", " :  ")  # a near-duplicate of line 3
    path = write(tmp_path / "dups.jsonl", rows)
    _, report = check(path)
    [failed] = report.failed
    assert failed.expectation == "expect_column_values_to_be_unique" and failed.rows == [3, 10]
    total = len(report.checks)
    assert report.summary().startswith(f"FAILED 1 of {total} expectations on 120 records")  # counts what failed
    drop = DataConfig.model_validate({"source": str(path), "contract": {"duplicates": "drop"}})
    _, dropped = check(path, drop)
    assert dropped.success and dropped.dropped_duplicates == [10] and dropped.kept == 119
    assert dropped.summary().startswith(f"passed all {total} expectations") and "dropped 1 duplicate" in dropped.summary()


def test_personal_data_fails_by_default_and_is_redacted_on_request(sample_jsonl: Path, tmp_path: Path) -> None:
    rows = records(sample_jsonl)
    rows[0]["dialogue"] = str(rows[0]["dialogue"]) + "\nAnn: mail me at ann.lee@example.com"
    rows[5]["summary"] = str(rows[5]["summary"]) + " Card 4111 1111 1111 1111."
    path = write(tmp_path / "pii.jsonl", rows)
    _, report = check(path)
    assert {(c.description, tuple(c.rows)) for c in report.failed} == {
        ("no personal data (email, phone, card) in dialogue", (1,)),
        ("no personal data (email, phone, card) in summary", (6,)),
    }
    config = DataConfig.model_validate({"source": str(path), "contract": {"pii": "redact"}})
    frame, redacted = check(path, config)
    assert redacted.success and redacted.redacted_pii == [1, 6]
    assert "[EMAIL]" in frame.loc[1, "dialogue"] and "[CARD]" in frame.loc[6, "summary"]


def test_letters_outside_the_allowed_scripts_are_refused(sample_jsonl: Path, tmp_path: Path) -> None:
    rows = records(sample_jsonl)
    rows[7]["summary"] = "Анна переносит встречу на пятницу."
    path = write(tmp_path / "cyr.jsonl", rows)
    _, report = check(path)
    assert [(c.description, c.rows) for c in report.failed] == [("summary letters are LATIN", [8])]
    both = DataConfig.model_validate({"source": str(path), "contract": {"scripts": ["latin", "cyrillic"]}})
    assert check(path, both)[1].success


def test_a_split_column_is_honoured_and_overlap_is_refused(sample_jsonl: Path, tmp_path: Path) -> None:
    rows = records(sample_jsonl)
    for i, row in enumerate(rows):
        row["fold"] = ["train", "train", "train", "validation", "test"][i % 5]
    path = write(tmp_path / "folds.jsonl", rows)
    config = DataConfig.model_validate({"source": str(path), "columns": {"split": "fold"}})
    frame, report = check(path, config)
    assert report.success
    assert {name: len(v) for name, v in build_splits(frame, config).items()} == {"train": 72, "validation": 24, "test": 24}

    rows.append({**rows[0], "id": "copy", "fold": "test"})  # the same dialogue in train and test
    rows.append({"id": "odd", "dialogue": "Zed: hi\nYan: bye", "summary": "They part.", "fold": "holdout"})
    _, bad = check(write(tmp_path / "overlap.jsonl", rows), config)
    failed = {c.description: c.rows for c in bad.failed}
    assert failed["no input in more than one split"] == [1, 121]
    assert failed["no duplicate or near-duplicate dialogue"] == [1, 121]
    assert failed["split is one of train, validation, test"] == [122]


def test_unreadable_and_wrongly_formatted_sources_are_named(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"dialogue": "a", "summary": "b"}\n{not json\n')
    with pytest.raises(DataSourceError, match=r"bad\.jsonl:2: not valid JSON"):
        parse_records(bad_json.read_bytes(), "auto", str(bad_json))
    with pytest.raises(DataSourceError, match="cannot tell the format"):
        parse_records(b"", "auto", "data.txt")
    with pytest.raises(DataSourceError, match="cannot read as Parquet"):
        parse_records(b"dialogue,summary\na,b\n", "parquet", "x.parquet")
    with pytest.raises(DataSourceError, match=r"latin\.csv:2: not valid UTF-8"):
        parse_records(b"dialogue,summary\ncaf\xe9,b\n", "auto", "latin.csv")
    with pytest.raises(DataSourceError, match="does not exist"):
        prepare_dataset(DataConfig(source=str(tmp_path / "missing.jsonl")), LocalStore(tmp_path / "s"), words)


def test_invalid_utf8_in_json_lines_names_the_records(sample_jsonl: Path, tmp_path: Path) -> None:
    lines = sample_jsonl.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"summary", b"summary", 1).replace(b'."}', b'. caf\xe9"}')
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"\n".join(lines))
    _, report = check(path)
    assert [(c.description, c.rows) for c in report.failed] == [("valid UTF-8", [4])]


def test_csv_and_parquet_sources_read_like_jsonl(sample_jsonl: Path, tmp_path: Path) -> None:
    frame = pd.DataFrame(records(sample_jsonl))
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet", index=False)
    config = DataConfig()
    expected = build_splits(check(sample_jsonl, config)[0], config)
    assert build_splits(check(tmp_path / "s.csv", config)[0], config) == expected
    assert build_splits(check(tmp_path / "s.parquet", config)[0], config) == expected


def test_prepare_reuses_an_identical_earlier_result_and_writes_nothing_on_failure(
    sample_jsonl: Path, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "store")
    config = DataConfig(source=str(sample_jsonl))
    first = prepare_dataset(config, store, words)
    second = prepare_dataset(config, store, words)
    assert not first.reused and second.reused
    assert second.hash == first.hash and second.splits == first.splits
    assert sum(first.counts.values()) == 120 and all(first.counts.values())
    assert store.exists(f"datasets/{first.hash}/validation.md") and store.exists(f"datasets/{first.hash}/validation.html")
    changed = prepare_dataset(config.model_copy(update={"test_fraction": 0.2}), store, words)
    assert not changed.reused and changed.hash != first.hash

    few = write(tmp_path / "few.jsonl", [{"dialogue": f"A: {i}", "text": "t"} for i in range(5)])
    empty_store = LocalStore(tmp_path / "empty")
    with pytest.raises(DataValidationError) as caught:
        prepare_dataset(DataConfig(source=str(few)), empty_store, words)
    assert {"at least 50 records", "column 'summary' exists"} <= {c.description for c in caught.value.report.failed}
    assert not (tmp_path / "empty").exists()


def test_the_fast_token_counter_agrees_with_the_model_tokenizer(tiny_model_dir: Path, sample_jsonl: Path) -> None:
    from transformers import AutoTokenizer

    from steps.base_model import token_counter

    texts = [str(r["dialogue"]) for r in records(sample_jsonl)[:20]] + ["", "Ann: café — naïve 🙂"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert token_counter(tiny_model_dir)(texts) == expected


def test_the_shipped_sample_prepares_under_the_default_config(tmp_path: Path) -> None:
    dataset = prepare_dataset(DataConfig(), LocalStore(tmp_path / "store"), words)
    assert dataset.source == "builtin:dialogue-summaries"
    assert sum(dataset.counts.values()) == 720 and dataset.validation.success
