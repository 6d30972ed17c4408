"""The `prepare` stage: read a source, enforce the data contract, split, apply the prompt template.

A source that breaks the contract is refused with the failed expectations and the offending
record numbers before anything trains. Splits come from a source column when there is one,
otherwise from a stable hash of each record's near-duplicate key, so a record (and every
near-copy of it) lands in the same split on every run and after every data refresh. The
prepared dataset has a content hash; identical source bytes and config reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steps.artifacts import ArtifactStore
from steps.data_contract import (
    SPLIT,
    Check,
    DataContract,
    DataValidationError,
    TokenCounter,
    ValidationReport,
    apply_policies,
    near_duplicate_key,
    validate,
)
from steps.data_sources import BUILTIN_SAMPLE, UTF8_COLUMN, DataSourceError, parse_records, read_source
from steps.feedback import Correction, source_hash
from steps.prompts import render_prompt

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BUILTIN_SAMPLE", "Check", "Columns", "DataConfig", "DataContract", "DataSourceError",
           "DataValidationError", "Example", "PreparedDataset", "ValidationReport", "prepare_dataset",
           "render_prompt", "split_of"]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
Task = Literal["summarization", "instruction"]
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "summarization": {
        "columns": {"input": "dialogue", "target": "summary"},
        "template": "Summarize the following conversation.\n\n{input}\n\nSummary:",  # FLAN-style
    },
    "instruction": {
        "columns": {"input": "instruction", "target": "response"},
        "template": "Below is an instruction that describes a task. Write a response that completes it.\n\n"
                    "### Instruction:\n{input}\n\n### Response:",
    },
}


class Columns(BaseModel):
    """Which source columns hold the model input, the expected output and (optionally) the split."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    input: str
    target: str
    split: str | None = Field(None, description="a column of train/validation/test; hashed splits when unset")


class DataConfig(BaseModel):
    """What data to prepare, for which task, and the contract it must meet."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = Field(BUILTIN_SAMPLE, description="a .jsonl/.csv/.parquet path or s3:// URI, or builtin:dialogue-summaries")
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    task: Task = "summarization"
    columns: Columns = Field(Columns(**TASK_DEFAULTS["summarization"]["columns"]),
                             description="defaults by task: dialogue/summary or instruction/response")
    template: str = Field(TASK_DEFAULTS["summarization"]["template"],
                          description="prompt template with one {input} placeholder; defaults by task")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    contract: DataContract = DataContract()
    feedback: bool = Field(True, description="add the corrections people gave to the release endpoint's answers "
                                             "(`genaiops feedback`) to the source, under the same contract")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            defaults = TASK_DEFAULTS.get(raw.get("task", "summarization"), TASK_DEFAULTS["summarization"])
            raw = {**raw}
            raw.setdefault("template", defaults["template"])
            columns = raw.get("columns")
            if columns is None:
                raw["columns"] = defaults["columns"]
            elif isinstance(columns, dict):
                raw["columns"] = {**defaults["columns"], **columns}
        return raw

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
        if len({self.columns.input, self.columns.target, self.columns.split}) < (3 if self.columns.split else 2):
            raise ValueError("columns.input, columns.target and columns.split must be different columns")
        return self



class Example(BaseModel):
    """One templated record, ready for training or evaluation."""

    model_config = ConfigDict(frozen=True)
    id: str
    prompt: str
    target: str


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
    feedback: list[str] = Field(default_factory=list, description="ids of the feedback whose corrections are records")

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.splits.items()}


def split_of(key: str, validation_fraction: float, test_fraction: float) -> str:
    """The split of a record, from a stable hash of its near-duplicate key."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + validation_fraction:
        return "validation"
    return "train"


