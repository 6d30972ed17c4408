"""Reading a data source into records: JSON Lines, CSV or Parquet, from a path or an s3:// URI.

Records come back as a DataFrame of plain Python objects indexed by 1-based record numbers
(the line number for JSON Lines), so every later error can name the rows it is about.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from steps.artifacts import ArtifactNotFoundError, ArtifactStore
from steps.sample_data import sample_path

if TYPE_CHECKING:
    import pandas as pd

BUILTIN_SAMPLE = "builtin:dialogue-summaries"
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
UTF8_COLUMN = "_utf8_ok"  # False for JSON Lines records whose bytes were not valid UTF-8


class DataSourceError(ValueError):
    """The source cannot be read at all; the message says where and why."""


def read_source(source: str, store: ArtifactStore) -> tuple[bytes, str]:
    """The raw bytes of `data.source` and a URI naming it (s3:// goes through the artifact store)."""
    if source == BUILTIN_SAMPLE:
        path = sample_path()
        return path.read_bytes(), source
    if source.startswith("builtin:"):
        raise DataSourceError(f"data.source: unknown built-in dataset {source!r}; use {BUILTIN_SAMPLE!r} or a path")
    if "://" in source and not source.startswith("file://"):
        try:
            return store.read_uri(source), source
        except ArtifactNotFoundError as exc:
            raise DataSourceError(f"data.source: {exc}") from exc
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise DataSourceError(f"data.source: {path} does not exist or is not a file")
    try:
        return path.read_bytes(), str(path.resolve())
    except OSError as exc:
        raise DataSourceError(f"data.source: cannot read {path}: {exc.strerror or exc}") from exc


def format_of(name: str, configured: str) -> str:
    if configured != "auto":
        return configured
    if name == BUILTIN_SAMPLE:
        return "jsonl"
    suffix = Path(name.split("?", 1)[0]).suffix.lower()
    if suffix not in FORMATS:
        raise DataSourceError(
            f"{name}: cannot tell the format from the suffix {suffix or '(none)'!r}; "
            f"use one of {sorted(FORMATS)} or set data.format"
        )
    return FORMATS[suffix]


def parse_records(data: bytes, fmt: str, name: str) -> pd.DataFrame:
    """Parse source bytes into records indexed by 1-based record numbers."""
    kind = format_of(name, fmt)
    if kind == "jsonl":
        frame = _jsonl(data, name)
    elif kind == "csv":
        frame = _csv(data, name)
    else:
        frame = _parquet(data, name)
    return frame.astype(object)  # plain Python values, so the contract checks each value's own type


def _jsonl(data: bytes, name: str) -> pd.DataFrame:
    import pandas as pd

    rows, numbers, utf8 = [], [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line, ok = raw.decode("utf-8"), True
        except UnicodeDecodeError:
            line, ok = raw.decode("utf-8", errors="replace"), False
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataSourceError(f"{name}:{number}: not valid JSON ({exc.msg}); is this really JSON Lines?") from exc
        if not isinstance(record, dict):
            raise DataSourceError(f"{name}:{number}: each line must be a JSON object, not {type(record).__name__}")
        rows.append(record)
        numbers.append(number)
        utf8.append(ok)
    frame = pd.DataFrame(rows, index=numbers)
    frame[UTF8_COLUMN] = utf8
    return frame


def _csv(data: bytes, name: str) -> pd.DataFrame:
    import pandas as pd

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataSourceError(f"{name}:{line}: not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8") from exc
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=object, keep_default_na=False, na_values=[])
    except Exception as exc:  # pandas raises several parser error types
        raise DataSourceError(f"{name}: cannot read as CSV: {exc}") from exc
    frame.index = range(1, len(frame) + 1)
    return frame


def _parquet(data: bytes, name: str) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several error types for a file that is not Parquet
        raise DataSourceError(f"{name}: cannot read as Parquet: {exc}") from exc
    frame.index = range(1, len(frame) + 1)
    return frame
