"""The `prepare` stage: load records, validate them against a data contract, split, template.

The contract is a Great Expectations suite built from `DataConfig`; a file that breaks it
is refused with the failed expectations and the offending record numbers, before anything
trains. Splits are decided by a stable hash of each record's input, so a record lands in the
same split on every run and after every data refresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steps.artifacts import ArtifactStore
from steps.sample_data import sample_path

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

BUILTIN_SAMPLE = "builtin:dialogue-summaries"
DEFAULT_TEMPLATE = "Summarize the following conversation.\n\n{input}\n\nSummary:"
SPLITS = ("train", "validation", "test")
SHOWN_ROWS = 5  # offending record numbers named in an error message


class Columns(BaseModel):
    """Which source columns hold the model input and the expected output."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    input: str = "dialogue"
    target: str = "summary"


class DataConfig(BaseModel):
    """What data to prepare and the contract it must meet."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = Field(BUILTIN_SAMPLE, description="a local file (.jsonl, .csv, .parquet) or builtin:dialogue-summaries")
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    columns: Columns = Columns()
    template: str = Field(DEFAULT_TEMPLATE, description="prompt template with one {input} placeholder")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    min_rows: int = Field(50, ge=3, description="fewest records the contract accepts")
    max_input_chars: int = Field(4000, ge=1)
    max_target_chars: int = Field(1000, ge=1)

    @field_validator("template")
    @classmethod
    def _one_input_placeholder(cls, template: str) -> str:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        if fields != ["input"]:
            raise ValueError(f"the template needs exactly one {{input}} placeholder and no other, found {fields}")
        return template

    @model_validator(mode="after")
    def _splits_leave_training_rows(self) -> DataConfig:
        if self.validation_fraction + self.test_fraction >= 0.6:
            raise ValueError("validation_fraction + test_fraction must stay below 0.6 to leave rows for training")
        return self


class Example(BaseModel):
    """One templated record, ready for training or evaluation."""

    model_config = ConfigDict(frozen=True)
    id: str
    prompt: str
    target: str


class Check(BaseModel):
    """The outcome of one expectation of the data contract."""

    model_config = ConfigDict(frozen=True)
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int = 0
    rows: list[int] = []
    observed: str | None = None

    def describe(self) -> str:
        where = f" on column {self.column!r}" if self.column else ""
        detail = f"{self.unexpected_count} bad record(s), first at record(s) {self.rows}" if self.rows else ""
        if self.observed is not None:
            detail = f"observed {self.observed}"
        return f"{self.expectation}{where}: {detail}".rstrip(": ")


class ValidationReport(BaseModel):
    """The data contract's verdict on one source, readable by an approver."""

    model_config = ConfigDict(frozen=True)
    source: str
    rows: int
    success: bool
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.success]

    def to_markdown(self) -> str:
        lines = [
            f"# Data validation: {'passed' if self.success else 'FAILED'}",
            "",
            f"Source: `{self.source}` ({self.rows} records)",
            "",
            "| expectation | column | result | bad records | first records |",
            "| --- | --- | --- | --- | --- |",
        ]
        for c in self.checks:
            result = "pass" if c.success else "FAIL"
            first = ", ".join(map(str, c.rows)) or (c.observed or "")
            lines.append(f"| {c.expectation} | {c.column or ''} | {result} | {c.unexpected_count} | {first} |")
        return "\n".join(lines) + "\n"


class PreparedDataset(BaseModel):
    """The prepared, templated splits and their lineage."""

    model_config = ConfigDict(frozen=True)
    hash: str
    source: str
    source_hash: str
    splits: dict[str, list[Example]]
    validation: ValidationReport
    uri: str
    reused: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.splits.items()}


class DataSourceError(ValueError):
    """The source cannot be read."""


