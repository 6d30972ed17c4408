"""Traffic from held-out records, through boto3's `sagemaker-runtime` client: what a shadow or A/B test needs
before the rollout can decide. Each request sends the record's raw input (the endpoint applies the template) with
the record's id as its `InferenceId`, which data capture records and which names the reference the rollout scores
the answers against."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from steps.data import Example
from steps.prompts import raw_input

if TYPE_CHECKING:
    from serving.promotion import Rollout, RolloutStatus


class Sent(BaseModel):
    model_config = ConfigDict(frozen=True)
    requests: int = 0
    failed: int = 0
    last_error: str = ""

    def __add__(self, other: Sent) -> Sent:
        return Sent(requests=self.requests + other.requests, failed=self.failed + other.failed,
                    last_error=other.last_error or self.last_error)


def send(runtime: Any, endpoint: str, records: Sequence[Example], template: str,
         progress: Callable[[str], None] | None = None) -> Sent:
    """One request per record, in order. An error answer is counted, not raised: it is evidence the endpoint
    records for the rollout decision."""
    from botocore.exceptions import ClientError

    sent = Sent()
    for index, record in enumerate(records, 1):
        body = json.dumps({"inputs": raw_input(template, record.prompt)})
        try:
            runtime.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json",
                                    Accept="application/json", InferenceId=record.id[:64])["Body"].read()
            sent += Sent(requests=1)
        except ClientError as exc:
            sent += Sent(requests=1, failed=1, last_error=str(exc))
        if progress is not None and (index % 10 == 0 or index == len(records)):
            progress(f"{endpoint}: {index}/{len(records)} held-out requests sent ({sent.failed} failed)")
    return sent


def until_mirrored(rollout: Rollout, status: RolloutStatus, progress: Callable[[str], None],
                   stall_s: float = 300.0) -> None:
    """Until the shadow has answered its copies of the requests so far. A local shadow steps aside while
    production works, so back-to-back traffic leaves its copies queued; they are answered once traffic pauses.
    Gives up only when the shadow makes no progress for `stall_s` (a stuck shadow is evidence too)."""
    assert status.started and status.champion and status.challenger
    since = datetime.fromisoformat(status.started)
    answered, moved = -1, time.monotonic()
    while True:
        champion = rollout.evidence.answered(status.endpoint, status.champion, since)
        shadow = rollout.evidence.answered(status.endpoint, status.challenger, since)
        if shadow >= champion:
            return
        if shadow != answered:
            answered, moved = shadow, time.monotonic()
            progress(f"{status.endpoint}: the shadow {status.challenger} has answered {shadow} of {champion} copies")
        elif time.monotonic() - moved > stall_s:
            progress(f"{status.endpoint}: the shadow {status.challenger} answered nothing for {stall_s:.0f} s")
            return
        time.sleep(1.0)
