"""Approvals through the genaiops-auth MLflow server on 127.0.0.1: who may approve, what is stamped,
what the audit log keeps, and release requests made exactly once by the watcher."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from mlflow import MlflowClient

from contracts import tags as T
from model_registry.audit import AuditLog
from model_registry.mlflow_registry import MlflowRegistry
from model_registry.watcher import request_key, watch_approvals
from steps.artifacts import LocalStore
from tests import approvals
from tests.approvals import CONFIG, as_user, cli
from tests.servers import approval_server

MODEL = "approved-model"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workspace = tmp_path_factory.mktemp("approval-ws")
    with approval_server(workspace, CONFIG) as (url, passwords):
        yield {"url": url, "passwords": passwords, "workspace": workspace}


def register(server: dict[str, Any], *, gate: str = "passed", triggered_by: str = "ml-engineer",
             claim: dict[str, str] | None = None) -> str:
    return approvals.register(server, MODEL, gate=gate, triggered_by=triggered_by, claim=claim)


def audit(server: dict[str, Any], version: str) -> AuditLog:
    return AuditLog(LocalStore(server["workspace"] / "artifacts"))


def watcher(server: dict[str, Any]) -> tuple[MlflowRegistry, LocalStore]:
    as_user(server, CONFIG.watcher_account)
    return MlflowRegistry(server["url"], experiment="approvals", model_name=MODEL), \
        LocalStore(server["workspace"] / "artifacts")


def test_only_approvers_may_approve_by_any_path(server: dict[str, Any]) -> None:
    version = register(server)
    for user in ("bob", CONFIG.pipeline_account, "admin"):
        result = cli(server, user, "approve", MODEL, version)
        assert result.returncode == 1, (user, result.stdout, result.stderr)
        assert "PERMISSION_DENIED" in result.stderr
    with pytest.raises(Exception, match="is not in the approvers group"):
        as_user(server, "bob").set_model_version_tag(MODEL, version, T.APPROVAL_STATUS, T.APPROVED)
    with pytest.raises(Exception, match="stamped by the server"):
        as_user(server, "alice").set_model_version_tag(MODEL, version, T.APPROVED_BY, "alice")
    with pytest.raises(Exception, match="a new version starts PendingManualApproval"):
        register(server, claim={T.APPROVAL_STATUS: T.APPROVED})
    tags = as_user(server, "alice").get_model_version(MODEL, version).tags
    assert tags[T.APPROVAL_STATUS] == T.PENDING and T.APPROVED_BY not in tags
    refused = [e for e in audit(server, version).entries(MODEL, version) if e.outcome.startswith("refused")]
    assert {e.user for e in refused} >= {"bob", CONFIG.pipeline_account, "admin"}


def test_a_failed_gate_or_ones_own_training_cannot_be_approved(server: dict[str, Any]) -> None:
    failed = register(server, gate="failed")
    result = cli(server, "alice", "approve", MODEL, failed)
    assert result.returncode == 1 and "failed its evaluation gates" in result.stderr
    own = register(server, triggered_by="alice")
    result = cli(server, "alice", "approve", MODEL, own)
    assert result.returncode == 1 and "triggered the training run" in result.stderr


def test_an_approval_is_stamped_audited_once_and_requested_for_release_once(server: dict[str, Any]) -> None:
    version = register(server)
    first = cli(server, "alice", "approve", MODEL, version, "--note", "beats the base model clearly")
    assert first.returncode == 0, first.stderr
    assert f"{MODEL} version {version}: Approved by alice" in first.stdout
    again = cli(server, "alice", "approve", MODEL, version)  # approving twice
    assert again.returncode == 0
    tags = as_user(server, "bob").get_model_version(MODEL, version).tags
    assert tags[T.APPROVED_BY] == "alice" and tags[T.APPROVAL_NOTE] == "beats the base model clearly"
    decisions = [e for e in audit(server, version).entries(MODEL, version)
                 if e.key == T.APPROVAL_STATUS and e.outcome == "accepted"]
    assert len(decisions) == 1 and decisions[0].user == "alice" and decisions[0].new == T.APPROVED
    assert decisions[0].note == "beats the base model clearly"

    registry, store = watcher(server)
    first_pass = {d.version: d.action for d in watch_approvals(registry, AuditLog(store), store, CONFIG)}
    assert first_pass[version] == "release requested"
    # A restart between writing the request and tagging the version: the tag is gone, the file is not.
    as_user(server, CONFIG.watcher_account).delete_model_version_tag(MODEL, version, T.RELEASE_REQUEST)
    registry, store = watcher(server)
    second_pass = {d.version: d.action for d in watch_approvals(registry, AuditLog(store), store, CONFIG)}
    assert second_pass[version] == "already requested"
    assert store.list_keys(f"releases/requests/{MODEL}") == [request_key(MODEL, version)]
    assert registry.get_version(version).tags[T.RELEASE_REQUEST] == store.uri(request_key(MODEL, version))

    shown = cli(server, "bob", "audit", MODEL, "--json")
    assert shown.returncode == 0
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {"user": "alice", "version": version, "old": T.PENDING, "new": T.APPROVED, "outcome": "accepted"}.items() \
        <= next(e for e in lines if e["version"] == version and e["key"] == T.APPROVAL_STATUS).items()


def test_an_approval_written_around_the_server_is_reverted(server: dict[str, Any]) -> None:
    version = register(server)
    direct = MlflowClient(f"sqlite:///{server['workspace'] / 'mlflow.db'}",
                          registry_uri=f"sqlite:///{server['workspace'] / 'mlflow.db'}")
    direct.set_model_version_tag(MODEL, version, T.APPROVAL_STATUS, T.APPROVED)
    direct.set_model_version_tag(MODEL, version, T.APPROVED_BY, "alice")  # self-declared, proves nothing

    registry, store = watcher(server)
    decisions = {d.version: d for d in watch_approvals(registry, AuditLog(store), store, CONFIG)}
    assert decisions[version].action == "reverted"
    assert "no server-recorded Approved decision" in decisions[version].detail
    tags = registry.get_version(version).tags
    assert tags[T.APPROVAL_STATUS] == T.PENDING and T.APPROVED_BY not in tags
    assert "no server-recorded" in tags[T.APPROVAL_INVALID]
    assert not store.exists(request_key(MODEL, version))