class DataValidationError(ValueError):
    """The source breaks the data contract."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        failed = "; ".join(c.describe() for c in report.failed)
        super().__init__(f"{report.source} breaks the data contract ({len(report.failed)} failed): {failed}")


def resolve_source(source: str) -> Path:
    """The local path a `data.source` value points at."""
    if source == BUILTIN_SAMPLE:
        return sample_path()
    if source.startswith("builtin:"):
        raise DataSourceError(f"data.source: unknown built-in dataset {source!r}; use {BUILTIN_SAMPLE!r} or a path")
    if "://" in source:
        raise DataSourceError(f"data.source: {source!r} is not a local path; only local files are read here")
    return Path(source).expanduser()


def _format_of(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    suffix = path.suffix.lower()
    formats = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
    if suffix not in formats:
        raise DataSourceError(
            f"data.source: cannot tell the format of {path.name!r} from its suffix; "
            f"use .jsonl, .csv or .parquet, or set data.format"
        )
    return formats[suffix]


def load_records(path: Path, fmt: str = "auto") -> pd.DataFrame:
    """Read a source into a DataFrame indexed by 1-based record (line) numbers."""
    import pandas as pd

    if not path.is_file():
        raise DataSourceError(f"data.source: {path} does not exist or is not a file")
    kind = _format_of(path, fmt)
    try:
        if kind == "jsonl":
            rows, numbers = [], []
            with path.open("r", encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataSourceError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
                    if not isinstance(record, dict):
                        raise DataSourceError(f"{path}:{number}: each line must be a JSON object")
                    rows.append(record)
                    numbers.append(number)
            frame = pd.DataFrame(rows, index=numbers)
        elif kind == "csv":
            frame = pd.read_csv(path, dtype=object, keep_default_na=False, na_values=[])
            frame.index = range(1, len(frame) + 1)
        else:
            frame = pd.read_parquet(path)
            frame.index = range(1, len(frame) + 1)
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"{path}: not valid UTF-8 (byte {exc.start})") from exc
    except DataSourceError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for unreadable files
        raise DataSourceError(f"{path}: cannot read as {kind}: {exc}") from exc
    # Plain Python objects per cell, so the contract checks each value's own type.
    return frame.astype(object)


def validate_records(frame: pd.DataFrame, config: DataConfig, source: str) -> ValidationReport:
    """Check a DataFrame against the data contract, with Great Expectations."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("source").add_dataframe_asset("records")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})

    expect = gx.expectations
    suite = gx.ExpectationSuite(name="data-contract")
    suite.add_expectation(expect.ExpectTableRowCountToBeBetween(min_value=config.min_rows))
    present = [c for c in (config.columns.input, config.columns.target) if c in frame.columns]
    for column in (config.columns.input, config.columns.target):
        suite.add_expectation(expect.ExpectColumnToExist(column=column))
    limits = {config.columns.input: config.max_input_chars, config.columns.target: config.max_target_chars}
    for column in present:
        suite.add_expectation(expect.ExpectColumnValuesToNotBeNull(column=column))
        suite.add_expectation(expect.ExpectColumnValuesToBeInTypeList(column=column, type_list=["str"]))
        suite.add_expectation(
            expect.ExpectColumnValueLengthsToBeBetween(column=column, min_value=1, max_value=limits[column])
        )
    if config.columns.input in present:
        suite.add_expectation(expect.ExpectColumnValuesToBeUnique(column=config.columns.input))

    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    checks = []
    for outcome in result.results:
        expectation = outcome.expectation_config
        assert expectation is not None  # GX always echoes the expectation it ran
        details = outcome.result or {}
        rows = sorted(int(i) for i in details.get("unexpected_index_list") or [])
        observed = details.get("observed_value")
        checks.append(Check(
            expectation=expectation.type,
            column=expectation.kwargs.get("column"),
            success=bool(outcome.success),
            unexpected_count=int(details.get("unexpected_count") or 0),
            rows=rows[:SHOWN_ROWS],
            observed=None if observed is None else str(observed),
        ))
    return ValidationReport(source=source, rows=len(frame), success=bool(result.success), checks=checks)


