"""Feedback on captured answers: the answer a piece of feedback is about, read from the endpoint's data capture,
and the corrections that become the next retrain's records.

The same code on both backends: the endpoint's capture destination comes from `DescribeEndpoint` (the local
control plane or SageMaker), its files through the artifact store port (a folder or S3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from contracts.names import release_endpoint
from monitoring.drift import read_capture
from serving.endpoints import EndpointNotFoundError, served
from steps.artifacts import ArtifactStore
from steps.feedback import Correction, Feedback, FeedbackError, FeedbackStore

log = logging.getLogger(__name__)

ALL_OF_IT = 24 * 365 * 20  # hours: feedback may come long after the answer, so every capture file is read


class Answer(BaseModel):
    """One answer the endpoint gave a caller, as its data capture recorded it."""

    model_config = ConfigDict(frozen=True)
    endpoint: str
    inference_id: str
    event_id: str
    variant: str
    served: str = ""  # models:/NAME/VERSION the variant serves, when it still serves
    input: str
    output: str
    at: str


def find_answers(sagemaker: Any, capture_at: Callable[[str], ArtifactStore], endpoint: str,
                 inference_ids: Iterable[str]) -> dict[str, Answer]:
    """The answers returned to callers for each inference id the endpoint's capture holds (its newest, when an id
    was used twice). A shadow's copy is never one: its answer reached nobody."""
    wanted = set(inference_ids)
    try:
        described = served(sagemaker, endpoint)
    except EndpointNotFoundError as exc:
        raise FeedbackError(f"endpoint: {exc}") from None
    if not described.capture:
        raise FeedbackError(f"endpoint {endpoint}: it captures no requests (DataCaptureConfig is off), so no answer "
                            "can be named by its inference id")
    shadows = {v.name for v in described.variants if v.shadow}
    versions = {v.name: v.registered for v in described.variants}
    records, _ = read_capture(capture_at(described.capture), endpoint, None, settle_hours=ALL_OF_IT)
    by_event: dict[str, Any] = {}
    for record in records:  # oldest first: the caller's answer is captured before its shadow's copy comes back
        if record.inference_id not in wanted or record.error or not record.outputs or record.variant in shadows:
            continue
        if record.event_id not in by_event:
            by_event[record.event_id] = record
    found: dict[str, Answer] = {}
    for record in sorted(by_event.values(), key=lambda r: r.at):
        found[str(record.inference_id)] = Answer(
            endpoint=endpoint, inference_id=str(record.inference_id), event_id=record.event_id,
            variant=record.variant, served=versions.get(record.variant, ""), input=record.inputs[0] if record.inputs
            else "", output=record.outputs[0] if record.outputs else "", at=record.at.isoformat())
    return found


def find_answer(sagemaker: Any, capture_at: Callable[[str], ArtifactStore], endpoint: str,
                inference_id: str) -> Answer:
    """The answer the endpoint returned for `inference_id`; FeedbackError naming why when there is none."""
    found = find_answers(sagemaker, capture_at, endpoint, [inference_id]).get(inference_id)
    if found is None:
        raise FeedbackError(f"inference_id: endpoint {endpoint} captured no answer for {inference_id!r} (a request "
                            "names it with InferenceId; capture samples a share of requests; a failed request has "
                            "no answer to judge)")
    return found


def corrections(feedback: FeedbackStore, answers_of: Callable[[str, set[str]], dict[str, Answer]],
                model: str) -> list[Correction]:
    """The corrections people gave to answers of the model's release endpoint, each with the input it answers
    (`answers_of(endpoint, inference ids)`, asked only when there are corrections). A correction whose answer
    capture no longer holds is left out, with a warning."""
    endpoint = release_endpoint(model)
    given = [entry for entry in feedback.entries(endpoint) if entry.correction]
    if not given:
        return []
    try:
        answers = answers_of(endpoint, {entry.inference_id for entry in given})
    except FeedbackError as exc:
        log.warning("%d correction(s) left out: %s", len(given), exc)
        return []
    found = []
    for entry in given:
        answer = answers.get(entry.inference_id)
        if answer is None or not answer.input.strip():
            log.warning("feedback %s on %s/%s left out: capture holds no answer with its input", entry.id, endpoint,
                        entry.inference_id)
            continue
        found.append(_correction(entry, answer))
    return found


def _correction(entry: Feedback, answer: Answer) -> Correction:
    return Correction(feedback_id=entry.id, input=answer.input, target=str(entry.correction), endpoint=entry.endpoint,
                      inference_id=entry.inference_id, variant=answer.variant, served=answer.served, by=entry.by)
