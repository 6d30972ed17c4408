"""The approval policy: who may write approval tags, and when an approval stands.

Pure functions over tags and an audit log, shared by the MLflow server app (which refuses bad
writes as they happen) and the approval watcher (which re-checks every approval before it
becomes a release request, and reverts one that does not stand).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import names as N
from contracts import tags as T

APPROVAL_TAGS = frozenset({T.APPROVAL_STATUS, T.APPROVAL_NOTE, T.APPROVED_BY, T.APPROVED_AT})
STATUSES = (T.PENDING, T.APPROVED, T.REJECTED)
LINEAGE_TAGS = (T.DATASET_HASH, T.BASE_MODEL, T.SOURCE_RUN, T.RUN_KEY, T.GATE, T.GATE_SUMMARY)


DEFAULT_USERS = ("alice", "bob", N.PIPELINE_ACCOUNT, N.WATCHER_ACCOUNT, N.RELEASE_ACCOUNT, N.FEEDBACK_ACCOUNT)


class ApprovalConfig(BaseModel):
    """Who approves, who trains, and whether they must differ."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    approvers: list[str] = Field(default_factory=lambda: ["alice"], min_length=1,
                                 description="the approvers group: users who may approve or reject versions")
    pipeline_account: str = Field(N.PIPELINE_ACCOUNT, description="the account training runs use; never approves")
    watcher_account: str = Field(N.WATCHER_ACCOUNT,
                                 description="the approval watcher's account; may only send a version back to pending, "
                                             "or mark it rejected when it was rejected in the SageMaker Model Registry")
    release_account: str = Field(N.RELEASE_ACCOUNT,
                                 description="the release's account; the only one that moves or deletes aliases "
                                             "(champion, challenger) and writes genaiops.release.* tags")
    admin_account: str = Field(N.ADMIN_ACCOUNT, description="the MLflow admin; the only one that may delete versions or models")
    feedback_accounts: list[str] = Field(default_factory=lambda: [N.FEEDBACK_ACCOUNT],
                                         description="who may record feedback on captured answers (applications' "
                                                     "accounts, or reviewers'); nobody else")
    separation_of_duties: bool = Field(True, description="an approver may not approve a version they triggered")
    users: list[str] = Field(default_factory=lambda: list(DEFAULT_USERS),
                             description="accounts `make ui` creates in the local user store (the admin always)")
    sign_in: Literal["password", "load-balancer"] = Field(
        "password", description="how people sign in: `password`, an account of `users` in the server's user store; "
                                "`load-balancer`, through the approval server's public load balancer (Cognito on "
                                "AWS), named by its identity claim (approvers are those names, not in `users`), "
                                "while only the service accounts have passwords")
    demo: bool = Field(True, description="`genaiops run` (make run) approves a passing candidate itself, as the demo "
                                         "approver, through the approval server and labelled a demo approval; false: "
                                         "the run stops at PendingManualApproval until a person approves in the UI")
    demo_account: str = Field("demo-approver", description="the demo approver; in the approvers group while demo is on")

    @model_validator(mode="before")
    @classmethod
    def _demo_approver(cls, data: object) -> object:
        """While demo is on, the demo account is an approver (and a user), so its approval meets every rule."""
        if not isinstance(data, dict) or not data.get("demo", True):
            return data
        account = data.get("demo_account", "demo-approver")
        approvers, users = list(data.get("approvers", ["alice"])), list(data.get("users", DEFAULT_USERS))
        return {**data, "approvers": approvers + [account] * (account not in approvers),
                "users": users + [account] * (account not in users)}

    @model_validator(mode="after")
    def _accounts_are_separate(self) -> ApprovalConfig:
        services = {"pipeline_account": self.pipeline_account, "watcher_account": self.watcher_account,
                    "release_account": self.release_account, "admin_account": self.admin_account}
        for field, account in services.items():
            if account in self.approvers:
                raise ValueError(f"{field} {account!r} cannot be in approvers")
        shared = sorted({a for a in services.values() if list(services.values()).count(a) > 1})
        if shared:
            raise ValueError(f"each service account must be its own: {', '.join(shared)} is used twice")
        taken = sorted(set(self.feedback_accounts) & ({*services.values(), *self.approvers}))
        if taken:
            raise ValueError(f"feedback_accounts {taken} must be accounts of their own (not a service account or an "
                             "approver)")
        missing = sorted(set(self.approvers) - set(self.users))
        if missing and self.sign_in == "password":
            raise ValueError(f"approvers {missing} are not in users")
        missing = sorted(set(self.feedback_accounts) - set(self.users))
        if missing and self.sign_in == "password":
            raise ValueError(f"feedback_accounts {missing} are not in users")
        return self


