"""`mlflow server --app-name genaiops-auth`: MLflow's basic-auth app with every registry write owned by one account.

MLflow records no author for a registry write, and its permissions let anyone with EDIT move an
alias or rewrite a gate tag. This app decides every write to the model registry itself, before
MLflow's own checks, whatever route it comes by (the REST API, the UI's ajax API) and however its
body is encoded: it reads each request with MLflow's own parser, so it judges exactly what the
handler would write.

- who may write what is `model_registry.permissions` (deny by default: the rest are refused);
- a new version's gate and lineage tags must agree with its source run (gate report, dataset hash);
- `genaiops.approved_by` / `approved_at` are stamped here from the signed-in approver;
- every registry write, accepted or refused (anonymous ones too), is appended to the audit log
  with the route it came by; approval decisions are also copied to the version's source run;
- when the registry cannot be read to decide, the write is refused with 503 (fail closed);
- `POST /api/2.0/genaiops/feedback` (and its `/ajax-api/` twin) records a person's judgement of one captured
  answer (`steps.feedback`) for the feedback accounts alone, stamped with the signed-in account and audited.

The policy comes from the JSON file named by MLFLOW_GENAIOPS_APPROVAL, which `genaiops ui` writes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from contracts import tags as T
from model_registry.approval import APPROVAL_TAGS, ApprovalConfig, AuditEntry, gate_digest
from model_registry.audit import AuditLog, now
from model_registry.evidence import RegistryUnavailableError, run_evidence
from model_registry.permissions import ANONYMOUS, Write, missing_fields, refuse_registration, refuse_write
from steps.artifacts import ArtifactStore, LocalStore, S3Store
from steps.feedback import Feedback, FeedbackStore, check_feedback

log = logging.getLogger(__name__)

POLICY_ENV = "MLFLOW_GENAIOPS_APPROVAL"

# MLflow's registry handlers (by view function, so every path and prefix that reaches one is covered),
# the request message each parses, and the write it makes. A registry read is not listed.
WRITES: dict[str, tuple[str, str]] = {
    "_create_registered_model": ("CreateRegisteredModel", "create-model"),
    "_update_registered_model": ("UpdateRegisteredModel", "update-model"),
    "_rename_registered_model": ("RenameRegisteredModel", "rename-model"),
    "_delete_registered_model": ("DeleteRegisteredModel", "delete-model"),
    "_set_registered_model_tag": ("SetRegisteredModelTag", "set-model-tag"),
    "_delete_registered_model_tag": ("DeleteRegisteredModelTag", "delete-model-tag"),
    "_set_registered_model_alias": ("SetRegisteredModelAlias", "set-alias"),
    "_delete_registered_model_alias": ("DeleteRegisteredModelAlias", "delete-alias"),
    "_create_model_version": ("CreateModelVersion", "create-version"),
    "_update_model_version": ("UpdateModelVersion", "update-version"),
    "_transition_stage": ("TransitionModelVersionStage", "transition-stage"),
    "_delete_model_version": ("DeleteModelVersion", "delete-version"),
    "_set_model_version_tag": ("SetModelVersionTag", "set-tag"),
    "_delete_model_version_tag": ("DeleteModelVersionTag", "delete-tag"),
    "_create_webhook": ("", "webhook"),
    "_update_webhook": ("", "webhook"),
    "_delete_webhook": ("", "webhook"),
    "_test_webhook": ("", "webhook"),
    # Routes that register models, prompts or aliases indirectly (sample data, a prompt-optimization job that
    # registers what it finds): they write to the registry without a caller the rules could judge.
    "_generate_demo": ("", "indirect-write"),
    "_delete_demo": ("", "indirect-write"),
    "_create_prompt_optimization_job": ("", "indirect-write"),
}
REGISTRY_PATHS = ("/mlflow/registered-models", "/mlflow/model-versions", "/mlflow/webhooks")
READS_BY_POST = frozenset({"_get_latest_versions"})  # registry routes that take a POST but write nothing
FEEDBACK_PATHS = ("/api/2.0/genaiops/feedback", "/ajax-api/2.0/genaiops/feedback")
FEEDBACK_FIELDS = frozenset({"endpoint", "inference_id", "rating", "correction"})


@lru_cache(maxsize=1)
def policy() -> tuple[ApprovalConfig, AuditLog]:
    path = os.environ.get(POLICY_ENV)
    if not path:
        raise RuntimeError(f"{POLICY_ENV} must name the approval policy file (genaiops ui writes it)")
    document = json.loads(Path(path).read_text())
    return ApprovalConfig.model_validate(document["approval"]), AuditLog(_store(document["audit"]))


@lru_cache(maxsize=1)
def feedback_store() -> FeedbackStore:
    """Where feedback goes: beside the audit log, in the store only this server writes."""
    document = json.loads(Path(os.environ[POLICY_ENV]).read_text())
    return FeedbackStore(_store(document.get("feedback") or document["audit"]))


def _store(spec: dict[str, Any]) -> ArtifactStore:
    if spec["kind"] == "s3":
        import boto3

        return S3Store(spec["bucket"], boto3.client("s3", region_name=spec.get("region")),
                       prefix=spec.get("prefix", ""), kms_key_id=spec.get("kms_key_id"))
    return LocalStore(Path(spec["root"]))


def create_app(app: Any = None) -> Any:
    """The MLflow server app: the registry guard first, then basic auth and MLflow's permissions."""
    import mlflow.server.auth as basic
    from flask import g
    from mlflow.server import app as mlflow_flask_app

    flask_app = app if app is not None else mlflow_flask_app
    served = basic.create_app(flask_app)  # a FastAPI wrapper under uvicorn, the Flask app otherwise
    policy()  # fail at start, not at the first write, if the policy is missing
    governed = {(rule.rule, method) for rule in flask_app.url_map.iter_rules()
                if getattr(flask_app.view_functions.get(rule.endpoint), "__name__", "") in WRITES
                for method in rule.methods or ()}
    for key in list(basic.BEFORE_REQUEST_VALIDATORS):
        if key in governed:  # MLflow's per-resource permission would refuse owners; this app has decided
            basic.BEFORE_REQUEST_VALIDATORS[key] = lambda: bool(g.get("genaiops_allowed", False))
    for path in FEEDBACK_PATHS:  # answered by the guard; the rule makes the path a route MLflow's auth knows
        flask_app.add_url_rule(path, f"genaiops_feedback_{path.split('/')[1]}", _feedback_unreachable,
                               methods=["POST"])
        basic.BEFORE_REQUEST_VALIDATORS[(path, "POST")] = lambda: True  # the guard has decided
    flask_app.before_request_funcs.setdefault(None, []).insert(0, _guard)  # before authentication refuses
    flask_app.after_request(_record)
    return served


