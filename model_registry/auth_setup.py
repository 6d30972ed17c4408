"""Everything `mlflow server --app-name genaiops-auth` needs, prepared in one folder.

The folder holds the basic-auth config, the user store (SQLite), the approval policy the app
reads and the Flask secret; users are seeded from the approval config with passwords from the
environment, or generated once and kept in `passwords.json` (mode 0600) inside the workspace,
never in git.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from model_registry.alb_identity import AlbIdentityConfig
from model_registry.approval import ApprovalConfig
from model_registry.auth_app import POLICY_ENV

BASIC = "mlflow.server.auth:authenticate_request_basic_auth"
SIGN_IN = "model_registry.sign_in:authenticate"  # the load balancer's signed sign-in, then basic auth


class AuthServer(BaseModel):
    """How to start the server: its environment and the accounts it knows."""

    model_config = ConfigDict(frozen=True)
    folder: str
    env: dict[str, str]
    passwords_file: str
    users: list[str]


def parse_passwords(text: str) -> dict[str, str]:
    """`user:password,user2:password2` (what GENAIOPS_UI_PASSWORDS holds)."""
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"GENAIOPS_UI_PASSWORDS: {item!r} is not user:password")
        pairs[user] = password
    return pairs


def _write_private(path: Path, text: str) -> None:
    """Write a secret into a file created 0600, so that it is never readable by others, not even for a moment."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)


def _passwords(folder: Path, users: list[str], given: dict[str, str]) -> tuple[dict[str, str], Path]:
    path = folder / "passwords.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    merged = {user: given.get(user) or stored.get(user) or secrets.token_urlsafe(12) for user in users}
    if merged != stored:
        _write_private(path, json.dumps(merged, indent=2))
    os.chmod(path, 0o600)
    return merged, path


def auth_database(folder: Path, backend_store_uri: str) -> str:
    """Where the user store lives: on the backend store's database when that is a database server (PostgreSQL:
    one database to run, back up and encrypt), else a SQLite file beside the policy."""
    if backend_store_uri.startswith(("postgresql", "mysql", "mssql")):
        return backend_store_uri
    return f"sqlite:///{folder / 'users.db'}"


def prepare(folder: Path, *, approval: ApprovalConfig, audit: dict[str, Any], passwords: dict[str, str],
            backend_store_uri: str = "", identity: AlbIdentityConfig | None = None) -> AuthServer:
    """Write the auth config and policy, seed the user store, and return the server's environment.

    With `identity`, people sign in through the load balancer (`model_registry.sign_in`) and only the service
    accounts and the admin get passwords: an approver has no password to leak."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    folder.mkdir(parents=True, exist_ok=True)
    database = auth_database(folder, backend_store_uri)
    if (identity is None) != (approval.sign_in == "password"):
        raise ValueError("approval.sign_in is load-balancer: the server needs the load balancer's identity "
                         "(its signer ARN and key endpoint)" if identity is None else
                         "the load balancer's identity is given, but approval.sign_in is password")
    accounts = list(dict.fromkeys([approval.admin_account, *approval.users]))
    if identity is not None:
        accounts = [approval.admin_account, approval.pipeline_account, approval.watcher_account,
                    approval.release_account]
    chosen, passwords_file = _passwords(folder, accounts, passwords)
    ini = folder / "basic_auth.ini"
    # READ by default: a signed-in user reads everything and writes only what they created; every
    # registry write is decided by the genaiops-auth app (model_registry.permissions), whatever this says.
    _write_private(ini, "[mlflow]\n"
                   "default_permission = READ\n"
                   f"database_uri = {database.replace('%', '%%')}\n"  # configparser reads % as interpolation
                   f"admin_username = {approval.admin_account}\n"
                   f"authorization_function = {SIGN_IN if identity else BASIC}\n"
                   # A verified credential is remembered (as an HMAC, per process) for a minute: without
                   # it every API call of every UI page pays a deliberately slow PBKDF2 check.
                   "auth_cache_ttl_seconds = 60\n")
    policy = folder / "approval_policy.json"
    document = {"approval": approval.model_dump(), "audit": audit,
                "identity": identity.model_dump() if identity else None}
    policy.write_text(json.dumps(document, indent=2))
    secret = folder / "flask_secret"
    if not secret.exists():
        _write_private(secret, secrets.token_hex(32))

    store = SqlAlchemyStore()
    store.init_db(database)
    for user in accounts:
        admin = user == approval.admin_account
        if not store.has_user(user):
            try:
                store.create_user(user, chosen[user], is_admin=admin)
                continue
            except Exception:  # another task of the service created it first (two share one database)
                if not store.has_user(user):
                    raise
        store.update_user(user, password=chosen[user], is_admin=admin)
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": chosen[approval.admin_account],
        # A route MLflow's permissions do not cover is refused rather than allowed.
        "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true",
        # No job runner: the GenAI jobs it runs are refused here anyway (they write to the registry indirectly).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret.read_text(),
        POLICY_ENV: str(policy),
    }
    return AuthServer(folder=str(folder), env=env, passwords_file=str(passwords_file), users=accounts)


def server_command(mlflow: str, *, artifact_root: str, port: int, host: str = "127.0.0.1", workers: int = 1) -> list[str]:
    """The server's command line; the backend store goes in MLFLOW_BACKEND_STORE_URI (`server_env`), since a
    database URI carries a password that a command line would show to every user of the machine."""
    return [mlflow, "server", "--app-name", "genaiops-auth", "--default-artifact-root", artifact_root,
            "--host", host, "--port", str(port), "--workers", str(workers)]


def server_env(server: AuthServer, backend_store_uri: str) -> dict[str, str]:
    return {**server.env, "MLFLOW_BACKEND_STORE_URI": backend_store_uri}


def redacted(uri: str) -> str:
    """A store URI fit to print: the password of `scheme://user:password@host/...` replaced by ***."""
    import re

    return re.sub(r"^([a-z0-9+.-]+://[^:/@]+):[^@]*@", r"\1:***@", uri)
