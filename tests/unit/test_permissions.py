"""The ownership table of registry writes, as pure functions: one owner per write, everyone else refused."""

from __future__ import annotations

import pytest

from contracts import tags as T
from model_registry.approval import ApprovalConfig
from model_registry.permissions import RunEvidence, Write, missing_fields, refuse_registration, refuse_write

CONFIG = ApprovalConfig()
ACCOUNTS = ["alice", "bob", CONFIG.pipeline_account, CONFIG.watcher_account, CONFIG.release_account,
            CONFIG.admin_account, "anonymous"]
PENDING = {T.APPROVAL_STATUS: T.PENDING, T.GATE: "passed", T.GATE_SUMMARY: "all gates passed: ok",
           T.DATASET_HASH: "d" * 64, T.BASE_MODEL: "builtin:tiny", T.SOURCE_RUN: "run-1", T.RUN_KEY: "key-1",
           T.TRIGGERED_BY: "ml-engineer"}
APPROVED = {**PENDING, T.APPROVAL_STATUS: T.APPROVED, T.APPROVED_BY: "alice"}


def write(action: str, key: str = "", value: str | None = None) -> Write:
    return Write(action=action, model="m", version="1", key=key, value=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("label", "made", "owner"), [
    ("approve", write("set-tag", T.APPROVAL_STATUS, T.APPROVED), "alice"),
    ("note", write("set-tag", T.APPROVAL_NOTE, "fine"), "alice"),
    ("release request", write("set-tag", T.RELEASE_REQUEST, "file:///r"), CONFIG.watcher_account),
    ("mirror status", write("set-tag", T.SM_SYNCED_STATUS, T.PENDING), CONFIG.watcher_account),
    ("release state", write("set-tag", "genaiops.release.state", "baking"), CONFIG.release_account),
    ("champion", write("set-alias", T.CHAMPION, "1"), CONFIG.release_account),
    ("clear challenger", write("delete-alias", T.CHALLENGER), CONFIG.release_account),
    ("delete version", write("delete-version"), CONFIG.admin_account),
    ("delete model", write("delete-model"), CONFIG.admin_account),
    ("register", write("create-version"), CONFIG.pipeline_account),
    ("create model", write("create-model"), CONFIG.pipeline_account),
    ("gate", write("set-tag", T.GATE, "passed"), None),
    ("lineage delete", write("delete-tag", T.DATASET_HASH), None),
    ("stamp", write("set-tag", T.APPROVED_BY, "alice"), None),
    ("description", write("update-version", value="**Gate passed.**"), None),
    ("stage", write("transition-stage", value="Production"), None),
    ("rename", write("rename-model", value="other"), None),
    ("free tag", write("set-tag", "team", "x"), None),
])
def test_each_write_has_one_owner_and_everyone_else_is_refused(label: str, made: Write, owner: str | None) -> None:
    allowed = [user for user in ACCOUNTS if refuse_write(user, made, PENDING, CONFIG, target=APPROVED) is None]
    assert allowed == ([owner] if owner else []), label


def test_the_watcher_only_sends_approvals_back_and_aliases_point_at_approved_versions() -> None:
    watcher = CONFIG.watcher_account
    assert refuse_write(watcher, write("set-tag", T.APPROVAL_STATUS, T.PENDING), APPROVED, CONFIG) is None
    assert refuse_write(watcher, write("set-tag", T.APPROVAL_STATUS, T.APPROVED), PENDING, CONFIG) is not None
    reason = refuse_write(CONFIG.release_account, write("set-alias", T.CHAMPION, "1"), None, CONFIG, target=PENDING)
    assert reason is not None and "only at an approved version" in reason


def test_missing_fields_are_named() -> None:
    assert missing_fields(Write(action="set-tag", model="", version="", key="")) == ["model", "version", "key"]
    assert missing_fields(Write(action="set-alias", model="m", key="")) == ["alias"]
    assert missing_fields(Write(action="webhook", model="")) == []


EVIDENCE = RunEvidence(run_id="run-1", run_key="key-1", triggered_by="ml-engineer", dataset_hash="d" * 64,
                       base_model="builtin:tiny", gate_passed=True, gate_summary="all gates passed: ok",
                       report_dataset_hash="d" * 64)


