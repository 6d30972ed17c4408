"""The data contract: cleaning policies, then a Great Expectations suite over the records.

Row-level facts the built-in expectations cannot see directly (token counts in the base
model's tokenizer, personal data, letters outside the allowed scripts, split conflicts,
valid UTF-8) are computed as helper columns first; the suite then checks those columns, so
every failure comes back from Great Expectations with the offending record numbers.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from steps.data_sources import UTF8_COLUMN
from steps.pii import PII_KINDS, PiiKind, find_pii, redact
from steps.prompts import normalise

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SHOWN_ROWS = 5  # offending record numbers named in an error message
SPLIT_VALUES = ("train", "validation", "test")
TokenCounter = Callable[[Sequence[str]], list[int]]

# Helper columns computed before validation; never part of the prepared data.
KEY = "_near_duplicate_key"
SPLIT = "_split"
CONFLICT = "_split_conflict"


class DataContract(BaseModel):
    """What every record must satisfy, and what to do with duplicates and personal data."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_rows: int = Field(50, ge=3, description="fewest records accepted (after dropping duplicates)")
    max_input_tokens: int = Field(1024, ge=1, description="in the base model's tokenizer")
    max_target_tokens: int = Field(256, ge=1, description="in the base model's tokenizer")
    duplicates: Literal["fail", "drop"] = Field(
        "fail", description="exact or near-duplicate inputs (same text ignoring case, spacing, punctuation)")
    pii: Literal["fail", "redact"] = Field("fail", description="emails, phone numbers, card numbers")
    pii_kinds: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS))
    scripts: list[str] = Field(default_factory=lambda: ["LATIN"],
                               description="Unicode scripts letters may come from (LATIN, CYRILLIC, GREEK, CJK, ...)")
    max_foreign_fraction: float = Field(0.0, ge=0, le=1, description="share of letters allowed outside `scripts`")

    @field_validator("scripts")
    @classmethod
    def _upper(cls, scripts: list[str]) -> list[str]:
        if not scripts:
            raise ValueError("scripts needs at least one Unicode script name, e.g. LATIN")
        return [s.upper() for s in scripts]


class Check(BaseModel):
    """The outcome of one expectation of the contract."""

    model_config = ConfigDict(frozen=True)
    expectation: str
    column: str | None
    description: str
    success: bool
    unexpected_count: int = 0
    rows: list[int] = []
    observed: str | None = None

    def describe(self) -> str:
        if self.rows:
            return f"{self.description} [{self.expectation}]: {self.unexpected_count} bad record(s), first {self.rows}"
        return f"{self.description} [{self.expectation}]" + (f": observed {self.observed}" if self.observed else "")


