"""Every registry write belongs to one account, through every route: the genaiops-auth server on 127.0.0.1,
called over raw HTTP as the MLflow client and the UI call it (REST `/api/2.0`, the UI's `/ajax-api/2.0`), with
every body encoding MLflow reads, and through the `genaiops` CLI. Refusals are audited with their route.

Each test runs against both servers: the laptop's (SQLite, everyone with a password) and the approval stack's
(PostgreSQL; people signed in by a proxy playing the public load balancer, service accounts with basic auth)."""

from __future__ import annotations

import base64
import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from contracts import tags as T
from model_registry.approval import AuditEntry
from model_registry.audit import AuditLog
from steps.artifacts import LocalStore
from tests import approvals
from tests.approvals import ALB_CONFIG, CONFIG, PEOPLE, as_user, cli, name
from tests.servers import alb_approval_server, approval_server

MODEL = "guarded-model"
ROUTES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")
ACCOUNTS = ("alice", "bob", CONFIG.pipeline_account, CONFIG.watcher_account, CONFIG.release_account,
            CONFIG.admin_account, "anonymous")


@pytest.fixture(scope="module", params=["sqlite", "postgres-alb"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workspace = tmp_path_factory.mktemp(f"permissions-{request.param}")
    if request.param == "sqlite":
        with approval_server(workspace, CONFIG) as (url, passwords):
            yield {"url": url, "passwords": passwords, "workspace": workspace, "config": CONFIG}
    else:
        with alb_approval_server(workspace, ALB_CONFIG, PEOPLE) as running:
            yield {**running, "config": ALB_CONFIG}


def call(server: dict[str, Any], user: str, method: str, path: str, body: Any = None, *,
         content_type: str = "application/json", raw: bytes | None = None, query: str = "") -> tuple[int, dict[str, Any]]:
    """One HTTP request as `user` ("anonymous": no credentials); returns the status and the JSON answer. A person
    behind the load balancer goes through it with their session cookie; everyone else straight to the server."""
    from tests.alb import SESSION_COOKIE

    headers = {"Content-Type": content_type}
    base = server["url"]
    if user in (server.get("people") or {}):
        base, headers["Cookie"] = server["people_url"], f"{SESSION_COOKIE}={user}"
    elif user != "anonymous":
        token = base64.b64encode(f"{user}:{server['passwords'][user]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"{base}{path}{'?' + query if query else ''}", data=data,
                                     method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"message": text.decode(errors="replace")}


def register(server: dict[str, Any], **kwargs: Any) -> str:
    return approvals.register(server, MODEL, **kwargs)


def approve(server: dict[str, Any], version: str) -> None:
    if "people" in server:  # an approver behind the load balancer has no password: the UI's route
        at = {"name": MODEL, "version": version}
        assert call(server, "alice", "POST", f"{ROUTES[1]}/model-versions/set-tag",
                    {**at, "key": T.APPROVAL_NOTE, "value": "ready"})[0] == 200
        assert call(server, "alice", "POST", f"{ROUTES[1]}/model-versions/set-tag",
                    {**at, "key": T.APPROVAL_STATUS, "value": T.APPROVED})[0] == 200
        return
    result = cli(server, "alice", "approve", MODEL, version, "--note", "ready")
    assert result.returncode == 0, result.stderr


def state(server: dict[str, Any], version: str) -> dict[str, Any]:
    described = as_user(server, CONFIG.watcher_account).get_model_version(MODEL, version)
    return {"tags": dict(described.tags), "aliases": sorted(described.aliases), "description": described.description,
            "stage": described.current_stage}


def refusals(server: dict[str, Any]) -> list[AuditEntry]:
    return [e for e in AuditLog(LocalStore(server["workspace"] / "artifacts")).entries(MODEL)
            if e.outcome.startswith("refused")]


def writes(version: str, approved: str) -> dict[str, tuple[str, str, dict[str, Any], str | None]]:
    """Each kind of write: method, endpoint, body, and the one account that owns it (None: nobody may)."""
    at = {"name": MODEL, "version": version}
    return {
        "approval tags": ("POST", "/model-versions/set-tag",
                          {**at, "key": T.APPROVAL_STATUS, "value": T.APPROVED}, "alice"),
        "lineage and gate tags": ("POST", "/model-versions/set-tag",
                                  {**at, "key": T.GATE_SUMMARY, "value": "all gates passed: trust me"}, None),
        "lineage delete": ("DELETE", "/model-versions/delete-tag", {**at, "key": T.DATASET_HASH}, None),
        "description": ("PATCH", "/model-versions/update", {**at, "description": "**Gate passed.**"}, None),
        "aliases": ("POST", "/registered-models/alias", {"name": MODEL, "alias": T.CHAMPION, "version": approved},
                    CONFIG.release_account),
        "stage": ("POST", "/model-versions/transition-stage",
                  {**at, "stage": "Production", "archive_existing_versions": False}, None),
        "delete": ("DELETE", "/model-versions/delete", at, CONFIG.admin_account),
        "release request": ("POST", "/model-versions/set-tag", {**at, "key": T.RELEASE_REQUEST, "value": "file:///x"},
                            CONFIG.watcher_account),
        "release tags": ("POST", "/model-versions/set-tag", {**at, "key": "genaiops.release.state", "value": "baking"},
                         CONFIG.release_account),
        "other tags": ("POST", "/model-versions/set-tag", {**at, "key": "team", "value": "x"}, None),
    }


def test_only_the_owner_of_a_write_may_make_it_through_rest_and_ajax(server: dict[str, Any]) -> None:
    version, approved = register(server), register(server)
    approve(server, approved)
    before = state(server, version)
    table = writes(version, approved)
    for label, (method, endpoint, body, owner) in table.items():
        for route in ROUTES:
            for user in ACCOUNTS:
                if user == owner:
                    continue
                status, answer = call(server, user, method, route + endpoint, body)
                assert status == (401 if user == "anonymous" else 403), (label, route, user, status, answer)
                seen = [e for e in refusals(server)
                        if e.user == name(server, user) and e.route == f"{method} {route}{endpoint}"]
                assert seen, (label, route, user)
    assert state(server, version) == before  # nothing changed, whoever asked and however
    assert state(server, approved)["aliases"] == []

    # The owners, each through both routes.
    for route in ROUTES:
        pending = register(server)
        method, endpoint, body, _ = writes(pending, approved)["approval tags"]
        assert call(server, "alice", method, route + endpoint, body)[0] == 200
        assert state(server, pending)["tags"][T.APPROVED_BY] == name(server, "alice")
        for label in ("release request", "release tags"):
            method, endpoint, body, owner = table[label]
            assert call(server, str(owner), method, route + endpoint, body)[0] == 200, (label, route)
    alias = {"name": MODEL, "version": approved}
    assert call(server, CONFIG.release_account, "POST", f"{ROUTES[0]}/registered-models/alias",
                {**alias, "alias": T.CHAMPION})[0] == 200
    assert call(server, CONFIG.release_account, "POST", f"{ROUTES[1]}/registered-models/alias",
                {**alias, "alias": T.CHALLENGER})[0] == 200
    assert state(server, approved)["aliases"] == [T.CHALLENGER, T.CHAMPION]
    status, answer = call(server, CONFIG.release_account, "POST", f"{ROUTES[0]}/registered-models/alias",
                          {"name": MODEL, "alias": T.CHAMPION, "version": version})
    assert status == 403 and "may point only at an approved version" in answer["message"]
    assert call(server, "bob", "DELETE", f"{ROUTES[1]}/registered-models/alias",
                {"name": MODEL, "alias": T.CHAMPION})[0] == 403
    assert call(server, CONFIG.release_account, "DELETE", f"{ROUTES[1]}/registered-models/alias",
                {"name": MODEL, "alias": T.CHALLENGER})[0] == 200
    accepted = [e for e in AuditLog(LocalStore(server["workspace"] / "artifacts")).entries(MODEL)
                if e.outcome == "accepted" and e.action in ("set-alias", "delete-alias")]
    assert [(e.user, e.action, e.key, e.version) for e in accepted] == [
        (CONFIG.release_account, "set-alias", T.CHAMPION, approved),
        (CONFIG.release_account, "set-alias", T.CHALLENGER, approved),
        (CONFIG.release_account, "delete-alias", T.CHALLENGER, approved)]
    for route in ROUTES:
        doomed = register(server)
        assert call(server, CONFIG.admin_account, "DELETE", f"{route}/model-versions/delete",
                    {"name": MODEL, "version": doomed})[0] == 200
        deleted = [e for e in AuditLog(LocalStore(server["workspace"] / "artifacts")).entries(MODEL, doomed)
                   if e.action == "delete-version"]
        assert [(e.user, e.outcome, e.route) for e in deleted] == [
            (CONFIG.admin_account, "accepted", f"DELETE {route}/model-versions/delete")]  # an accepted write is audited
    method, endpoint, body, _ = table["stage"]
    for user in ACCOUNTS:  # stage transitions are refused for everyone, the admin too
        if user != "anonymous":
            assert call(server, user, method, ROUTES[0] + endpoint, body)[0] == 403


def test_registered_models_belong_to_the_pipeline_and_deletes_to_the_admin(server: dict[str, Any]) -> None:
    register(server)
    for user in ("alice", "bob", CONFIG.watcher_account, CONFIG.release_account):
        assert call(server, user, "POST", f"{ROUTES[1]}/registered-models/create", {"name": f"{user}-model"})[0] == 403
    for method, endpoint, body in (("PATCH", "/registered-models/update", {"name": MODEL, "description": "x"}),
                                   ("POST", "/registered-models/rename", {"name": MODEL, "new_name": "other"}),
                                   ("POST", "/registered-models/set-tag", {"name": MODEL, "key": "k", "value": "v"})):
        for user in ("bob", CONFIG.pipeline_account, CONFIG.admin_account):
            assert call(server, user, method, ROUTES[0] + endpoint, body)[0] == 403, (endpoint, user)
    for user in ("alice", "bob", CONFIG.pipeline_account, CONFIG.release_account):
        assert call(server, user, "DELETE", f"{ROUTES[0]}/registered-models/delete", {"name": MODEL})[0] == 403
        assert call(server, user, "POST", f"{ROUTES[0]}/webhooks",
                    {"name": "hook", "url": "http://127.0.0.1:9/", "events": []})[0] == 403
    for path in ("/ajax-api/3.0/mlflow/demo/generate", "/api/3.0/mlflow/prompt-optimization/jobs"):
        status, answer = call(server, "alice", "POST", path, {})  # routes that register on no account's behalf
        assert status == 403 and "on no account's behalf" in answer["message"], (path, answer)
    assert as_user(server, CONFIG.watcher_account).get_registered_model(MODEL).name == MODEL


def test_every_body_encoding_mlflow_reads_is_judged_as_mlflow_reads_it(server: dict[str, Any]) -> None:
    version = register(server)
    approve(server, version)
    before = state(server, version)
    at = {"name": MODEL, "version": version}
    status_delete = {**at, "key": T.APPROVAL_STATUS}
    set_tag, delete_tag = f"{ROUTES[0]}/model-versions/set-tag", f"{ROUTES[1]}/model-versions/delete-tag"
    audited_before = len(refusals(server))
    # MLflow reads each of these as a write: each is refused and audited.
    read_as_writes = [
        ("POST", set_tag, {"raw": json.dumps({**at, "key": T.GATE, "value": "x"}).encode()}),
        ("POST", set_tag, {"raw": json.dumps(json.dumps({**at, "key": T.GATE, "value": "x"})).encode()}),  # double-encoded
        ("DELETE", delete_tag, {"raw": json.dumps(status_delete).encode(), "content_type": "text/plain"}),
        ("DELETE", delete_tag, {"raw": json.dumps(status_delete).encode(),
                                "content_type": "application/x-www-form-urlencoded"}),
        ("PATCH", f"{ROUTES[0]}/model-versions/update", {"raw": json.dumps({**at, "description": "x"}).encode(),
                                                         "content_type": "multipart/form-data; boundary=x"}),
    ]
    for method, path, options in read_as_writes:
        status, answer = call(server, "bob", method, path, **options)
        assert status == 403, (method, path, options, answer)
    assert len(refusals(server)) == audited_before + len(read_as_writes)
    # MLflow does not read these as a write at all: nothing is written, and MLflow says what is wrong.
    ignored = [
        ("POST", set_tag, {"query": urllib.parse.urlencode({**at, "key": T.GATE, "value": "x"}), "raw": b""}),
        ("POST", set_tag, {"raw": urllib.parse.urlencode({**at, "key": T.GATE, "value": "x"}).encode(),
                           "content_type": "application/x-www-form-urlencoded"}),
        ("DELETE", delete_tag, {"query": urllib.parse.urlencode(status_delete)}),
    ]
    for method, path, options in ignored:
        status, answer = call(server, "bob", method, path, **options)
        assert status == 400, (method, path, options, status, answer)
    assert state(server, version) == before
    # The owner's write in an odd encoding is read the same way, and goes through.
    status, _ = call(server, CONFIG.watcher_account, "DELETE", delete_tag, content_type="text/plain",
                     raw=json.dumps({**at, "key": T.RELEASE_REQUEST}).encode())
    assert status == 200


def test_the_cli_goes_through_the_same_rules(server: dict[str, Any]) -> None:
    version = register(server)
    people = "people" in server
    if people:  # a person behind the load balancer has no password the CLI (basic auth) could send
        guess = {"MLFLOW_TRACKING_USERNAME": name(server, "alice"), "MLFLOW_TRACKING_PASSWORD": "a-guess"}
        result = cli(server, "alice", "approve", MODEL, version, env=guess)
        assert result.returncode == 1 and "401" in result.stderr, result.stderr
    else:
        result = cli(server, "bob", "approve", MODEL, version)
        assert result.returncode == 1 and "'bob' is not in the approvers group" in result.stderr
    result = cli(server, CONFIG.release_account, "reject", MODEL, version, "--note", "not mine to judge")
    assert result.returncode == 1 and "PERMISSION_DENIED" in result.stderr
    routes = {(e.user, e.route) for e in refusals(server) if e.version == version}
    if not people:
        assert ("bob", "POST /api/2.0/mlflow/model-versions/set-tag") in routes
    assert (CONFIG.release_account, "POST /api/2.0/mlflow/model-versions/set-tag") in routes
    assert state(server, version)["tags"][T.APPROVAL_STATUS] == T.PENDING
    shown = cli(server, CONFIG.watcher_account, "audit", MODEL, "--json")
    assert any(json.loads(line)["route"] == "POST /api/2.0/mlflow/model-versions/set-tag"
               for line in shown.stdout.splitlines())


def test_a_new_version_claims_no_more_than_its_run_shows(server: dict[str, Any]) -> None:
    count = len(as_user(server, CONFIG.watcher_account).search_model_versions(f"name = '{MODEL}'"))
    claims = {
        "gate report failed": ({"gate": "failed"}, {T.GATE: "passed", T.APPROVAL_STATUS: T.PENDING}),
        "source run shows 'dddd": ({}, {T.DATASET_HASH: "e" * 64}),
        "base_model is 'builtin:other'": ({}, {T.BASE_MODEL: "builtin:other"}),
        "registered Rejected": ({"gate": "failed"}, {T.APPROVAL_STATUS: T.PENDING}),
        "cannot be set at registration": ({}, {T.RELEASE_REQUEST: "file:///x"}),
        "a new version starts PendingManualApproval": ({}, {T.APPROVAL_STATUS: T.APPROVED}),
        "stamped": ({}, {T.APPROVED_BY: "alice"}),
    }
    for reason, (options, claim) in claims.items():
        with pytest.raises(Exception, match=reason.replace("(", r"\(")):
            register(server, claim=claim, **options)
    assert len(as_user(server, CONFIG.watcher_account).search_model_versions(f"name = '{MODEL}'")) == count
    # nothing half-registered above
    refused = [e for e in refusals(server) if e.action == "create-version"]
    assert len(refused) >= len(claims) and all(e.user == CONFIG.pipeline_account for e in refused)
    with pytest.raises(Exception, match="only the pipeline account"):
        approvals.register(server, MODEL, as_account=CONFIG.release_account)


@contextmanager
def registry_unreadable(server: dict[str, Any]) -> Iterator[None]:
    """The registry's database refusing reads while the block runs: SQLite locked by a writer; on PostgreSQL the
    versions table moved away (a read fails at once, where a lock would only make it wait)."""
    if "database" in server:
        import psycopg

        with psycopg.connect(server["database"], autocommit=True) as db:
            db.execute("ALTER TABLE model_versions RENAME TO model_versions_away")
            try:
                yield
            finally:
                db.execute("ALTER TABLE model_versions_away RENAME TO model_versions")
        return
    database = sqlite3.connect(server["workspace"] / "mlflow.db", timeout=0, isolation_level=None)
    assert database.execute("PRAGMA journal_mode").fetchone()[0] != "wal"  # a writer's lock keeps readers out
    database.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        database.execute("ROLLBACK")
        database.close()


def test_the_guard_fails_closed_when_the_registry_cannot_be_read(server: dict[str, Any]) -> None:
    version = register(server)
    before = state(server, version)
    with registry_unreadable(server):
        status, answer = call(server, "alice", "POST", f"{ROUTES[1]}/model-versions/set-tag",
                              {"name": MODEL, "version": version, "key": T.APPROVAL_STATUS, "value": T.APPROVED})
    assert status == 503 and answer["error_code"] == "TEMPORARILY_UNAVAILABLE", answer
    [entry] = [e for e in refusals(server) if e.version == version]
    assert entry.user == name(server, "alice") and "could not be read" in entry.outcome
    assert entry.route == "POST /ajax-api/2.0/mlflow/model-versions/set-tag"
    assert state(server, version) == before


FEEDBACK_ROUTES = ("/api/2.0/genaiops/feedback", "/ajax-api/2.0/genaiops/feedback")


def test_feedback_belongs_to_the_feedback_accounts_through_rest_and_ajax(server: dict[str, Any]) -> None:
    from steps.feedback import FeedbackStore

    people = "people" in server
    reviewer = "bob" if people else CONFIG.feedback_accounts[0]  # a person behind the load balancer, or the account
    others = [a for a in (*ACCOUNTS, CONFIG.feedback_accounts[0]) if a != reviewer and (a in server["passwords"]
              or a in (server.get("people") or {}) or a == "anonymous")]
    assert {"alice", CONFIG.pipeline_account, CONFIG.release_account, "anonymous"} <= set(others)
    endpoint = "feedback-endpoint"
    store = FeedbackStore(LocalStore(server["workspace"] / "artifacts"))
    for route in FEEDBACK_ROUTES:
        for user in others:
            body = {"endpoint": endpoint, "inference_id": f"{user}-{route[1:5]}", "rating": "bad",
                    "correction": "A summary of my own."}
            status, answer = call(server, user, "POST", route, body)
            assert status == (401 if user == "anonymous" else 403), (user, route, status, answer)
        status, answer = call(server, reviewer, "POST", route, {"endpoint": endpoint, "inference_id": "req-1",
                                                                "rating": "bad", "correction": "Hana's card."})
        assert status == 201, answer
        assert answer["feedback"]["by"] == name(server, reviewer)  # stamped from the sign-in, not the body
    [entry] = store.entries(endpoint)  # both routes judged the same answer: the second replaced the first
    assert (entry.inference_id, entry.rating, entry.correction) == ("req-1", "bad", "Hana's card.")
    # Bad input is named and nothing is written.
    for body, field in (({"endpoint": endpoint, "inference_id": "req-2", "rating": "meh"}, "rating"),
                        ({"endpoint": "bad_name", "inference_id": "req-2", "rating": "bad"}, "endpoint"),
                        ({"endpoint": endpoint, "inference_id": "req-2", "rating": "bad", "by": "alice"}, "'by'"),
                        ({"endpoint": endpoint, "inference_id": "req-2", "rating": "bad",
                          "correction": "Mail hana@example.com"}, "personal data")):
        status, answer = call(server, reviewer, "POST", FEEDBACK_ROUTES[0], body)
        assert status == 400 and field in answer["message"], answer
    status, answer = call(server, reviewer, "POST", FEEDBACK_ROUTES[0], raw=b"[1, 2]")
    assert status == 400
    assert len(store.entries(endpoint)) == 1
    audited = AuditLog(LocalStore(server["workspace"] / "artifacts")).entries(f"feedback:{endpoint}")
    refused = {(e.user, e.route) for e in audited if e.outcome.startswith("refused")}
    for route in FEEDBACK_ROUTES:
        assert (name(server, "alice"), f"POST {route}") in refused and ("anonymous", f"POST {route}") in refused
    assert [(e.user, e.note) for e in audited if e.outcome == "accepted"] == [(name(server, reviewer), "Hana's card.")] * 2
    assert all(e.note == "" for e in audited if e.outcome.startswith("refused"))  # unchecked text is not kept