@pytest.mark.parametrize(("claim", "evidence", "reason"), [
    ({}, EVIDENCE, None),
    ({T.GATE: "failed", T.APPROVAL_STATUS: T.REJECTED}, EVIDENCE, None),  # claiming less is fine
    ({}, EVIDENCE.model_copy(update={"gate_passed": False}), "gate report failed"),
    ({}, EVIDENCE.model_copy(update={"gate_passed": None}), "has no gate report"),
    ({}, EVIDENCE.model_copy(update={"report_dataset_hash": "e" * 64}), "was made on dataset"),
    ({T.GATE_SUMMARY: "all gates passed: better"}, EVIDENCE, "differs from the source run's gate report"),
    ({T.DATASET_HASH: "e" * 64}, EVIDENCE, "the source run shows"),
    ({T.RUN_KEY: "key-2"}, EVIDENCE, "the source run shows 'key-1'"),
    ({T.SOURCE_RUN: "run-2"}, EVIDENCE, "is registered from run 'run-1'"),
    ({}, None, "does not exist"),
    ({T.GATE: "failed"}, EVIDENCE, "registered Rejected"),
    ({T.BASE_MODEL: ""}, EVIDENCE, "missing genaiops.base_model"),
    ({T.APPROVAL_STATUS: T.APPROVED}, EVIDENCE, "starts PendingManualApproval"),
    ({T.RELEASE_REQUEST: "x"}, EVIDENCE, "cannot be set at registration"),
    ({T.PACKAGE_URI: "s3://elsewhere/model.tar.gz"}, EVIDENCE, "genaiops.package_uri is 's3://elsewhere"),
    ({T.PACKAGE_URI: "s3://b/p/model.tar.gz", T.PACKAGE_DIGEST: "f" * 64, T.PACKAGE_IMAGE: "img"},
     EVIDENCE.model_copy(update={"package_uri": "s3://b/p/model.tar.gz", "package_digest": "f" * 64,
                                 "package_image": "img"}), None),
    ({}, EVIDENCE.model_copy(update={"package_digest": "f" * 64}), "genaiops.package_digest is None"),
    ({T.BUILD_SERVED: "bf16"}, EVIDENCE, "genaiops.build.served is 'bf16' but the source run shows None"),
    ({T.BUILD_SERVED: "bf16", T.BUILD_SPEEDUP: "3.00"}, EVIDENCE.model_copy(update={"builds": {
        T.BUILD_SERVED: "bf16", T.BUILD_SPEEDUP: "2.10"}}), "genaiops.build.speedup is '3.00'"),
    ({T.BUILD_SERVED: "bf16", T.BUILD_SPEEDUP: "2.10"}, EVIDENCE.model_copy(update={"builds": {
        T.BUILD_SERVED: "bf16", T.BUILD_SPEEDUP: "2.10"}}), None),
    ({}, EVIDENCE.model_copy(update={"builds": {T.BUILD_SERVED: "bf16"}}), "genaiops.build.served is None"),
])
def test_a_new_version_claims_no_more_than_its_run_shows(claim: dict[str, str], evidence: RunEvidence | None,
                                                          reason: str | None) -> None:
    found = refuse_registration({**PENDING, **claim}, "run-1", evidence)
    assert found is None if reason is None else (found is not None and reason in found), found


def test_every_registry_write_route_of_the_installed_mlflow_is_decided_by_the_guard() -> None:
    """A newer MLflow with a registry write this table does not know fails here (and is refused at run time)."""
    from mlflow.server import app

    from model_registry.auth_app import READS_BY_POST, REGISTRY_PATHS, WRITES

    unknown = sorted(
        (rule.rule, method) for rule in app.url_map.iter_rules() for method in rule.methods or ()
        if method not in ("GET", "HEAD", "OPTIONS") and any(part in rule.rule for part in REGISTRY_PATHS)
        and getattr(app.view_functions[rule.endpoint], "__name__", "") not in {*WRITES, *READS_BY_POST})
    assert unknown == []
    governed = {getattr(app.view_functions[r.endpoint], "__name__", "") for r in app.url_map.iter_rules()}
    assert set(WRITES) <= governed  # and every handler named in the table exists