def assign_splits(frame: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    """Add the `_split` column: the source's split column if configured, else the stable hash."""
    frame = frame.copy()
    if config.columns.split is not None:
        if config.columns.split not in frame.columns:
            raise DataSourceError(f"data.columns.split: the source has no column {config.columns.split!r}; "
                                  f"columns are {sorted(c for c in frame.columns if not c.startswith('_'))}")
        frame[SPLIT] = frame[config.columns.split].map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    elif config.columns.input in frame.columns:
        frame[SPLIT] = [split_of(near_duplicate_key(v), config.validation_fraction, config.test_fraction)
                        if isinstance(v, str) else "train" for v in frame[config.columns.input]]
    return frame


FEEDBACK = "_feedback"  # the id of the feedback whose correction a record carries


def add_corrections(frame: pd.DataFrame, corrections: Sequence[Correction],
                    config: DataConfig) -> tuple[pd.DataFrame, list[int]]:
    """The source's records with people's corrections: a correction of an input the source has (ignoring case,
    spacing and punctuation, as the duplicate rule does) replaces that record's target and keeps its split; one of
    a new input is a new record (numbered after the source's) for the training split. The new records' numbers."""
    if not corrections:
        return frame, []
    import pandas as pd

    frame = frame.copy()
    frame[FEEDBACK] = None
    inputs, targets = config.columns.input, config.columns.target
    keys = {near_duplicate_key(v): number for number, v in frame[inputs].items() if isinstance(v, str)} \
        if inputs in frame.columns else {}
    number = int(max(frame.index, default=0)) + 1
    added: list[int] = []
    for correction in sorted(corrections, key=lambda c: c.feedback_id):
        key = near_duplicate_key(correction.input)
        if key not in keys:
            row: dict[str, Any] = {column: None for column in frame.columns}
            row.update({inputs: correction.input, **({UTF8_COLUMN: True} if UTF8_COLUMN in frame.columns else {})})
            if config.columns.split:
                row[config.columns.split] = "train"
            frame = pd.concat([frame, pd.DataFrame([row], index=[number])]).astype(object)
            keys[key], number = number, number + 1
            added.append(keys[key])
        frame.at[keys[key], targets] = correction.target
        frame.at[keys[key], FEEDBACK] = correction.feedback_id
    return frame, added


def check_records(data: bytes, name: str, config: DataConfig, count_tokens: TokenCounter,
                  corrections: Sequence[Correction] = ()) -> tuple[pd.DataFrame, ValidationReport]:
    """Parse, clean and validate source bytes (with the corrections added); the cleaned records and the contract's
    report."""
    frame, added = add_corrections(parse_records(data, config.format, name), corrections, config)
    rows_read = len(frame)
    cleaned, dropped, redacted = apply_policies(frame, config.columns.input, config.columns.target, config.contract)
    cleaned = assign_splits(cleaned, config)
    if added and SPLIT in cleaned.columns:
        cleaned.loc[cleaned.index.isin(added), SPLIT] = "train"
    report = validate(cleaned, input_col=config.columns.input, target_col=config.columns.target,
                      contract=config.contract, count_tokens=count_tokens, source=name, rows_read=rows_read,
                      dropped=dropped, redacted=redacted)
    return cleaned, report


def build_splits(frame: pd.DataFrame, config: DataConfig) -> dict[str, list[Example]]:
    """Template every (validated) record into its split."""
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    has_ids, has_feedback = "id" in frame.columns, FEEDBACK in frame.columns
    for number, row in frame.iterrows():
        record_id = row["id"] if has_ids else None
        if not isinstance(record_id, str | int) and has_feedback and isinstance(row[FEEDBACK], str):
            record_id = f"feedback-{row[FEEDBACK]}"
        splits[row[SPLIT]].append(Example(
            id=str(record_id) if isinstance(record_id, str | int) else f"record-{number}",
            prompt=render_prompt(config.template, row[config.columns.input]),
            target=row[config.columns.target],
        ))
    return splits


def content_hash(splits: dict[str, list[Example]]) -> str:
    """A hash of the prepared content: the same splits give the same hash on any machine."""
    canonical = json.dumps({name: [e.model_dump() for e in rows] for name, rows in sorted(splits.items())},
                           sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prepare_dataset(config: DataConfig, store: ArtifactStore, count_tokens: TokenCounter,
                    corrections: Sequence[Correction] = ()) -> PreparedDataset:
    """Read, clean, validate, split and template the source with people's corrections added; reuse an identical
    earlier result.

    `count_tokens` measures text in the base model's tokenizer, for the contract's length bounds. The corrections
    pass the same contract as the source's records, and the dataset names the feedback they came from.
    """
    data, name = read_source(config.source, store)
    combined = source_hash(data, corrections)
    config_hash = hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    cache_key = f"datasets/by-source/{hashlib.sha256((combined + config_hash).encode()).hexdigest()}.json"
    if store.exists(cache_key):
        dataset = _load_prepared(store, json.loads(store.get(cache_key)))
        log.info("data unchanged: reusing prepared dataset %s (%s)", dataset.hash[:12], dataset.counts)
        return dataset

    frame, report = check_records(data, name, config, count_tokens, corrections)
    if not report.success:
        raise DataValidationError(report)
    splits = build_splits(frame, config)
    empty = [split for split, rows in splits.items() if not rows]
    if empty:
        raise DataValidationError(report.model_copy(update={"success": False, "checks": [
            Check(expectation="every split has records", column=None, success=False,
                  description=f"every split has records (none in {empty})",
                  observed=f"{ {k: len(v) for k, v in splits.items()} } from {len(frame)} records"),
            *report.checks,
        ]}))
    digest = content_hash(splits)
    prefix = f"datasets/{digest}"
    for split, rows in splits.items():
        store.put(f"{prefix}/{split}.jsonl", "".join(e.model_dump_json() + "\n" for e in rows).encode("utf-8"))
    store.put(f"{prefix}/validation.md", report.to_markdown().encode("utf-8"))
    store.put(f"{prefix}/validation.html", report.to_html().encode("utf-8"))
    feedback = sorted(f for f in frame[FEEDBACK] if isinstance(f, str)) if FEEDBACK in frame.columns else []
    manifest = {"hash": digest, "source": name, "source_hash": combined,
                "counts": {k: len(v) for k, v in splits.items()}, "validation": report.model_dump(),
                "feedback": feedback}
    store.put(f"{prefix}/manifest.json", json.dumps(manifest, indent=2).encode("utf-8"))
    store.put(cache_key, json.dumps(manifest).encode("utf-8"))  # written last: marks the dataset complete
    log.info("prepared dataset %s from %s%s: %s; %s", digest[:12], name,
             f" and {len(feedback)} correction(s) from feedback" if feedback else "", manifest["counts"],
             report.summary())
    return PreparedDataset(hash=digest, source=name, source_hash=combined, splits=splits,
                           validation=report, uri=store.uri(prefix), feedback=feedback)


def load_prepared(store: ArtifactStore, dataset_hash: str) -> PreparedDataset:
    """A dataset prepared earlier, by its content hash."""
    return _load_prepared(store, json.loads(store.get(f"datasets/{dataset_hash}/manifest.json")))


def _load_prepared(store: ArtifactStore, manifest: dict[str, Any]) -> PreparedDataset:
    prefix = f"datasets/{manifest['hash']}"
    splits = {name: [Example.model_validate_json(line) for line in store.get(f"{prefix}/{name}.jsonl").decode().splitlines()]
              for name in SPLITS}
    return PreparedDataset(hash=str(manifest["hash"]), source=str(manifest["source"]),
                           source_hash=str(manifest["source_hash"]), splits=splits,
                           validation=ValidationReport.model_validate(manifest["validation"]),
                           uri=store.uri(prefix), reused=True, feedback=list(manifest.get("feedback", [])))


def take(examples: Sequence[Example], limit: int | None) -> list[Example]:
    """The first `limit` examples (all when `limit` is None)."""
    return list(examples if limit is None else examples[:limit])
