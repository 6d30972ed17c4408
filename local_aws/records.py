"""The control plane's records: one JSON document per model, endpoint config and endpoint, and the tags of each
resource by its ARN, under `<workspace>/sagemaker/`. Written atomically, so every reader sees a whole record."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from local_aws.endpoint import atomic_write
from local_aws.sagemaker_api import arn, timestamp, validation

ARN_KINDS = {"models": "model", "endpoint-configs": "endpoint-config", "endpoints": "endpoint"}
NOUNS = {"models": "model", "endpoint-configs": "endpoint configuration", "endpoints": "endpoint"}


class Records:
    """Models, endpoint configs and endpoints as SageMaker describes them; `_`-prefixed keys stay internal."""

    def __init__(self, root: Path, region: str) -> None:
        self.root, self.region = root, region
        self.lock = threading.RLock()

    def arn(self, kind: str, name: str) -> str:
        return arn(self.region, ARN_KINDS[kind], name)

    def _path(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.json"

    def read(self, kind: str, name: str) -> dict[str, Any] | None:
        path = self._path(kind, name)
        try:
            return dict(json.loads(path.read_text()))
        except FileNotFoundError:
            return None

    def write(self, kind: str, name: str, record: dict[str, Any]) -> None:
        atomic_write(self._path(kind, name), json.dumps(record, indent=2))

    def delete(self, kind: str, name: str) -> None:
        self._path(kind, name).unlink(missing_ok=True)

    def need(self, kind: str, name: str) -> dict[str, Any]:
        """The record, or SageMaker's ValidationException for a resource that does not exist."""
        record = self.read(kind, name)
        if record is None:
            raise validation(f'Could not find {NOUNS[kind]} "{self.arn(kind, name)}".')
        return record

    def refuse_existing(self, kind: str, name: str) -> None:
        if self.read(kind, name) is not None:
            noun = "endpoint configuration" if kind == "endpoint-configs" else ARN_KINDS[kind]
            raise validation(f'Cannot create already existing {noun} "{self.arn(kind, name)}".')

    def names(self, kind: str) -> list[str]:
        folder = self.root / kind
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []

    def update(self, kind: str, name: str, **changes: Any) -> None:
        """Change fields of a record (None removes one); stamps LastModifiedTime unless given. A record deleted
        meanwhile stays deleted."""
        with self.lock:
            record = self.read(kind, name)
            if record is None:
                return
            for key, value in changes.items():
                if value is None:
                    record.pop(key, None)
                else:
                    record[key] = value
            if "LastModifiedTime" not in changes:
                record["LastModifiedTime"] = timestamp()
            self.write(kind, name, record)


class Tags:
    """The tags of each resource, by ARN (`ListTags`)."""

    def __init__(self, records: Records) -> None:
        self.records = records

    def _path(self, resource: str) -> Path:
        return self.records.root / "tags" / f"{re.sub(r'[^a-zA-Z0-9.-]', '_', resource)}.json"

    def put(self, resource: str, tags: list[dict[str, str]] | None) -> None:
        """Keep a resource's tags, or with None forget them."""
        path = self._path(resource)
        if tags is None:
            path.unlink(missing_ok=True)
        elif tags:
            atomic_write(path, json.dumps({"ResourceArn": resource, "Tags": tags}))

    def list_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        resource = params["ResourceArn"]
        kind, _, name = resource.rsplit(":", 1)[-1].partition("/")
        kinds = {v: k for k, v in ARN_KINDS.items()}
        if kind not in kinds or not any(n.lower() == name for n in self.records.names(kinds[kind])):
            raise validation(f"Could not find resource {resource!r}.")
        path = self._path(resource)
        tags = json.loads(path.read_text())["Tags"] if path.exists() else []
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults", 50))
        answer: dict[str, Any] = {"Tags": tags[start:start + size]}
        if start + size < len(tags):
            answer["NextToken"] = str(start + size)
        return answer
