"""Who sent a request to the approval server: the `authorization_function` of its basic-auth config.

Two doors, one set of rules. People come through the public load balancer, which signs them in (Cognito) and
passes who they are in `x-amzn-oidc-data`; when the policy file has an `identity` section the server verifies that
header itself (`model_registry.alb_identity`) and the claim it names is the MLflow user, created in the user store
on first sign-in with a password nobody knows (so the name cannot be used with basic auth). Service accounts come
through the internal load balancer with basic auth, as on a laptop. A header that does not verify is refused with
401 and an audit entry, whatever else the request carries; it never falls back to basic auth.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from model_registry.alb_identity import HEADER, AlbIdentityConfig, IdentityError, KeyCache, verify
from model_registry.approval import AuditEntry

log = logging.getLogger(__name__)

SIGN_IN = "_sign-in"  # the audit log's "model" for refused sign-ins: `genaiops audit _sign-in` lists them


@lru_cache(maxsize=1)
def identity() -> tuple[AlbIdentityConfig, KeyCache] | None:
    """The load balancer's sign-in the server trusts, from the policy file's `identity`; None: basic auth only."""
    from model_registry.auth_app import POLICY_ENV

    document = json.loads(Path(os.environ[POLICY_ENV]).read_text())
    if not document.get("identity"):
        return None
    config = AlbIdentityConfig.model_validate(document["identity"])
    return config, KeyCache(config.keys)


def authenticate() -> Any:
    """MLflow's contract: a werkzeug `Authorization` naming the user, or the response that refuses the request."""
    from flask import request
    from mlflow.server.auth import authenticate_request_basic_auth

    trusted = identity()
    header = request.headers.get(HEADER)
    if trusted is None or header is None:
        return authenticate_request_basic_auth()
    config, keys = trusted
    try:
        user = verify(header, config, keys)
        _not_a_service_account(user)
    except IdentityError as exc:
        return _refuse(str(exc), _claimed(header, config.claim))
    return _signed_in(user)


def _not_a_service_account(user: str) -> None:
    from model_registry.auth_app import policy

    approval = policy()[0]
    services = {approval.pipeline_account, approval.watcher_account, approval.release_account,
                approval.admin_account}
    if user in services:
        raise IdentityError(f"the sign-in names {user!r}, a service account: service accounts use basic auth "
                            "through the internal load balancer")


def _signed_in(user: str) -> Any:
    from mlflow.server.auth import store
    from werkzeug.datastructures import Authorization

    if not store.has_user(user):
        try:
            store.create_user(user, secrets.token_urlsafe(32), is_admin=False)
        except Exception:  # another worker created it first
            if not store.has_user(user):
                raise
        log.info("first sign-in of %s through the load balancer", user)
    return Authorization("bearer", {"username": user})


def _claimed(header: str, claim: str) -> str:
    """Who the refused header says it is (not verified: for the audit entry only)."""
    import jwt

    try:
        value = jwt.decode(header, options={"verify_signature": False}).get(claim)
    except Exception:
        return "(unreadable)"
    return f"unverified:{value}" if isinstance(value, str) and value else "(unreadable)"


def _refuse(reason: str, user: str) -> Any:
    from flask import jsonify, request

    from model_registry.audit import now
    from model_registry.auth_app import audit

    audit(AuditEntry(model=SIGN_IN, version="", user=user[:200], at=now(), key="", old=None, new=None,
                     outcome=f"refused: {reason}", action="sign-in", route=f"{request.method} {request.path}"[:500]))
    log.warning("refused a sign-in on %s %s: %s", request.method, request.path, reason)
    response = jsonify({"error_code": "UNAUTHENTICATED", "message": f"sign-in refused: {reason}"})
    response.status_code = 401
    return response
