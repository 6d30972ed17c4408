"""`mlflow server --app-name genaiops-auth`: MLflow's basic-auth app plus the approval rules.

MLflow records no author for a tag edit, so a self-declared `approved_by` proves nothing. This
app sits in front of every model-version tag write (REST API and the UI's ajax API alike):

- only members of the approvers group may write the approval tags, the pipeline's account never;
- `genaiops.approved_by` and `genaiops.approved_at` are stamped here from the logged-in user,
  whatever the request said, and cannot be written by anyone;
- a version whose gate failed, whose lineage is incomplete, or that the approver triggered
  (separation of duties) cannot be approved;
- a new version cannot be registered already approved;
- every approval-tag write, accepted or refused, is appended to the audit log (user, time,
  version, old -> new) in the artifact store and logged to the version's source run.

The policy comes from the JSON file named by MLFLOW_GENAIOPS_APPROVAL, which `genaiops ui`
writes from the pipeline config and settings.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from model_registry import tags as T
from model_registry.approval import (
    APPROVAL_TAGS,
    ApprovalConfig,
    AuditEntry,
    gate_digest,
    refuse_tag_write,
    refuse_version_create,
)
from model_registry.audit import AuditLog, now
from steps.artifacts import ArtifactStore, LocalStore, S3Store

log = logging.getLogger(__name__)

POLICY_ENV = "MLFLOW_GENAIOPS_APPROVAL"
SET_TAG, DELETE_TAG, CREATE = "/mlflow/model-versions/set-tag", "/mlflow/model-versions/delete-tag", \
    "/mlflow/model-versions/create"


@lru_cache(maxsize=1)
def policy() -> tuple[ApprovalConfig, AuditLog]:
    path = os.environ.get(POLICY_ENV)
    if not path:
        raise RuntimeError(f"{POLICY_ENV} must name the approval policy file (genaiops ui writes it)")
    document = json.loads(Path(path).read_text())
    return ApprovalConfig.model_validate(document["approval"]), AuditLog(_store(document["audit"]))


def _store(spec: dict[str, Any]) -> ArtifactStore:
    if spec["kind"] == "s3":
        import boto3

        return S3Store(spec["bucket"], boto3.client("s3", region_name=spec.get("region")),
                       prefix=spec.get("prefix", ""), kms_key_id=spec.get("kms_key_id"))
    return LocalStore(Path(spec["root"]))


def create_app(app: Any = None) -> Any:
    """The MLflow server app: basic auth, then the approval rules on top."""
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server.auth import create_app as basic_auth

    flask_app = app if app is not None else mlflow_flask_app
    served = basic_auth(flask_app)  # a FastAPI wrapper under uvicorn, the Flask app otherwise
    policy()  # fail at start, not at the first approval, if the policy is missing
    flask_app.before_request(_guard)  # runs after basic auth has authenticated the user
    flask_app.after_request(_record)
    return served


def _registry_store() -> Any:
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def _version_tags(name: str, version: str) -> dict[str, str]:
    return dict(_registry_store().get_model_version(name, version).tags or {})


def _request_fields() -> dict[str, Any]:
    from flask import request

    fields: dict[str, Any] = dict(request.args)
    fields.update(request.get_json(silent=True) or {})
    return fields


def _deny(message: str) -> Any:
    from flask import jsonify

    response = jsonify({"error_code": "PERMISSION_DENIED", "message": message})
    response.status_code = 403
    return response


def _guard() -> Any:
    """Refuse approval-tag writes the policy does not allow; remember the old value for the audit."""
    from flask import g, request

    path, user = request.path, getattr(g, "mlflow_authenticated_user", None)
    if user is None:
        return None
    if path.endswith(CREATE) and request.method == "POST":
        tags = {t.get("key"): t.get("value") for t in (_request_fields().get("tags") or [])}
        reason = refuse_version_create(tags)
        return _deny(reason) if reason else None
    is_set, is_delete = path.endswith(SET_TAG) and request.method == "POST", \
        path.endswith(DELETE_TAG) and request.method == "DELETE"
    if not (is_set or is_delete):
        return None
    fields = _request_fields()
    key = str(fields.get("key", ""))
    if key not in APPROVAL_TAGS:
        return None
    name, version = str(fields.get("name", "")), str(fields.get("version", ""))
    config, audit = policy()
    try:
        tags = _version_tags(name, version)
    except Exception:  # an unknown version: let MLflow answer with its own 404
        return None
    value = str(fields.get("value", "")) if is_set else None
    reason = refuse_tag_write(user, key, value, tags, config)
    entry = AuditEntry(model=name, version=version, user=user, at=now(), key=key, old=tags.get(key), new=value,
                       outcome="accepted" if reason is None else f"refused: {reason}", gate_digest=gate_digest(tags),
                       note=tags.get(T.APPROVAL_NOTE, "") if key == T.APPROVAL_STATUS else (value or ""))
    if reason is not None:
        audit.append(entry)
        log.warning("refused %s=%r on %s v%s by %s: %s", key, value, name, version, user, reason)
        return _deny(reason)
    g.genaiops_audit = entry
    return None


def _record(response: Any) -> Any:
    """After an accepted approval-tag write: stamp the approver, and append it to the audit log."""
    from flask import g

    entry: AuditEntry | None = getattr(g, "genaiops_audit", None)
    if entry is None or response.status_code >= 400:
        return response
    if entry.old == entry.new:
        return response  # setting a tag to the value it has is not a decision
    from mlflow.entities.model_registry import ModelVersionTag

    store = _registry_store()
    if entry.key == T.APPROVAL_STATUS:
        if entry.new in (T.APPROVED, T.REJECTED):
            store.set_model_version_tag(entry.model, entry.version, ModelVersionTag(T.APPROVED_BY, entry.user))
            store.set_model_version_tag(entry.model, entry.version, ModelVersionTag(T.APPROVED_AT, entry.at))
        else:  # back to pending: the previous decision no longer speaks for the version
            for key in (T.APPROVED_BY, T.APPROVED_AT):
                store.delete_model_version_tag(entry.model, entry.version, key)
    _, audit = policy()
    audit.append(entry)
    _log_to_source_run(entry)
    return response


def _log_to_source_run(entry: AuditEntry) -> None:
    """A copy of the entry among the source run's artifacts, next to the gate report it refers to."""
    try:
        from mlflow.server.handlers import _get_tracking_store
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        run_id = _version_tags(entry.model, entry.version).get(T.SOURCE_RUN)
        if not run_id:
            return
        run = _get_tracking_store().get_run(run_id)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{entry.at.replace(':', '')}-{entry.key}.json"
            path.write_text(entry.model_dump_json(indent=2))
            get_artifact_repository(run.info.artifact_uri).log_artifact(str(path), "audit")
    except Exception:  # the audit log in the artifact store is the record; this copy is a convenience
        log.exception("could not copy the audit entry to the source run of %s v%s", entry.model, entry.version)
