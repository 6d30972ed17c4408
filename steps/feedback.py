"""People's judgements of captured answers, and the corrections that become training data.

A piece of feedback names one captured answer by its endpoint and inference id (the `InferenceId` the
application sent with the request, which data capture records), says whether the answer was good or bad, and
may carry a correction: the answer it should have been. Each person's judgement of one answer is one object in
the feedback store, so judging again replaces it and two people's judgements both count. Only the approval
server writes the store (it signs the writer in); flows read it.

Corrections become a data source: each one, paired with the captured input it answers, is a record of the next
retrain's dataset (`Correction`), with its feedback id as lineage. The source's content hash covers them, so a new
correction is new data to the data watcher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steps.artifacts import ArtifactStore
from steps.pii import PII_KINDS, find_pii

log = logging.getLogger(__name__)

Rating = Literal["good", "bad"]
RATINGS: tuple[Rating, ...] = ("good", "bad")
PREFIX = "feedback"
MAX_CORRECTION_CHARS = 20_000
# SageMaker's names: an endpoint name, and InvokeEndpoint's InferenceId (1 to 64 printable characters).
ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
INFERENCE_ID = re.compile(r"^\S[\x20-\x7e]{0,63}$")


class FeedbackError(ValueError):
    """Feedback that cannot be recorded; the message names the field and why."""


class Feedback(BaseModel):
    """One person's judgement of one captured answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    endpoint: str
    inference_id: str
    rating: Rating
    correction: str | None = None
    by: str = Field(description="the signed-in account, stamped by the server")
    at: str = Field(description="when it was recorded (UTC, ISO 8601)")

    @field_validator("at")
    @classmethod
    def _a_time(cls, at: str) -> str:
        datetime.fromisoformat(at)  # a ValueError here is the record's validation error, never a reader's crash
        return at

    @property
    def id(self) -> str:
        """Stable per (endpoint, inference id, person): judging again replaces the earlier judgement."""
        return feedback_id(self.endpoint, self.inference_id, self.by)

    @property
    def when(self) -> datetime:
        at = datetime.fromisoformat(self.at)
        return at if at.tzinfo else at.replace(tzinfo=UTC)


def feedback_id(endpoint: str, inference_id: str, by: str) -> str:
    return hashlib.sha256("\0".join((endpoint, inference_id, by)).encode()).hexdigest()[:16]


def check_feedback(endpoint: object, inference_id: object, rating: object, correction: object) -> list[str]:
    """What is wrong with a piece of feedback, field by field (empty: nothing)."""
    problems = []
    if not isinstance(endpoint, str) or not ENDPOINT_NAME.match(endpoint):
        problems.append(f"endpoint: {endpoint!r} is not an endpoint name (letters, digits and hyphens, at most 63)")
    if not isinstance(inference_id, str) or not INFERENCE_ID.match(inference_id):
        problems.append(f"inference_id: {inference_id!r} is not an inference id (1 to 64 printable ASCII "
                        "characters, not starting with a space)")
    if rating not in RATINGS:
        problems.append(f"rating: {rating!r} is not one of {', '.join(RATINGS)}")
    if correction is not None:
        if not isinstance(correction, str) or not correction.strip():
            problems.append("correction: give the text the answer should have been, or leave it out")
        elif len(correction) > MAX_CORRECTION_CHARS:
            problems.append(f"correction: {len(correction)} characters; at most {MAX_CORRECTION_CHARS}")
        elif rating == "good":
            problems.append("correction: a correction goes with rating bad (a good answer needs none)")
        else:
            kinds = find_pii(correction, PII_KINDS)
            if kinds:
                problems.append(f"correction: it holds personal data ({', '.join(kinds)}); corrections become "
                                "training data, so leave it out")
    return problems


class FeedbackStore:
    """Feedback in an artifact store, one object per person and answer: `feedback/<endpoint>/<id>.json`."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def record(self, feedback: Feedback) -> str:
        """Write it (replacing the same person's earlier judgement of the same answer); its URI."""
        return self.store.put(f"{PREFIX}/{feedback.endpoint}/{feedback.id}.json",
                              feedback.model_dump_json(indent=2).encode("utf-8"))

    def entries(self, endpoint: str, since: datetime | None = None) -> list[Feedback]:
        """The endpoint's feedback (recorded at or after `since`), oldest first; unreadable objects are skipped."""
        found = []
        for key in self.store.list_keys(f"{PREFIX}/{endpoint}/"):
            if not key.endswith(".json"):
                continue
            try:
                entry = Feedback.model_validate_json(self.store.get(key))
            except (ValidationError, ValueError) as exc:
                log.warning("%s: not a feedback record; skipped (%s)", self.store.uri(key), exc)
                continue
            if entry.endpoint == endpoint and (since is None or entry.when >= since):
                found.append(entry)
        return sorted(found, key=lambda e: (e.at, e.id))


class Correction(BaseModel):
    """A correction as a training record: the captured input and the corrected answer, with where it came from."""

    model_config = ConfigDict(frozen=True)
    feedback_id: str
    input: str
    target: str
    endpoint: str
    inference_id: str
    variant: str = ""
    served: str = Field("", description="models:/NAME/VERSION of the version whose answer was corrected")
    by: str = ""


def corrections_bytes(corrections: Sequence[Correction]) -> bytes:
    """Their canonical JSON Lines (sorted by feedback id): what the dataset's source hash covers."""
    ordered = sorted(corrections, key=lambda c: c.feedback_id)
    return "".join(json.dumps(c.model_dump(), sort_keys=True, ensure_ascii=False) + "\n" for c in ordered).encode()


def source_hash(data: bytes, corrections: Sequence[Correction] = ()) -> str:
    """The content hash of a data source together with the corrections added to it (the source's own sha256 when
    there are none, so datasets prepared before feedback keep their hash)."""
    digest = hashlib.sha256(data).hexdigest()
    if not corrections:
        return digest
    return hashlib.sha256(f"{digest}|corrections|".encode() + corrections_bytes(corrections)).hexdigest()