def _registry_store() -> Any:
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def _response(status: int, code: str, message: str) -> Any:
    from flask import jsonify

    response = jsonify({"error_code": code, "message": message})
    response.status_code = status
    return response


def _guard() -> Any:
    """Decide a registry write before MLflow does anything with it; refuse, audit and answer, or let it through."""
    from flask import current_app, g, request
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth import authenticate_request
    from mlflow.server.handlers import catch_mlflow_exception

    if request.path in FEEDBACK_PATHS:
        return _feedback()
    view = current_app.view_functions.get(request.endpoint or "")
    name = getattr(view, "__name__", "")
    kind = WRITES.get(name)
    if kind is None:
        if request.url_rule is None or request.method in ("GET", "HEAD", "OPTIONS") or name in READS_BY_POST \
                or not any(part in request.path for part in REGISTRY_PATHS):
            return None
        kind = ("", "unknown-write")  # a registry route this app does not know (a newer MLflow): deny by default
    route = f"{request.method} {request.path}"
    authorization = authenticate_request()
    user = getattr(authorization, "username", None) or ANONYMOUS
    try:
        write = _parse(kind, route)
    except MlflowException:
        if user != ANONYMOUS:
            return catch_mlflow_exception(lambda: _parse(kind, route))()  # MLflow's own 400, nothing written
        write = Write(action=kind[1], model="", route=route)
    if user == ANONYMOUS:
        audit(_entry(write, user, None, "refused: not signed in"))
        return authorization  # MLflow's 401 with its WWW-Authenticate challenge
    missing = missing_fields(write)
    if missing:  # nothing can be written; say what is missing, as MLflow would
        return _response(400, "INVALID_PARAMETER_VALUE", f"missing {', '.join(missing)} in the request body "
                         f"(MLflow reads a {request.method} body as JSON; query strings and forms are not read)")
    config, _ = policy()
    try:
        tags, target, old, evidence = _read(write, request)
    except RegistryUnavailableError as exc:
        audit(_entry(write, user, None, f"refused: the registry could not be read to decide ({exc})"))
        log.error("refused %s by %s: registry unavailable: %s", route, user, exc)
        return _response(503, "TEMPORARILY_UNAVAILABLE", f"the registry could not be read to check this write: {exc}")
    reason = refuse_write(user, write, tags, config, target)
    if reason is None and write.action == "create-version":
        new_tags, repeated = _create_tags()
        reason = f"the tags {', '.join(repeated)} are given twice" if repeated else \
            refuse_registration(new_tags, write.run_id, evidence)
    entry = _entry(write, user, tags, "accepted" if reason is None else f"refused: {reason}", old)
    if reason is not None:
        audit(entry)
        log.warning("refused %s on %s v%s by %s: %s", route, write.model, write.version, user, reason)
        return _response(403, "PERMISSION_DENIED", reason)
    g.genaiops_allowed = True
    g.genaiops_audit = entry
    return None


