"""Who a person is behind the approval server's public load balancer.

The ALB signs people in (Cognito, or a federated IdP through it) and passes who they are to the server in
`x-amzn-oidc-data`: a JWT it signs with ES256. The server does not take the header's word for it: it verifies the
signature with the ALB's public key for the token's `kid` (fetched from the region's key endpoint, and cached),
that the `signer` is this ALB, and that the token has not expired; then one claim of it (`email` by default)
names the MLflow user, whom the approval rules (`model_registry.permissions`) judge as any other. Service
accounts, which reach the server through its internal load balancer, keep basic auth.

`x-amzn-oidc-data` is base64url with padding, as AWS documents it; PyJWT reads it as any JWT.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

HEADER = "x-amzn-oidc-data"


class IdentityError(Exception):
    """The header does not prove who sent the request; the message says why (it is logged and audited)."""


class AlbIdentityConfig(BaseModel):
    """How the server checks its public load balancer's sign-in (the `identity` of its policy file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    signer: str = Field(description="the ARN of the load balancer whose signature counts")
    keys: str = Field(description="the URL the public key of a `kid` is appended to: "
                                  "https://public-keys.auth.elb.<region>.amazonaws.com/")
    claim: str = Field("email", description="the claim that names the MLflow user")
    leeway_s: int = Field(30, ge=0, le=300, description="clock skew allowed on the expiry")

    @classmethod
    def for_region(cls, signer: str, region: str, **more: Any) -> AlbIdentityConfig:
        return cls(signer=signer, keys=f"https://public-keys.auth.elb.{region}.amazonaws.com/", **more)


class KeyCache:
    """The load balancer's public keys by `kid`, each fetched once (keys rotate by kid, never in place)."""

    def __init__(self, base_url: str, fetch: Callable[[str], bytes] | None = None, limit: int = 64) -> None:
        self.base_url, self.limit = base_url, limit
        self.fetch = fetch or _fetch
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, kid: str) -> Any:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
        if not kid or "/" in kid or ".." in kid:
            raise IdentityError(f"the token's kid {kid!r} names no key")
        try:
            key = load_pem_public_key(self.fetch(self.base_url + kid))
        except (OSError, ValueError) as exc:
            raise IdentityError(f"the public key {kid} could not be had from {self.base_url}: {exc}") from None
        with self._lock:
            if len(self._keys) >= self.limit:
                self._keys.pop(next(iter(self._keys)))
            self._keys[kid] = key
        return key


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def _segment(text: str) -> dict[str, Any]:
    padded = text + "=" * (-len(text) % 4)
    document = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def verify(token: str, config: AlbIdentityConfig, keys: KeyCache, *, now: float | None = None) -> str:
    """The user the token names, or IdentityError saying why it does not count."""
    import jwt

    parts = token.split(".")
    if len(parts) != 3:
        raise IdentityError("the header is not a signed token")
    try:
        header = _segment(parts[0])
    except ValueError as exc:
        raise IdentityError(f"the token's header cannot be read ({exc})") from None
    if header.get("alg") != "ES256":
        raise IdentityError(f"the token is signed with {header.get('alg')!r}, not ES256")
    if header.get("signer") != config.signer:
        raise IdentityError(f"the token was signed by {header.get('signer')!r}, not this server's load balancer")
    moment = time.time() if now is None else now
    expiry = header.get("exp")
    if not isinstance(expiry, (int, float)) or expiry + config.leeway_s < moment:
        raise IdentityError("the token has expired" if isinstance(expiry, (int, float)) else "the token has no expiry")
    try:
        claims = jwt.decode(token, keys.get(str(header.get("kid", ""))), algorithms=["ES256"],
                            leeway=config.leeway_s, options={"verify_aud": False, "require": []})
    except jwt.ExpiredSignatureError:
        raise IdentityError("the token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise IdentityError(f"the token's signature does not verify ({exc})") from None
    user = claims.get(config.claim)
    if not isinstance(user, str) or not user.strip():
        raise IdentityError(f"the token carries no {config.claim!r} claim")
    return user.strip()