class ValidationReport(BaseModel):
    """The contract's verdict on one source, with what the cleaning policies changed."""

    model_config = ConfigDict(frozen=True)
    source: str
    rows: int  # records read
    kept: int  # records after the duplicate policy
    success: bool
    checks: list[Check]
    dropped_duplicates: list[int] = []
    redacted_pii: list[int] = []

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.success]

    def summary(self) -> str:
        failed = sum(not c.success for c in self.checks)
        text = f"passed all {len(self.checks)} expectations on {self.rows} records" if self.success else \
            f"FAILED {failed} of {len(self.checks)} expectations on {self.rows} records"
        if self.dropped_duplicates:
            text += f"; dropped {len(self.dropped_duplicates)} duplicate(s)"
        if self.redacted_pii:
            text += f"; redacted personal data in {len(self.redacted_pii)} record(s)"
        return text

    def to_markdown(self) -> str:
        lines = [f"# Data validation: {'passed' if self.success else 'FAILED'}", "",
                 f"Source: `{self.source}` · {self.summary()}", "",
                 "| check | expectation | result | bad records | first records |", "| --- | --- | --- | ---: | --- |"]
        for c in self.checks:
            first = ", ".join(map(str, c.rows)) or (c.observed or "")
            lines.append(f"| {c.description} | `{c.expectation}` | {'pass' if c.success else '**FAIL**'} "
                         f"| {c.unexpected_count} | {first} |")
        if self.dropped_duplicates:
            lines += ["", f"Dropped duplicates (records): {', '.join(map(str, self.dropped_duplicates[:50]))}"]
        if self.redacted_pii:
            lines += ["", f"Redacted personal data (records): {', '.join(map(str, self.redacted_pii[:50]))}"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        rows = "".join(
            f"<tr class={'ok' if c.success else 'bad'}><td>{html.escape(c.description)}</td>"
            f"<td><code>{html.escape(c.expectation)}</code></td><td>{'pass' if c.success else 'FAIL'}</td>"
            f"<td>{c.unexpected_count}</td><td>{html.escape(', '.join(map(str, c.rows)) or (c.observed or ''))}</td></tr>"
            for c in self.checks
        )
        return (
            "<!doctype html><meta charset=utf-8><title>Data validation</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px}.bad{background:#fdd}.ok{background:#efe}</style>"
            f"<h1>Data validation: {'passed' if self.success else 'FAILED'}</h1>"
            f"<p>Source: <code>{html.escape(self.source)}</code><br>{html.escape(self.summary())}</p>"
            "<table><tr><th>check</th><th>expectation</th><th>result</th><th>bad records</th><th>first records</th></tr>"
            f"{rows}</table>"
        )


class DataValidationError(ValueError):
    """The source breaks the data contract."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        failed = "; ".join(c.describe() for c in report.failed)
        super().__init__(f"{report.source} breaks the data contract ({len(report.failed)} failed): {failed}")


def near_duplicate_key(text: str) -> str:
    """Text with case, punctuation and spacing removed: near-duplicates share this key."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def foreign_fraction(text: str, scripts: Sequence[str]) -> float:
    """The share of letters in `text` that belong to none of the allowed Unicode scripts."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    foreign = sum(not unicodedata.name(ch, "UNKNOWN").startswith(tuple(scripts)) for ch in letters)
    return foreign / len(letters)


def apply_policies(frame: pd.DataFrame, input_col: str, target_col: str,
                   contract: DataContract) -> tuple[pd.DataFrame, list[int], list[int]]:
    """Normalise whitespace, then drop duplicates and redact personal data where the contract says so."""
    frame = frame.copy()
    for column in (input_col, target_col):
        if column in frame.columns:
            frame[column] = frame[column].map(normalise).astype(object)  # keep per-value types for the contract
    dropped: list[int] = []
    if contract.duplicates == "drop" and input_col in frame.columns:
        keys = frame[input_col].map(lambda v: near_duplicate_key(v) if isinstance(v, str) else None)
        repeated = keys.notna() & keys.duplicated(keep="first")
        dropped = [int(i) for i in frame.index[repeated]]
        frame = frame[~repeated]
    redacted: list[int] = []
    if contract.pii == "redact":
        for column in (input_col, target_col):
            if column not in frame.columns:
                continue
            for number, value in frame[column].items():
                if isinstance(value, str) and find_pii(value, contract.pii_kinds):
                    frame.at[number, column] = redact(value, contract.pii_kinds)
                    redacted.append(int(number))
    return frame, dropped, sorted(set(redacted))


def validate(frame: pd.DataFrame, *, input_col: str, target_col: str, contract: DataContract,
             count_tokens: TokenCounter, source: str, rows_read: int,
             dropped: list[int], redacted: list[int]) -> ValidationReport:
    """Run the contract's Great Expectations suite over cleaned records that already carry `_split`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO lines are about temp folders

    frame = _with_helper_columns(frame, input_col, target_col, contract, count_tokens)
    context = gx.get_context(mode="ephemeral")  # before the suite: a suite resolves the current context
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    expect = gx.expectations
    suite = gx.ExpectationSuite(name="data-contract")

    def add(expectation: Any, description: str) -> None:
        expectation.meta = {"description": description}
        suite.add_expectation(expectation)

    add(expect.ExpectTableRowCountToBeBetween(min_value=contract.min_rows), f"at least {contract.min_rows} records")
    present = [c for c in (input_col, target_col) if c in frame.columns]
    for column in (input_col, target_col):
        add(expect.ExpectColumnToExist(column=column), f"column {column!r} exists")
    if UTF8_COLUMN in frame.columns:
        add(expect.ExpectColumnValuesToBeInSet(column=UTF8_COLUMN, value_set=[True]), "valid UTF-8")
    if SPLIT in frame.columns:
        add(expect.ExpectColumnValuesToBeInSet(column=SPLIT, value_set=list(SPLIT_VALUES)),
            f"split is one of {', '.join(SPLIT_VALUES)}")
    limits = {input_col: contract.max_input_tokens, target_col: contract.max_target_tokens}
    for column in present:
        add(expect.ExpectColumnValuesToNotBeNull(column=column), f"{column} is present")
        add(expect.ExpectColumnValuesToBeInTypeList(column=column, type_list=["str"]), f"{column} is text")
        add(expect.ExpectColumnValueLengthsToBeBetween(column=column, min_value=1), f"{column} is not empty")
        add(expect.ExpectColumnValuesToBeBetween(column=f"_{column}_tokens", max_value=limits[column]),
            f"{column} has at most {limits[column]} tokens")
        add(expect.ExpectColumnValuesToBeInSet(column=f"_{column}_pii", value_set=[""]),
            f"no personal data ({', '.join(contract.pii_kinds)}) in {column}")
        add(expect.ExpectColumnValuesToBeBetween(column=f"_{column}_foreign", max_value=contract.max_foreign_fraction),
            f"{column} letters are {'/'.join(contract.scripts)}")
    if input_col in present:
        add(expect.ExpectColumnValuesToBeUnique(column=KEY), f"no duplicate or near-duplicate {input_col}")
        add(expect.ExpectColumnValuesToBeInSet(column=CONFLICT, value_set=[False]),
            "no input in more than one split")

    batch = (context.data_sources.add_pandas("source").add_dataframe_asset("records")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame}))
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    checks = []
    for outcome in result.results:
        config = outcome.expectation_config
        assert config is not None  # GX always echoes the expectation it ran
        details = outcome.result or {}
        rows = sorted(int(i) for i in details.get("unexpected_index_list") or [])
        observed = details.get("observed_value")
        checks.append(Check(
            expectation=config.type, column=config.kwargs.get("column"),
            description=str((config.meta or {}).get("description", config.type)),
            success=bool(outcome.success), unexpected_count=int(details.get("unexpected_count") or 0),
            rows=rows[:SHOWN_ROWS], observed=None if observed is None else str(observed),
        ))
    checks.sort(key=lambda c: c.success)  # failures first: what an approver needs to see
    return ValidationReport(source=source, rows=rows_read, kept=len(frame), success=bool(result.success),
                            checks=checks, dropped_duplicates=dropped, redacted_pii=redacted)


def _with_helper_columns(frame: pd.DataFrame, input_col: str, target_col: str, contract: DataContract,
                         count_tokens: TokenCounter) -> pd.DataFrame:
    frame = frame.copy()
    for column in (input_col, target_col):
        if column not in frame.columns:
            continue
        values = frame[column]
        texts = [v if isinstance(v, str) else "" for v in values]
        frame[f"_{column}_tokens"] = count_tokens(texts) if texts else []
        frame[f"_{column}_pii"] = [",".join(find_pii(t, contract.pii_kinds)) for t in texts]
        frame[f"_{column}_foreign"] = [foreign_fraction(t, contract.scripts) for t in texts]
    if input_col in frame.columns:
        frame[KEY] = [near_duplicate_key(v) if isinstance(v, str) and v else f"\0{n}" for n, v in frame[input_col].items()]
        if SPLIT in frame.columns:
            splits_per_key = frame.groupby(KEY)[SPLIT].nunique()
            frame[CONFLICT] = frame[KEY].map(splits_per_key).fillna(1).astype(int) > 1
        else:
            frame[CONFLICT] = False
    return frame