def _feedback_unreachable() -> Any:
    return _response(500, "INTERNAL_ERROR", "the feedback route is answered before this")


def _feedback() -> Any:
    """Record a person's judgement of one captured answer: the feedback accounts alone, every attempt audited."""
    from flask import jsonify, request
    from mlflow.server.auth import authenticate_request

    route = f"{request.method} {request.path}"
    if request.method != "POST":
        return _response(405, "METHOD_NOT_ALLOWED", f"{request.path} takes POST")
    authorization = authenticate_request()
    user = getattr(authorization, "username", None) or ANONYMOUS
    body = request.get_json(silent=True)
    fields = body if isinstance(body, dict) else {}

    def entry(outcome: str) -> AuditEntry:  # a refused correction is not kept: it was never checked for personal data
        endpoint = str(fields.get("endpoint", ""))[:63]
        note = str(fields.get("correction") or "")[:2000] if outcome == "accepted" else ""
        return AuditEntry(model=f"feedback:{endpoint}", version="", user=user, at=now(),
                          key=str(fields.get("inference_id", ""))[:64], old=None,
                          new=str(fields.get("rating", ""))[:8] or None, outcome=outcome, note=note,
                          action="feedback", route=route)

    if user == ANONYMOUS:
        audit(entry("refused: not signed in"))
        return authorization  # MLflow's 401 with its WWW-Authenticate challenge
    config, _ = policy()
    if user not in config.feedback_accounts:
        reason = f"{user!r} is not a feedback account ({', '.join(config.feedback_accounts) or 'none'})"
        audit(entry(f"refused: {reason}"))
        log.warning("refused %s by %s: %s", route, user, reason)
        return _response(403, "PERMISSION_DENIED", reason)
    if not isinstance(body, dict):
        return _response(400, "INVALID_PARAMETER_VALUE", "the body must be a JSON object with endpoint, "
                                                          "inference_id, rating and optionally correction")
    unknown = sorted(set(body) - FEEDBACK_FIELDS)
    problems = [f"unknown field(s) {', '.join(map(repr, unknown))}"] * bool(unknown) + check_feedback(
        body.get("endpoint"), body.get("inference_id"), body.get("rating"), body.get("correction"))
    if problems:
        return _response(400, "INVALID_PARAMETER_VALUE", "; ".join(problems))
    feedback = Feedback(endpoint=body["endpoint"], inference_id=body["inference_id"], rating=body["rating"],
                        correction=body.get("correction"), by=user, at=now())
    try:
        uri = feedback_store().record(feedback)
    except Exception as exc:  # nothing was recorded; say so rather than pretend
        log.exception("could not record feedback by %s", user)
        audit(entry(f"refused: the feedback store could not be written ({type(exc).__name__})"))
        return _response(503, "TEMPORARILY_UNAVAILABLE", f"the feedback could not be recorded: {exc}")
    audit(entry("accepted"))
    response = jsonify({"id": feedback.id, "uri": uri, "feedback": feedback.model_dump()})
    response.status_code = 201
    return response


def _parse(kind: tuple[str, str], route: str) -> Write:
    """The write as MLflow's handler will read it (same parser, same fields)."""
    from mlflow.protos import model_registry_pb2
    from mlflow.server.handlers import _get_request_message

    proto_name, action = kind
    if not proto_name:
        return Write(action=action, model=f"({action})", route=route)
    message = _get_request_message(getattr(model_registry_pb2, proto_name)())
    fields = {f.name: v for f, v in message.ListFields()}
    key, value = str(fields.get("key", fields.get("alias", ""))), fields.get("value", "")  # unset: MLflow writes ""
    if action == "set-alias":
        value = str(fields.get("version", ""))
    elif action == "rename-model":
        value = str(fields.get("new_name", ""))
    elif action == "update-version":
        value = str(fields.get("description", ""))
    elif action == "transition-stage":
        value = str(fields.get("stage", ""))
    elif action in ("delete-tag", "delete-alias", "delete-model-tag"):
        value = None
    version = str(fields.get("version", "")) if action != "set-alias" else value
    return Write(action=action, model=str(fields.get("name", "")), version=version, key=key,
                 value=None if value is None else str(value), run_id=str(fields.get("run_id", "")), route=route)


def _create_tags() -> tuple[dict[str, str], list[str]]:
    """A new version's tags, and the keys given more than once (the store would keep one of them at random)."""
    from mlflow.protos.model_registry_pb2 import CreateModelVersion
    from mlflow.server.handlers import _get_request_message

    tags: dict[str, str] = {}
    repeated: list[str] = []
    for tag in _get_request_message(CreateModelVersion()).tags:
        if tag.key in tags:
            repeated.append(tag.key)
        tags[tag.key] = tag.value
    return tags, repeated


