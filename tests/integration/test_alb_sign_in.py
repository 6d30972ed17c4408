"""People sign in to the approval server through its load balancer, as on AWS: the server on a real PostgreSQL,
behind a proxy that signs `x-amzn-oidc-data` as the ALB does. A header that does not prove who sent it (forged,
from another load balancer, expired, naming a service account) is refused with 401 and an audit entry, whatever
else the request carries; and `genaiops approval-server`, the container's command, stops whole on SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts import tags as T
from model_registry.approval import AuditEntry
from model_registry.audit import AuditLog
from model_registry.sign_in import SIGN_IN
from steps.artifacts import LocalStore
from tests import approvals
from tests.alb import OTHER_SIGNER, SESSION_COOKIE, SIGNER, SigningKey, key_endpoint
from tests.approvals import ALB_CONFIG, CONFIG, PEOPLE, as_user
from tests.servers import alb_approval_server, descendants

MODEL = "signed-in-model"
CURRENT_USER = "/ajax-api/2.0/mlflow/users/current"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workspace = tmp_path_factory.mktemp("alb-sign-in")
    with alb_approval_server(workspace, ALB_CONFIG, PEOPLE) as running:
        yield running


def send(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"message": text.decode(errors="replace")}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def sign_in_refusals(workspace: Path) -> list[AuditEntry]:
    return AuditLog(LocalStore(workspace / "artifacts")).entries(SIGN_IN)


def test_a_person_is_who_the_load_balancer_signed_and_has_no_password(server: dict[str, Any]) -> None:
    for person in ("alice", "bob"):
        status, answer = send(server["people_url"] + CURRENT_USER, headers={"Cookie": f"{SESSION_COOKIE}={person}"})
        assert status == 200 and answer["user"]["username"] == PEOPLE[person]["email"], answer
        assert answer["user"]["is_admin"] is False
    assert send(server["people_url"] + CURRENT_USER)[0] == 401  # not signed in: the load balancer stops it
    for password in ("", "guess"):  # the user the first sign-in created has no password anyone knows
        assert send(server["url"] + CURRENT_USER, headers=basic(PEOPLE["bob"]["email"], password))[0] == 401
    status, answer = send(server["url"] + CURRENT_USER, headers=basic(CONFIG.watcher_account,
                                                                      server["passwords"][CONFIG.watcher_account]))
    assert status == 200 and answer["user"]["username"] == CONFIG.watcher_account  # the internal door: basic auth
    assert server["keys"].asked == {server["key"].kid: 1}  # the key is fetched once, then cached


@pytest.mark.parametrize(("case", "reason"), [
    ("forged", "signature does not verify"),
    ("another load balancer", "not this server's load balancer"),
    ("expired", "has expired"),
    ("a service account", "a service account"),
    ("not a token", "not a signed token"),
])
def test_a_header_that_proves_nothing_is_refused_with_401_and_audited(server: dict[str, Any], case: str,
                                                                     reason: str) -> None:
    version = approvals.register(server, MODEL)
    key = server["key"]
    alice = PEOPLE["alice"]
    header = {"forged": lambda: SigningKey(key.kid).token(alice),  # an impostor's key under the ALB's kid
              "another load balancer": lambda: key.token(alice, signer=OTHER_SIGNER),
              "expired": lambda: key.token(alice, lifetime_s=-600),
              "a service account": lambda: key.token({**alice, "email": CONFIG.release_account}),
              "not a token": lambda: "alice@example.com"}[case]()
    before = len(sign_in_refusals(server["workspace"]))
    write = {"name": MODEL, "version": version, "key": T.APPROVAL_STATUS, "value": T.APPROVED}
    # Sent straight to the server (the way past the load balancer a workload inside the VPC has), even with a
    # service account's valid password beside it: the header is judged, and never falls back to basic auth.
    for headers in ({"x-amzn-oidc-data": header},
                    {"x-amzn-oidc-data": header, **basic(CONFIG.release_account,
                                                         server["passwords"][CONFIG.release_account])}):
        status, answer = send(server["url"] + "/ajax-api/2.0/mlflow/model-versions/set-tag", "POST", write, headers)
        assert status == 401 and reason in answer["message"], (case, answer)
        assert send(server["url"] + CURRENT_USER, headers=headers)[0] == 401
    refused = sign_in_refusals(server["workspace"])[before:]
    assert len(refused) == 4 and all(reason in e.outcome and e.outcome.startswith("refused") for e in refused)
    assert {e.route for e in refused} == {"POST /ajax-api/2.0/mlflow/model-versions/set-tag", f"GET {CURRENT_USER}"}
    if case != "not a token":
        claimed = CONFIG.release_account if case == "a service account" else alice["email"]
        assert {e.user for e in refused} == {f"unverified:{claimed}"}  # who it claimed to be, marked unverified
    tags = as_user(server, CONFIG.watcher_account).get_model_version(MODEL, version).tags
    assert tags[T.APPROVAL_STATUS] == T.PENDING and T.APPROVED_BY not in tags


def test_the_approval_server_stops_whole_on_sigterm_with_no_half_written_audit_entry(tmp_path: Path) -> None:
    """`genaiops approval-server`, as the container runs it, under a stream of refused writes (each one audited):
    SIGTERM stops it and every worker; every audit entry on disk is whole."""
    from pipelines.auth_server import free_port, wait_http
    from tests.postgres import postgres

    key = SigningKey("approvals-key-2")
    port = free_port()
    with postgres() as database, key_endpoint(key) as keys:
        (tmp_path / "config.yaml").write_text(json.dumps({"approval": ALB_CONFIG.model_dump()}))
        env = {**os.environ, "GENAIOPS_WORKSPACE": str(tmp_path / "ws"), "GENAIOPS_CONFIG": str(tmp_path / "config.yaml"),
               "GENAIOPS_SERVER_DATABASE_URI": database, "GENAIOPS_SERVER_SIGNER_ARN": SIGNER,
               "GENAIOPS_SERVER_KEYS_URL": keys.url, "GENAIOPS_SERVER_PORT": str(port), "GENAIOPS_SERVER_WORKERS": "2"}
        log = tmp_path / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen([str(Path(sys.executable).parent / "genaiops"), "approval-server"], env=env,
                                       stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", process, timeout=300, log=log)  # type: ignore[arg-type]
            assert database.split("@")[0].split(":")[-1] not in log.read_text()  # the password is never printed
            workers = descendants(process.pid)
            assert workers
            audit = tmp_path / "ws" / "artifacts" / "audit" / SIGN_IN
            stop = threading.Event()

            def hammer() -> None:
                forged = SigningKey(key.kid).token(PEOPLE["alice"])
                while not stop.is_set():
                    try:
                        send(f"{url}/ajax-api/2.0/mlflow/model-versions/set-tag", "POST",
                             {"name": MODEL, "version": "1", "key": T.APPROVAL_STATUS, "value": T.APPROVED},
                             {"x-amzn-oidc-data": forged})
                    except OSError:
                        return  # the server has gone

            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for thread in threads:
                thread.start()
            while len(list(audit.glob("*.json"))) < 20:  # refusals are being written when the signal comes
                assert process.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and
                    Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"]
        entries = [AuditEntry.model_validate_json(path.read_bytes()) for path in audit.glob("*.json")]
        assert len(entries) >= 20 and all(e.outcome.startswith("refused") for e in entries)
        assert not [p.name for p in audit.iterdir() if p.name.startswith(".")]  # no temp file left half-written