def normalise(text: str) -> str:
    """Collapse runs of blanks inside each line and drop empty lines; keep the line structure."""
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def split_of(text: str, validation_fraction: float, test_fraction: float) -> str:
    """The split a record belongs to, from a stable hash of its (whitespace-normalised) input."""
    digest = hashlib.sha256(" ".join(text.split()).encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + validation_fraction:
        return "validation"
    return "train"


def build_splits(frame: pd.DataFrame, config: DataConfig) -> dict[str, list[Example]]:
    """Template every record and assign it to its split."""
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    has_ids = "id" in frame.columns
    for number, row in frame.iterrows():
        text = normalise(str(row[config.columns.input]))
        example = Example(
            id=str(row["id"]) if has_ids and isinstance(row["id"], str | int) else f"record-{number}",
            prompt=config.template.format(input=text),
            target=normalise(str(row[config.columns.target])),
        )
        splits[split_of(text, config.validation_fraction, config.test_fraction)].append(example)
    return splits


def content_hash(splits: dict[str, list[Example]]) -> str:
    """A hash of the prepared content: the same splits give the same hash on any machine."""
    canonical = json.dumps(
        {name: [e.model_dump() for e in rows] for name, rows in sorted(splits.items())},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _config_hash(config: DataConfig) -> str:
    return hashlib.sha256(config.model_dump_json().encode("utf-8")).hexdigest()


def prepare_dataset(config: DataConfig, store: ArtifactStore) -> PreparedDataset:
    """Load, validate, split and template the configured source; reuse an identical earlier result."""
    path = resolve_source(config.source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataSourceError(f"data.source: cannot read {path}: {exc.strerror or exc}") from exc
    source_hash = hashlib.sha256(raw).hexdigest()
    cache_key = f"datasets/by-source/{hashlib.sha256((source_hash + _config_hash(config)).encode()).hexdigest()}.json"
    if store.exists(cache_key):
        manifest = json.loads(store.get(cache_key))
        dataset = _load_prepared(store, manifest)
        log.info("data unchanged: reusing prepared dataset %s (%s)", dataset.hash[:12], dataset.counts)
        return dataset

    frame = load_records(path, config.format)
    report = validate_records(frame, config, str(path))
    if not report.success:
        raise DataValidationError(report)
    splits = build_splits(frame, config)
    empty = [name for name, rows in splits.items() if not rows]
    if empty:
        raise DataValidationError(report.model_copy(update={"success": False, "checks": [
            *report.checks,
            Check(expectation="every split has records", column=None, success=False,
                  observed=f"empty splits {empty} from {len(frame)} records"),
        ]}))
    digest = content_hash(splits)
    prefix = f"datasets/{digest}"
    for name, rows in splits.items():
        store.put(f"{prefix}/{name}.jsonl", "".join(e.model_dump_json() + "\n" for e in rows).encode("utf-8"))
    store.put(f"{prefix}/validation.md", report.to_markdown().encode("utf-8"))
    manifest = {"hash": digest, "source": str(path), "source_hash": source_hash,
                "counts": {n: len(r) for n, r in splits.items()}, "validation": report.model_dump()}
    store.put(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode("utf-8"))
    store.put(cache_key, json.dumps(manifest).encode("utf-8"))  # written last: marks the dataset complete
    log.info("prepared dataset %s from %s: %s", digest[:12], path, {n: len(r) for n, r in splits.items()})
    return PreparedDataset(hash=digest, source=str(path), source_hash=source_hash, splits=splits,
                           validation=report, uri=store.uri(prefix))


def _load_prepared(store: ArtifactStore, manifest: dict[str, object]) -> PreparedDataset:
    prefix = f"datasets/{manifest['hash']}"
    splits = {
        name: [Example.model_validate_json(line) for line in store.get(f"{prefix}/{name}.jsonl").decode().splitlines()]
        for name in SPLITS
    }
    return PreparedDataset(
        hash=str(manifest["hash"]), source=str(manifest["source"]), source_hash=str(manifest["source_hash"]),
        splits=splits, validation=ValidationReport.model_validate(manifest["validation"]),
        uri=store.uri(prefix), reused=True,
    )


def take(examples: Sequence[Example], limit: int | None) -> list[Example]:
    """The first `limit` examples (all when `limit` is None)."""
    return list(examples if limit is None else examples[:limit])
