"""Approvers work in the MLflow UI: a real headless Chromium logs in to the genaiops-auth server on 127.0.0.1,
opens the pending version and edits its approval tag as a person would. The server decides who may.

Both servers: the laptop's (basic auth in the browser) and the approval stack's (PostgreSQL, the person signed in
by a proxy that plays the public load balancer, as a Cognito user)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from contracts import tags as T
from model_registry.audit import AuditLog
from model_registry.mlflow_registry import MlflowRegistry
from model_registry.watcher import request_key, watch_approvals
from steps.artifacts import LocalStore
from tests.alb import SESSION_COOKIE
from tests.approvals import ALB_CONFIG, CONFIG, PEOPLE, as_user, name, register
from tests.browser import chromium
from tests.servers import alb_approval_server, approval_server

pytestmark = pytest.mark.e2e
MODEL = "summarizer"
NOTE = "ROUGE-L gain holds across the bootstrap interval"


@pytest.fixture(scope="module", params=["sqlite", "postgres-alb"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workspace = tmp_path_factory.mktemp(f"approval-ui-{request.param}")
    if request.param == "sqlite":
        with approval_server(workspace, CONFIG) as (url, passwords):
            yield {"url": url, "passwords": passwords, "workspace": workspace, "config": CONFIG}
    else:
        with alb_approval_server(workspace, ALB_CONFIG, PEOPLE) as running:
            yield {**running, "config": ALB_CONFIG}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def open_version(browser: Any, server: dict[str, Any], user: str, version: str) -> Any:
    """Log in as `user` and walk from the model list to the version page, as an approver would."""
    viewport = {"width": 1400, "height": 1000}
    if "people" in server:  # signed in at the load balancer: its session cookie, no password
        context = browser.new_context(viewport=viewport)
        context.add_cookies([{"name": SESSION_COOKIE, "value": user, "url": server["people_url"]}])
        url = server["people_url"]
    else:
        context = browser.new_context(http_credentials={"username": user, "password": server["passwords"][user]},
                                      viewport=viewport)
        url = server["url"]
    page = context.new_page()
    page.goto(f"{url}/#/models")
    promo = page.get_by_role("dialog")  # MLflow's one-off "new Model Registry UI" announcement
    with contextlib.suppress(PlaywrightTimeout):  # the announcement is shown once per browser profile
        promo.get_by_role("button", name="Close").click(timeout=5000)
    page.get_by_role("link", name=MODEL, exact=True).click()
    page.get_by_role("link", name=f"Version {version}", exact=True).click()
    tag_row(page, T.APPROVAL_STATUS).wait_for()
    return page


def tag_row(page: Any, key: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))


def add_tag(page: Any, key: str, value: str) -> Any:
    page.get_by_placeholder("Name", exact=True).fill(key)
    page.get_by_placeholder("Value", exact=True).fill(value)
    with page.expect_response(lambda r: r.url.endswith("/model-versions/set-tag")) as response:
        page.get_by_test_id("add-tag-button").click()
    return response.value


def edit_tag(page: Any, key: str, value: str) -> Any:
    row = tag_row(page, key)
    row.get_by_test_id("editable-table-button-edit").click()
    row.get_by_test_id("editable-table-edited-input").fill(value)
    with page.expect_response(lambda r: r.url.endswith("/model-versions/set-tag")) as response:
        row.get_by_test_id("editable-table-button-save").click()
    return response.value


def test_an_approver_approves_in_the_ui_and_the_server_stamps_who(server: dict[str, Any], browser: Any) -> None:
    version = register(server, MODEL)
    page = open_version(browser, server, "alice", version)
    assert "Gates passed." in page.inner_text("body")  # the description an approver reads first

    assert add_tag(page, T.APPROVAL_NOTE, NOTE).status == 200
    assert edit_tag(page, T.APPROVAL_STATUS, T.APPROVED).status == 200
    page.reload()
    tag_row(page, T.APPROVED_BY).wait_for()
    assert name(server, "alice") in tag_row(page, T.APPROVED_BY).inner_text()  # stamped by the server, shown in the UI
    page.context.close()

    tags = as_user(server, CONFIG.watcher_account).get_model_version(MODEL, version).tags
    assert tags[T.APPROVAL_STATUS] == T.APPROVED and tags[T.APPROVED_BY] == name(server, "alice")
    assert tags[T.APPROVAL_NOTE] == NOTE
    store = LocalStore(server["workspace"] / "artifacts")
    decisions = [e for e in AuditLog(store).entries(MODEL, version) if e.key == T.APPROVAL_STATUS]
    assert [(e.user, e.old, e.new, e.outcome, e.note) for e in decisions] == \
        [(name(server, "alice"), T.PENDING, T.APPROVED, "accepted", NOTE)]

    as_user(server, CONFIG.watcher_account)
    registry = MlflowRegistry(server["url"], experiment="approvals", model_name=MODEL)
    outcome = {d.version: d.action for d in watch_approvals(registry, AuditLog(store), store, server["config"])}
    assert outcome[version] == "release requested"
    assert store.exists(request_key(MODEL, version))


def test_a_non_approver_is_refused_in_the_ui_and_nothing_changes(server: dict[str, Any], browser: Any) -> None:
    version = register(server, MODEL)
    before = as_user(server, CONFIG.watcher_account).get_model_version(MODEL, version).tags
    page = open_version(browser, server, "bob", version)

    response = edit_tag(page, T.APPROVAL_STATUS, T.APPROVED)
    assert response.status == 403
    assert "is not in the approvers group" in response.text()
    page.reload()
    tag_row(page, T.APPROVAL_STATUS).wait_for()
    assert T.PENDING in tag_row(page, T.APPROVAL_STATUS).inner_text()
    assert tag_row(page, T.APPROVED_BY).count() == 0
    page.context.close()

    assert as_user(server, CONFIG.watcher_account).get_model_version(MODEL, version).tags == before
    store = LocalStore(server["workspace"] / "artifacts")
    entries = [e for e in AuditLog(store).entries(MODEL, version) if e.action != "create-version"]
    assert [(e.user, e.new, e.outcome.split(":")[0]) for e in entries] == [(name(server, "bob"), T.APPROVED, "refused")]
    assert entries[0].route == "POST /ajax-api/2.0/mlflow/model-versions/set-tag"  # the UI's route
    as_user(server, CONFIG.watcher_account)
    registry = MlflowRegistry(server["url"], experiment="approvals", model_name=MODEL)
    watch_approvals(registry, AuditLog(store), store, server["config"])
    assert not store.exists(request_key(MODEL, version))
