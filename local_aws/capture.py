"""Data capture in SageMaker's JSON Lines format, written off the request path, where the endpoint config's
`DataCaptureConfig.DestinationS3Uri` says: a folder (`file://`, or a path) or S3 (`s3://bucket/prefix`).

One record per captured invocation:
`{"captureData": {"endpointInput": {...}, "endpointOutput": {...}}, "eventMetadata": {"eventId",
"inferenceTime", "inferenceId"?}, "eventVersion": "0"}`, laid out as SageMaker lays it out:
`<destination>/<endpoint>/<variant>/<yyyy>/<mm>/<dd>/<hh>/<minute>-<second>-<uuid>.jsonl`. In a folder, one file
per writer and hour, appended to; in S3, whose objects are written whole, one object per batch of records (what
came while the writer was busy, at most a few seconds' worth), as SageMaker uploads its buffered files.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

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
    """Appends capture records from a background thread, so callers never wait on the disk or on S3."""

    def __init__(self, destination: str | Path, endpoint: str) -> None:
        self.destination, self.endpoint = str(destination), endpoint
        self.target: _Target = _Objects(self.destination, endpoint) if self.destination.startswith("s3://") \
            else _Files(_folder(self.destination), endpoint)
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=10_000)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="data-capture", daemon=True)
        self._thread.start()

    @property
    def location(self) -> str:
        """Where this endpoint's capture goes: the folder, or the S3 URI, of `<destination>/<endpoint>`."""
        return self.target.location

    def write(self, variant: str, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((variant, record))
        except queue.Full:  # never block a caller on capture; count what was lost
            self.dropped += 1

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def flush(self) -> None:
        """Wait until everything written so far is stored."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    self._store()
                    self.target.close()
                    return
                variant, record = item
                self.target.add(variant, json.dumps(record, separators=(",", ":")))
                if self._queue.empty() or self.target.due():
                    self._store()
            finally:
                self._queue.task_done()

    def _store(self) -> None:
        try:
            self.target.store()
        except Exception:  # a full disk or an unreachable bucket must not take the endpoint down
            log.exception("data capture of %s: could not store to %s", self.endpoint, self.target.location)


def _folder(destination: str) -> Path:
    if destination.startswith("file://"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Path(url2pathname(urlparse(destination).path))
    return Path(destination)


def _key(variant: str, now: datetime) -> str:
    return f"{variant}/{now.strftime('%Y/%m/%d/%H')}/{now.strftime('%M-%S')}-{uuid.uuid4().hex[:12]}.jsonl"


class _Target(Protocol):
    location: str

    def add(self, variant: str, line: str) -> None: ...
    def due(self) -> bool: ...
    def store(self) -> None: ...
    def close(self) -> None: ...


class _Files:
    """One file per variant and hour, appended to and flushed whenever the queue runs dry."""

    def __init__(self, root: Path, endpoint: str) -> None:
        self.root, self.endpoint = root, endpoint
        self.location = str(root / endpoint)
        self._files: dict[tuple[str, str], IO[str]] = {}

    def add(self, variant: str, line: str) -> None:
        self._file(variant).write(line + "\n")

    def due(self) -> bool:
        return False

    def store(self) -> None:
        for handle in self._files.values():
            handle.flush()

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def _file(self, variant: str) -> IO[str]:
        now = datetime.now(UTC)
        hour = now.strftime("%Y/%m/%d/%H")
        handle = self._files.get((variant, hour))
        if handle is None:
            for key in [k for k in self._files if k[0] == variant]:
                self._files.pop(key).close()
            path = self.root / self.endpoint / _key(variant, now)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a", encoding="utf-8")
            self._files[(variant, hour)] = handle
        return handle


class _Objects:
    """S3: the records of a batch as one object per variant (S3 objects are written whole)."""

    MAX_LINES, MAX_AGE_S = 1000, 5.0

    def __init__(self, destination: str, endpoint: str) -> None:
        import boto3

        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        self.bucket, self.prefix = bucket, "/".join(p for p in (prefix.strip("/"), endpoint) if p)
        self.location = f"s3://{bucket}/{self.prefix}"
        self.client = boto3.client("s3")  # the region and endpoint of the environment, as the execution role's
        self._lines: dict[str, list[str]] = {}
        self._since = time.monotonic()

    def add(self, variant: str, line: str) -> None:
        if not self._lines:
            self._since = time.monotonic()
        self._lines.setdefault(variant, []).append(line)

    def due(self) -> bool:
        return sum(map(len, self._lines.values())) >= self.MAX_LINES or time.monotonic() - self._since > self.MAX_AGE_S

    def store(self) -> None:
        batch, self._lines = self._lines, {}
        now = datetime.now(UTC)
        for variant, lines in batch.items():
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{_key(variant, now)}",
                                   Body=("\n".join(lines) + "\n").encode(), ContentType="application/jsonlines")

    def close(self) -> None:
        """Nothing is held open."""
