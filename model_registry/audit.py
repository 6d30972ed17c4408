"""The append-only audit log of registry writes and approval decisions, one immutable object per entry.

Each entry is written with a create-only put (a conditional write on S3), so an entry can be
added but never replaced; reading the log lists the entries in time order.
"""

from __future__ import annotations

import datetime
import hashlib
import re

from model_registry.approval import AuditEntry
from steps.artifacts import ArtifactStore

PREFIX = "audit"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


class AuditLog:
    """Audit entries of every model, under `audit/<model>/` in the artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def append(self, entry: AuditEntry) -> bool:
        """Record an entry; False if the identical entry is already there (a retried write)."""
        body = entry.model_dump_json().encode()
        digest = hashlib.sha256(body).hexdigest()[:12]
        stamp = entry.at.replace(":", "").replace("-", "")
        key = f"{PREFIX}/{_safe(entry.model)}/{stamp}-v{_safe(entry.version)}-{digest}.json"
        return self.store.put_new(key, body)

    def entries(self, model: str, version: str | None = None) -> list[AuditEntry]:
        entries = [AuditEntry.model_validate_json(self.store.get(key))
                   for key in self.store.list_keys(f"{PREFIX}/{_safe(model)}")]
        entries.sort(key=lambda e: e.at)
        return [e for e in entries if version is None or e.version == version]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
