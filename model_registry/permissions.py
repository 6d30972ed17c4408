"""Who may write what in the model registry: every write belongs to one account; the rest are refused.

Pure functions over a described write, the version's tags and the approval config, used by the
genaiops-auth server app on every route (REST, the UI's ajax API, any body encoding MLflow
accepts). Deny by default: a write that no rule here gives to an account is refused to all.

| write | owner |
| --- | --- |
| create a registered model, register a version (lineage, gate tags, description) | the pipeline account |
| approval status and note | approvers (the watcher: only back to pending, or rejected) |
| `approved_by`, `approved_at` | nobody: the server stamps them |
| `approval_invalid`, `release_request`, `sagemaker.*` tags | the watcher account |
| `genaiops.release.*` tags, aliases (`champion`, `challenger`, any) | the release account |
| lineage and gate tags, descriptions after registration, stage transitions, renames, other tags | nobody |
| delete a version or a model, webhooks | the admin |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from contracts import tags as T
from model_registry.approval import APPROVAL_TAGS, LINEAGE_TAGS, ApprovalConfig, refuse_tag_write

Action = Literal[
    "create-model", "update-model", "rename-model", "delete-model", "set-model-tag", "delete-model-tag",
    "set-alias", "delete-alias", "create-version", "update-version", "transition-stage", "delete-version",
    "set-tag", "delete-tag", "webhook", "unknown-write", "indirect-write",
]

# What the pipeline writes when it registers a version, and nothing else.
REGISTRATION_TAGS = frozenset({
    T.APPROVAL_STATUS, T.GATE, T.GATE_SUMMARY, T.DATASET_HASH, T.DATASET_SOURCE, T.DATASET_ROWS,
    T.DATA_VALIDATION, T.BASE_MODEL, T.SOURCE_RUN, T.RUN_KEY, T.TRIGGERED_BY, T.COMPARED_CHAMPION,
    T.PACKAGE_URI, T.PACKAGE_DIGEST, T.PACKAGE_IMAGE, T.TRIGGER, T.TRIGGER_NAME, T.TRIGGER_DETAIL,
    T.BUILD_SERVED, T.BUILD_SPEEDUP, T.BUILDS,
})
WATCHER_TAGS = frozenset({T.APPROVAL_INVALID, T.RELEASE_REQUEST, T.SM_MODEL_PACKAGE, T.SM_SYNCED_STATUS,
                          T.SM_STATUS_CHANGE})
RELEASE_TAG_PREFIX = "genaiops.release."
ANONYMOUS = "anonymous"


class Write(BaseModel):
    """One write to the registry as the server received it."""

    model_config = ConfigDict(frozen=True)
    action: Action
    model: str
    version: str = ""
    key: str = ""  # the tag key or the alias
    value: str | None = None  # the new value (a tag's value, an alias's version); None for a delete
    run_id: str = ""  # a new version's source run
    route: str = ""  # "METHOD /path" it came by


def missing_fields(write: Write) -> list[str]:
    """The fields MLflow requires that the request left out (it cannot write anything without them)."""
    needed = {"model": write.model}
    if write.action in ("set-tag", "delete-tag", "update-version", "transition-stage", "delete-version"):
        needed["version"] = write.version
    if write.action in ("set-tag", "delete-tag", "set-model-tag", "delete-model-tag", "set-alias", "delete-alias"):
        needed["key" if "tag" in write.action else "alias"] = write.key
    if write.action in ("webhook", "unknown-write", "indirect-write"):
        needed = {}
    return [name for name, value in needed.items() if not value]


def refuse_write(user: str, write: Write, tags: Mapping[str, str] | None, config: ApprovalConfig,
                 target: Mapping[str, str] | None = None) -> str | None:
    """Why `user` may not make `write` (None: allowed).

    `tags` are the version's tags (None: the version does not exist, and MLflow will say so);
    `target` the tags of the version an alias is set to.
    """
    if user == ANONYMOUS:
        return "sign in first: the registry takes no anonymous writes"
    action = write.action
    if action == "unknown-write":
        return "this registry route is not one the genaiops-auth app knows; it is refused for everyone (deny by default)"
    if action == "indirect-write":
        return "this route writes to the registry on no account's behalf (sample data, prompt optimization); refused"
    if action == "transition-stage":
        return "stage transitions are refused: stages are replaced by the champion and challenger aliases"
    if action in ("update-model", "rename-model", "set-model-tag", "delete-model-tag"):
        return "a registered model's name, description and tags are set when the pipeline creates it; they cannot change"
    if action == "update-version":
        return "a version's description is written by the pipeline at registration only; it cannot change"
    if action in ("delete-model", "delete-version", "webhook"):
        return None if user == config.admin_account else f"only the admin {config.admin_account!r} may {_verb(action)}"
    if action == "create-model":
        return None if user == config.pipeline_account else \
            f"only the pipeline account {config.pipeline_account!r} may create registered models"
    if action == "create-version":
        return None if user == config.pipeline_account else \
            f"only the pipeline account {config.pipeline_account!r} may register versions"
    if action in ("set-alias", "delete-alias"):
        return _refuse_alias(user, write, target, config)
    return _refuse_tag(user, write, tags, config)


def _verb(action: str) -> str:
    return {"delete-model": "delete registered models", "delete-version": "delete versions",
            "webhook": "manage registry webhooks"}[action]


def _refuse_alias(user: str, write: Write, target: Mapping[str, str] | None, config: ApprovalConfig) -> str | None:
    if user != config.release_account:
        return f"only the release account {config.release_account!r} may move or delete the alias {write.key!r}"
    if write.action == "delete-alias" or target is None:
        return None  # a missing target version: MLflow answers 404
    if target.get(T.APPROVAL_STATUS) != T.APPROVED or target.get(T.GATE) != "passed":
        return (f"the alias {write.key!r} may point only at an approved version; version {write.value} is "
                f"{target.get(T.APPROVAL_STATUS, 'unknown')} with gate {target.get(T.GATE, 'unknown')}")
    return None


def _refuse_tag(user: str, write: Write, tags: Mapping[str, str] | None, config: ApprovalConfig) -> str | None:
    key = write.key
    if key in APPROVAL_TAGS:
        return refuse_tag_write(user, key, write.value, tags or {}, config)
    if key in WATCHER_TAGS:
        return None if user == config.watcher_account else \
            f"{key} is written by the watcher account {config.watcher_account!r} only"
    if key.startswith(RELEASE_TAG_PREFIX):
        return None if user == config.release_account else \
            f"{key} is written by the release account {config.release_account!r} only"
    if key in REGISTRATION_TAGS:
        return f"{key} is written by the pipeline at registration only; it cannot change"
    return f"the tag {key!r} is not one an account may write (deny by default)"


class RunEvidence(BaseModel):
    """What a version's source run shows: its tags, logged dataset hash and base model, and its gate report."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    run_key: str | None = None
    triggered_by: str | None = None
    dataset_hash: str | None = None
    base_model: str | None = None
    gate_passed: bool | None = None  # None: the run has no gate report
    gate_summary: str | None = None
    report_dataset_hash: str | None = None
    package_uri: str | None = None  # the package the run logged (params package.uri, .digest, .image)
    package_digest: str | None = None
    package_image: str | None = None
    builds: dict[str, str] = {}  # the serving builds the run logged (params package.build, .build_speedup, .builds)
    trigger: dict[str, str] = {}  # the run's trigger tags (kind, name, detail)


