"""The approval watcher: turns approvals that stand into release requests, exactly once.

Each pass re-checks every Approved version against the policy and the audit log. One that does
not stand is sent back to PendingManualApproval with `genaiops.approval_invalid` saying why; one
that stands gets a release request, written create-only (so seeing the same approval twice, or
restarting between writing the request and tagging the version, never makes a second one).
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict

from contracts import tags as T
from model_registry.approval import ApprovalConfig, AuditEntry, approval_stands, gate_digest
from model_registry.audit import AuditLog, now
from model_registry.mlflow_registry import MlflowRegistry
from steps.artifacts import ArtifactStore

log = logging.getLogger(__name__)


class ReleaseRequest(BaseModel):
    """What the release stage picks up: an approved, gated version and who approved it."""

    model_config = ConfigDict(frozen=True)
    model: str
    version: str
    source_run: str
    approved_by: str
    approved_at: str
    note: str
    gate_digest: str
    requested_at: str


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)
    version: str
    action: Literal["release requested", "already requested", "reverted"]
    detail: str


def request_key(model: str, version: str) -> str:
    return f"releases/requests/{model}/v{version}.json"


def watch_approvals(registry: MlflowRegistry, audit: AuditLog, store: ArtifactStore,
                    config: ApprovalConfig) -> list[Decision]:
    """One pass over the model's versions; returns what it did."""
    decisions = []
    for version in registry.versions():
        tags = version.tags
        if tags.get(T.APPROVAL_STATUS) != T.APPROVED:
            continue
        reason = approval_stands(tags, audit.server_entries(version.name, version.version), config,
                                 registry.runs.run_tags(tags.get(T.SOURCE_RUN, "")).get(T.RUN_KEY))
        if reason is not None:
            decisions.append(_revert(registry, audit, config, version.version, tags, reason))
            continue
        key = request_key(version.name, version.version)
        request = ReleaseRequest(model=version.name, version=version.version, source_run=tags[T.SOURCE_RUN],
                                 approved_by=tags[T.APPROVED_BY], approved_at=tags.get(T.APPROVED_AT, ""),
                                 note=tags.get(T.APPROVAL_NOTE, ""), gate_digest=gate_digest(tags), requested_at=now())
        created = store.put_new(key, request.model_dump_json(indent=2).encode())
        if tags.get(T.RELEASE_REQUEST) != store.uri(key):
            registry.set_tag(version.version, T.RELEASE_REQUEST, store.uri(key))
        action: Literal["release requested", "already requested"] = "release requested" if created else "already requested"
        if created:
            log.info("%s v%s: approved by %s, release requested (%s)", version.name, version.version,
                     request.approved_by, store.uri(key))
        decisions.append(Decision(version=version.version, action=action, detail=store.uri(key)))
    return decisions


def _revert(registry: MlflowRegistry, audit: AuditLog, config: ApprovalConfig, version: str,
            tags: dict[str, str], reason: str) -> Decision:
    log.warning("%s v%s: approval does not stand (%s); back to %s", registry.model_name, version, reason, T.PENDING)
    registry.set_tag(version, T.APPROVAL_INVALID, reason[:5000])
    registry.set_tag(version, T.APPROVAL_STATUS, T.PENDING)
    current = registry.get_version(version).tags
    for key in (T.APPROVED_BY, T.APPROVED_AT):  # the approval app removes them itself; a direct store does not
        if key in current:
            registry.delete_tag(version, key)
    audit.append(AuditEntry(model=registry.model_name, version=version, user=config.watcher_account, at=now(),
                            key=T.APPROVAL_STATUS, old=T.APPROVED, new=T.PENDING,
                            outcome=f"reverted: {reason}", gate_digest=gate_digest(tags)))
    return Decision(version=version, action="reverted", detail=reason)
