"""Data capture in SageMaker's JSON Lines format, written off the request path.

One record per captured invocation:
`{"captureData": {"endpointInput": {...}, "endpointOutput": {...}}, "eventMetadata": {"eventId",
"inferenceTime", "inferenceId"?}, "eventVersion": "0"}`, in files laid out as SageMaker lays
them out: `<root>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/<minute>-<second>-<uuid>.jsonl`
(one file per writer and hour).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def capture_record(request: bytes, response: bytes, *, content_type: str, accept: str,
                   inference_id: str | None, when: datetime, error: bool = False,
                   event_id: str | None = None) -> dict[str, Any]:
    """One capture line, in SageMaker's format. A shadow's copy carries the event id of the production
    request it mirrors, so monitors can pair their answers."""
    def payload(data: bytes, kind: str, mode: str) -> dict[str, str]:
        try:
            return {"observedContentType": kind, "mode": mode, "data": data.decode("utf-8"), "encoding": "JSON"}
        except UnicodeDecodeError:
            import base64

            return {"observedContentType": kind, "mode": mode, "data": base64.b64encode(data).decode(),
                    "encoding": "BASE64"}

    metadata: dict[str, Any] = {"eventId": event_id or str(uuid.uuid4()),
                                "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
    if inference_id:
        metadata["inferenceId"] = inference_id
    if error:
        metadata["error"] = True
    return {"captureData": {"endpointInput": payload(request, content_type, "INPUT"),
                            "endpointOutput": payload(response, accept, "OUTPUT")},
            "eventMetadata": metadata, "eventVersion": "0"}


class CaptureWriter:
    """Appends capture records from a background thread, so callers never wait on the disk."""

    def __init__(self, root: str | Path, endpoint: str) -> None:
        self.root, self.endpoint = Path(root), endpoint
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=10_000)
        self._files: dict[tuple[str, str], IO[str]] = {}
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="data-capture", daemon=True)
        self._thread.start()

    def write(self, variant: str, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((variant, record))
        except queue.Full:  # never block a caller on capture; count what was lost
            self.dropped += 1

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        for handle in self._files.values():
            handle.close()

    def flush(self) -> None:
        """Wait until everything written so far is on disk."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                variant, record = item
                self._file(variant).write(json.dumps(record, separators=(",", ":")) + "\n")
                if self._queue.empty():
                    for handle in self._files.values():
                        handle.flush()
            except Exception:  # a full disk must not take the endpoint down
                log.exception("data capture write failed")
            finally:
                self._queue.task_done()

    def _file(self, variant: str) -> IO[str]:
        now = datetime.now(UTC)
        hour = now.strftime("%Y/%m/%d/%H")
        handle = self._files.get((variant, hour))
        if handle is None:
            for key in [k for k in self._files if k[0] == variant]:
                self._files.pop(key).close()
            folder = self.root / self.endpoint / variant / hour
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / f"{now.strftime('%M-%S')}-{uuid.uuid4().hex[:12]}.jsonl").open("a", encoding="utf-8")
            self._files[(variant, hour)] = handle
        return handle
