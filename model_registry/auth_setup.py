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

from model_registry.approval import ApprovalConfig
from model_registry.auth_app import POLICY_ENV


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


def prepare(folder: Path, *, approval: ApprovalConfig, audit: dict[str, Any], passwords: dict[str, str]) -> AuthServer:
    """Write the auth config and policy, seed the user store, and return the server's environment."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    folder.mkdir(parents=True, exist_ok=True)
    database = f"sqlite:///{folder / 'users.db'}"
    accounts = list(dict.fromkeys([approval.admin_account, *approval.users]))
    chosen, passwords_file = _passwords(folder, accounts, passwords)
    ini = folder / "basic_auth.ini"
    # READ by default: a signed-in user reads everything and writes only what they created; every
    # registry write is decided by the genaiops-auth app (model_registry.permissions), whatever this says.
    ini.write_text("[mlflow]\n"
                   "default_permission = READ\n"
                   f"database_uri = {database}\n"
                   f"admin_username = {approval.admin_account}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   # A verified credential is remembered (as an HMAC, per process) for a minute: without
                   # it every API call of every UI page pays a deliberately slow PBKDF2 check.
                   "auth_cache_ttl_seconds = 60\n")
    policy = folder / "approval_policy.json"
    policy.write_text(json.dumps({"approval": approval.model_dump(), "audit": audit}, indent=2))
    secret = folder / "flask_secret"
    if not secret.exists():
        _write_private(secret, secrets.token_hex(32))

    store = SqlAlchemyStore()
    store.init_db(database)
    for user in accounts:
        if store.has_user(user):
            store.update_user(user, password=chosen[user], is_admin=user == approval.admin_account)
        else:
            store.create_user(user, chosen[user], is_admin=user == approval.admin_account)
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


def server_command(mlflow: str, *, backend_store_uri: str, artifact_root: str, port: int) -> list[str]:
    return [mlflow, "server", "--app-name", "genaiops-auth", "--backend-store-uri", backend_store_uri,
            "--default-artifact-root", artifact_root, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