def gate_digest(tags: Mapping[str, str]) -> str:
    """A short hash of what the approver saw: the gate verdict, its checks and the dataset."""
    material = "|".join(tags.get(k, "") for k in (T.GATE, T.GATE_SUMMARY, T.DATASET_HASH, T.RUN_KEY))
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def refuse_tag_write(user: str, key: str, value: str | None, tags: Mapping[str, str],
                     config: ApprovalConfig) -> str | None:
    """Why the server must refuse `user` writing `key` (None: allowed). `value` None is a delete."""
    if key not in APPROVAL_TAGS:
        return None
    if key in (T.APPROVED_BY, T.APPROVED_AT):
        return f"{key} is stamped by the server from the logged-in approver; it cannot be written"
    if user == config.pipeline_account:
        return f"the pipeline account {user!r} cannot write approval tags"
    if user == config.watcher_account:
        if key == T.APPROVAL_STATUS and value in (T.PENDING, T.REJECTED):
            return None  # reverting an approval that does not stand, or mirroring a revocation
        return f"the watcher account {user!r} may only set {T.APPROVAL_STATUS} to {T.PENDING} or {T.REJECTED}"
    if user not in config.approvers:
        return f"{user!r} is not in the approvers group"
    if value is None:
        return f"{key} cannot be deleted; set {T.APPROVAL_STATUS} to {T.PENDING} instead"
    if key == T.APPROVAL_STATUS:
        if value not in STATUSES:
            return f"{T.APPROVAL_STATUS} must be one of {', '.join(STATUSES)}, not {value!r}"
        if value == T.APPROVED:
            return why_not_approvable(user, tags, config)
    return None


def why_not_approvable(user: str, tags: Mapping[str, str], config: ApprovalConfig) -> str | None:
    """Why `user` cannot approve a version with these tags (None: they can)."""
    missing = [k for k in LINEAGE_TAGS if not tags.get(k)]
    if missing:
        return f"the version's lineage is incomplete (missing {', '.join(missing)})"
    if tags[T.GATE] != "passed":
        return f"the version failed its evaluation gates ({tags[T.GATE_SUMMARY][:300]})"
    if config.separation_of_duties and tags.get(T.TRIGGERED_BY) == user:
        return f"{user!r} triggered the training run of this version and cannot also approve it"
    return None


class AuditEntry(BaseModel):
    """One registry write the server accepted (or refused), or a watcher decision, as the audit log keeps it."""

    model_config = ConfigDict(frozen=True)
    model: str
    version: str
    user: str
    at: str  # ISO 8601, UTC
    key: str  # the tag key or the alias ("" for writes of neither)
    old: str | None
    new: str | None
    outcome: str = "accepted"  # or "refused: <reason>", or a watcher decision
    gate_digest: str = ""
    note: str = ""
    action: str = "set-tag"  # what was written: set-tag, set-alias, create-version, ... (permissions.Action)
    route: str = ""  # "METHOD /path" the write came by


def approval_stands(tags: Mapping[str, str], audit: Sequence[AuditEntry], config: ApprovalConfig,
                    source_run_key: str | None) -> str | None:
    """Why an Approved/Rejected status does not stand (None: it does). Re-checked by the watcher."""
    status = tags.get(T.APPROVAL_STATUS)
    approver = tags.get(T.APPROVED_BY, "")
    accepted = [e for e in audit if e.key == T.APPROVAL_STATUS and e.new == status and e.outcome == "accepted"]
    if not accepted:
        return f"no server-recorded {status} decision in the audit log (the tag was not set through the approval app)"
    last = accepted[-1]
    if approver != last.user:
        return f"{T.APPROVED_BY} says {approver!r} but the audit log records {last.user!r}"
    if approver not in config.approvers:
        return f"{approver!r} is not in the approvers group"
    if status == T.APPROVED:
        reason = why_not_approvable(approver, tags, config)
        if reason:
            return reason
        if last.gate_digest and last.gate_digest != gate_digest(tags):
            return "the gate report or lineage changed after the approval"
        if source_run_key is not None and source_run_key != tags.get(T.RUN_KEY):
            return "the version's run key does not match its source run"
    return None