def refuse_registration(tags: Mapping[str, str], run_id: str, evidence: RunEvidence | None) -> str | None:
    """Why a new version's tags claim more than its source run shows (None: they agree).

    `evidence` is None when the source run does not exist.
    """
    stamped = sorted({T.APPROVED_BY, T.APPROVED_AT} & set(tags))
    if stamped:
        return f"{', '.join(stamped)} are stamped by the server on approval; a new version cannot carry them"
    unknown = sorted(set(tags) - REGISTRATION_TAGS)
    if unknown:
        return f"a new version carries only its registration tags; {', '.join(unknown)} cannot be set at registration"
    status = tags.get(T.APPROVAL_STATUS)
    if status not in (T.PENDING, T.REJECTED):
        return f"a new version starts {T.PENDING} (or {T.REJECTED} after a failed gate), not {status!r}"
    missing = [k for k in LINEAGE_TAGS if not tags.get(k)]
    if missing:
        return f"a new version needs its lineage tags; missing {', '.join(missing)}"
    if tags[T.SOURCE_RUN] != run_id:
        return f"{T.SOURCE_RUN} is {tags[T.SOURCE_RUN]!r} but the version is registered from run {run_id!r}"
    if evidence is None:
        return f"the source run {run_id!r} does not exist"
    claims = {T.RUN_KEY: evidence.run_key, T.TRIGGERED_BY: evidence.triggered_by,
              T.DATASET_HASH: evidence.dataset_hash, T.BASE_MODEL: evidence.base_model,
              T.PACKAGE_URI: evidence.package_uri, T.PACKAGE_DIGEST: evidence.package_digest,
              T.PACKAGE_IMAGE: evidence.package_image,
              **{key: evidence.builds.get(key) for key in (T.BUILD_SERVED, T.BUILD_SPEEDUP, T.BUILDS)},
              **{key: evidence.trigger.get(key) for key in (T.TRIGGER, T.TRIGGER_NAME, T.TRIGGER_DETAIL)}}
    for key, shown in claims.items():
        # A tag must agree with its run; one the run shows may not be left out (triggered_by decides who may approve).
        if (key in tags or shown is not None) and tags.get(key) != shown:
            return f"{key} is {tags.get(key)!r} but the source run shows {shown!r}"
    gate = tags[T.GATE]
    if gate not in ("passed", "failed"):
        return f"{T.GATE} must be passed or failed, not {gate!r}"
    if gate == "failed":
        return None if status == T.REJECTED else f"a version whose gate failed is registered {T.REJECTED}, not {status!r}"
    if evidence.gate_passed is None:
        return f"{T.GATE} says passed but the source run has no gate report"
    if not evidence.gate_passed:
        return f"{T.GATE} says passed but the source run's gate report failed ({(evidence.gate_summary or '')[:300]})"
    if evidence.report_dataset_hash != tags[T.DATASET_HASH]:
        return f"the gate report was made on dataset {evidence.report_dataset_hash!r}, not {tags[T.DATASET_HASH]!r}"
    if evidence.gate_summary is not None and tags[T.GATE_SUMMARY] != evidence.gate_summary[:5000]:
        return f"{T.GATE_SUMMARY} differs from the source run's gate report"
    return None