def _read(write: Write, request: Any) -> tuple[dict[str, str] | None, dict[str, str] | None, str | None, Any]:
    """What the decision needs from the registry: the version's tags, an alias's target and old version,
    a new version's run evidence. Raises RegistryUnavailableError for anything but a missing version."""
    tags = target = old = evidence = None
    if write.action in ("set-tag", "delete-tag", "update-version", "delete-version", "transition-stage"):
        tags = _version_tags(write.model, write.version)
    elif write.action in ("set-alias", "delete-alias"):
        old = _alias_version(write.model, write.key)
        if write.action == "set-alias":
            target = _version_tags(write.model, write.value or "")
    elif write.action == "create-version":
        evidence = run_evidence(write.run_id)
    return tags, target, old, evidence


def _version_tags(name: str, version: str) -> dict[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        return dict(_registry_store().get_model_version(name, version).tags or {})
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # MLflow's handler answers it with its own 404 or 400; nothing is written
        raise RegistryUnavailableError(str(exc)) from exc
    except Exception as exc:
        raise RegistryUnavailableError(f"{type(exc).__name__}: {exc}") from exc


def _alias_version(name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        version = (_registry_store().get_registered_model(name).aliases or {}).get(alias)  # {alias: version}
        return None if version is None else str(version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryUnavailableError(str(exc)) from exc
    except Exception as exc:
        raise RegistryUnavailableError(f"{type(exc).__name__}: {exc}") from exc


def _entry(write: Write, user: str, tags: dict[str, str] | None, outcome: str, old: str | None = None) -> AuditEntry:
    tags = tags or {}
    if write.action in ("set-tag", "delete-tag"):
        old = tags.get(write.key)
    note = tags.get(T.APPROVAL_NOTE, "") if write.key == T.APPROVAL_STATUS else (write.value or "")
    version = write.version
    if write.action == "create-version":
        note = ""
    elif write.action == "delete-alias":
        version = old or ""
    return AuditEntry(model=write.model, version=version, user=user, at=now(), key=write.key, old=old,
                      new=write.value, outcome=outcome, gate_digest=gate_digest(tags) if tags else "",
                      note=note[:2000], action=write.action, route=write.route)


def audit(entry: AuditEntry) -> None:
    try:
        policy()[1].append(entry)
    except Exception:  # the refusal stands; the missing record is logged loudly
        log.exception("could not append to the audit log: %s", entry.model_dump_json())


def _record(response: Any) -> Any:
    """After an accepted write: stamp an approval decision, and append the write to the audit log."""
    from flask import g

    entry: AuditEntry | None = getattr(g, "genaiops_audit", None)
    if entry is None or response.status_code >= 400:
        return response
    if entry.action == "create-version":
        version = str((response.get_json(silent=True) or {}).get("model_version", {}).get("version", ""))
        tags = _create_tags()[0]
        entry = entry.model_copy(update={"version": version, "key": "", "new": tags.get(T.APPROVAL_STATUS),
                                         "gate_digest": gate_digest(tags)})
    elif entry.action in ("set-tag", "set-alias") and entry.old == entry.new:
        return response  # writing the value that is there already changes nothing
    if entry.key == T.APPROVAL_STATUS:
        _stamp(entry)
    audit(entry)
    if entry.key in APPROVAL_TAGS:
        _log_to_source_run(entry)
    return response


def _stamp(entry: AuditEntry) -> None:
    from mlflow.entities.model_registry import ModelVersionTag

    store = _registry_store()
    if entry.new in (T.APPROVED, T.REJECTED):
        store.set_model_version_tag(entry.model, entry.version, ModelVersionTag(T.APPROVED_BY, entry.user))
        store.set_model_version_tag(entry.model, entry.version, ModelVersionTag(T.APPROVED_AT, entry.at))
    else:  # back to pending: the previous decision no longer speaks for the version
        for key in (T.APPROVED_BY, T.APPROVED_AT):
            store.delete_model_version_tag(entry.model, entry.version, key)


def _log_to_source_run(entry: AuditEntry) -> None:
    """A copy of the entry among the source run's artifacts, next to the gate report it refers to."""
    try:
        from mlflow.server.handlers import _get_tracking_store
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        run_id = (_version_tags(entry.model, entry.version) or {}).get(T.SOURCE_RUN)
        if not run_id:
            return
        run = _get_tracking_store().get_run(run_id)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{entry.at.replace(':', '')}-{entry.key}.json"
            path.write_text(entry.model_dump_json(indent=2))
            get_artifact_repository(run.info.artifact_uri).log_artifact(str(path), "audit")
    except Exception:  # the audit log in the artifact store is the record; this copy is a convenience
        log.exception("could not copy the audit entry to the source run of %s v%s", entry.model, entry.version)
