"""The bad-data corpus: one file per way a source can break the data contract.

`python -m tests.data.bad_corpus` rewrites the files in `bad/` from the seeded sample
generator; a unit test checks the committed files still match, so the corpus cannot drift
from what its cases promise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steps.sample_data import generate_records

FOLDER = Path(__file__).resolve().parent / "bad"
SEED, ROWS = 11, 60


@dataclass(frozen=True)
class BadCase:
    file: str
    expected: str  # what the error message must say
    rows: list[int]  # offending record numbers the message must name (empty: a file-level error)
    build: Callable[[list[dict[str, Any]]], bytes]
    data: dict[str, Any] = field(default_factory=dict)  # data-config overrides the case needs
    file_level: bool = False  # unreadable before any expectation can run


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _edit(edit: Callable[[list[dict[str, Any]]], None]) -> Callable[[list[dict[str, Any]]], bytes]:
    def build(rows: list[dict[str, Any]]) -> bytes:
        edit(rows)
        return _jsonl(rows)
    return build


def _set(index: int, **values: Any) -> Callable[[list[dict[str, Any]]], None]:
    return lambda rows: rows[index].update(values)


def _drop_summary(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        row.pop("summary")


def _near_duplicate(rows: list[dict[str, Any]]) -> None:
    rows[20]["dialogue"] = rows[4]["dialogue"].upper()


def _over_long(rows: list[dict[str, Any]]) -> None:
    rows[12]["dialogue"] = "\n".join([rows[12]["dialogue"]] * 60)


def _with_splits(rows: list[dict[str, Any]]) -> None:
    for i, row in enumerate(rows):
        row["split"] = ("train", "train", "train", "validation", "test")[i % 5]


def _overlap(rows: list[dict[str, Any]]) -> None:
    _with_splits(rows)
    rows[9]["dialogue"] = rows[0]["dialogue"]  # record 1 is train, record 10 is test


def _bad_split(rows: list[dict[str, Any]]) -> None:
    _with_splits(rows)
    rows[6]["split"] = "holdout"


def _pii(rows: list[dict[str, Any]]) -> None:
    rows[2]["dialogue"] += "\nAnn: my email is ann.lee@example.com"
    rows[30]["dialogue"] += "\nBob: call me on +44 20 7946 0958"


def _invalid_utf8(rows: list[dict[str, Any]]) -> bytes:
    lines = _jsonl(rows).split(b"\n")
    lines[7] = lines[7].replace(b'"}', b' caf\xe9"}')  # Latin-1 bytes in a UTF-8 file
    return b"\n".join(lines)


def _unreadable(rows: list[dict[str, Any]]) -> bytes:
    lines = _jsonl(rows).split(b"\n")
    lines[14] = lines[14][: len(lines[14]) // 2]  # a truncated JSON object
    return b"\n".join(lines)


def _csv_in_disguise(rows: list[dict[str, Any]]) -> bytes:
    return b"dialogue,summary\n" + b"".join(f'"{r["dialogue"]}","{r["summary"]}"\n'.encode() for r in rows)


CASES = [
    BadCase("missing_column.jsonl", "column 'summary' exists", [], _edit(_drop_summary)),
    BadCase("wrong_type.jsonl", "summary is text", [6], _edit(_set(5, summary=42))),
    BadCase("nulls.jsonl", "summary is present", [9], _edit(_set(8, summary=None))),
    BadCase("empty_strings.jsonl", "dialogue is not empty", [4], _edit(_set(3, dialogue="   \n  "))),
    BadCase("over_long.jsonl", "dialogue has at most 1024 tokens", [13], _edit(_over_long)),
    BadCase("duplicates.jsonl", "no duplicate or near-duplicate dialogue", [5, 21], _edit(_near_duplicate)),
    BadCase("split_overlap.jsonl", "no input in more than one split", [1, 10], _edit(_overlap),
            data={"columns": {"split": "split"}}),
    BadCase("bad_split_value.jsonl", "split is one of train, validation, test", [7], _edit(_bad_split),
            data={"columns": {"split": "split"}}),
    BadCase("too_few_rows.jsonl", "at least 50 records", [], lambda rows: _jsonl(rows[:20])),
    BadCase("invalid_utf8.jsonl", "valid UTF-8", [8], _invalid_utf8),
    BadCase("pii.jsonl", "no personal data (email, phone, card) in dialogue", [3, 31], _edit(_pii)),
    BadCase("foreign_script.jsonl", "summary letters are LATIN", [17],
            _edit(_set(16, summary="Анна переносит встречу на пятницу."))),
    BadCase("unreadable.jsonl", "unreadable.jsonl:15: not valid JSON", [], _unreadable, file_level=True),
    BadCase("wrong_format.parquet", "cannot read as Parquet", [], _csv_in_disguise, file_level=True),
]


def build_all() -> dict[str, bytes]:
    return {case.file: case.build([dict(r) for r in generate_records(ROWS, seed=SEED)]) for case in CASES}


if __name__ == "__main__":
    FOLDER.mkdir(exist_ok=True)
    for name, data in build_all().items():
        (FOLDER / name).write_bytes(data)
    print(f"wrote {len(CASES)} files to {FOLDER}")
