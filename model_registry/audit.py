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
    """Audit entries of every model, under `audit/<model>/` in the artifact store.

    Two stores may hold them. `store` is where this writer appends: the approval server its own (on AWS a bucket
    with S3 Object Lock that only the server's role may write), a flow the artifact store (watcher and release
    decisions). `server` is the approval server's store as a flow reads it: the approval decisions an approval's
    standing is judged by (`server_entries`) come from there alone, so an entry a flow (or training code) could
    write never vouches for an approval. Without `server` (one store, as on a laptop) both are `store`."""

    def __init__(self, store: ArtifactStore, server: ArtifactStore | None = None) -> None:
        self.store, self.server = store, server

    def append(self, entry: AuditEntry) -> bool:
        """Record an entry; False if the identical entry is already there (a retried write)."""
        body = entry.model_dump_json().encode()
        digest = hashlib.sha256(body).hexdigest()[:12]
        stamp = entry.at.replace(":", "").replace("-", "")
        key = f"{PREFIX}/{_safe(entry.model)}/{stamp}-v{_safe(entry.version)}-{digest}.json"
        return self.store.put_new(key, body)

    def entries(self, model: str, version: str | None = None) -> list[AuditEntry]:
        """Every entry of the model (or one version), from both stores, in time order."""
        stores = [self.store] if self.server is None else [self.server, self.store]
        entries = [e for store in stores for e in _read(store, model)]
        entries.sort(key=lambda e: e.at)
        return [e for e in entries if version is None or e.version == version]

    def server_entries(self, model: str, version: str | None = None) -> list[AuditEntry]:
        """The approval server's entries only: what an approval's standing is judged by."""
        entries = sorted(_read(self.server or self.store, model), key=lambda e: e.at)
        return [e for e in entries if version is None or e.version == version]


def _read(store: ArtifactStore, model: str) -> list[AuditEntry]:
    return [AuditEntry.model_validate_json(store.get(key)) for key in store.list_keys(f"{PREFIX}/{_safe(model)}")]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
