"""An Application Load Balancer's sign-in, played for tests: an ES256 key the test makes, tokens signed as the ALB
signs `x-amzn-oidc-data` (base64url segments with padding; `kid`, `signer`, `exp` in the header), and the key
endpoint the server's key resolver is pointed at."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNER = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/genaiops-approvals/50dc6c495c0c9188"
OTHER_SIGNER = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/someone-else/0123456789abcdef"


class SigningKey:
    def __init__(self, kid: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.kid = kid
        self.private = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, claims: dict[str, Any], *, signer: str = SIGNER, lifetime_s: float = 120,
              kid: str | None = None, alg: str = "ES256") -> str:
        """`x-amzn-oidc-data` as the ALB makes it."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        expiry = int(time.time() + lifetime_s)
        header = {"alg": alg, "kid": kid or self.kid, "signer": signer, "iss": "https://cognito-idp.us-east-1."
                  "amazonaws.com/us-east-1_example", "client": "genaiops-approvals", "exp": expiry, "typ": "JWT"}
        body = {"sub": "7f4c0a8e-0000-4000-8000-000000000001", "exp": expiry, "iss": header["iss"], **claims}
        signing_input = f"{_padded(header)}.{_padded(body)}"
        r, s = decode_dss_signature(self.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        signature = base64.urlsafe_b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()
        return f"{signing_input}.{signature}"


def _padded(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()


@dataclass
class KeyEndpoint:
    url: str
    asked: dict[str, int] = field(default_factory=dict)  # how often each kid was asked for


@contextmanager
def key_endpoint(*keys: SigningKey) -> Iterator[KeyEndpoint]:
    """The region's public-key endpoint as the server's key resolver sees it: GET <url><kid> answers the PEM."""
    by_kid = {key.kid: key.public_pem for key in keys}
    endpoint = KeyEndpoint(url="")
    asked = endpoint.asked

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kid = self.path.rsplit("/", 1)[-1]
            asked[kid] = asked.get(kid, 0) + 1
            pem = by_kid.get(kid)
            self.send_response(200 if pem else 404)
            self.send_header("Content-Length", str(len(pem or b"")))
            self.end_headers()
            self.wfile.write(pem or b"")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/keys/"
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


SESSION_COOKIE = "AWSELBAuthSessionCookie-0"  # the ALB's session cookie after a sign-in
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length"})


@contextmanager
def signing_proxy(upstream: str, key: SigningKey, people: dict[str, dict[str, Any]],
                  signer: str = SIGNER) -> Iterator[str]:
    """The public load balancer in front of the approval server, played on 127.0.0.1: a request whose session
    cookie names one of `people` (cookie value -> the IdP's claims of that person) is forwarded with
    `x-amzn-oidc-data` signed for them; any `x-amzn-oidc-*` header the client sent is dropped, as is the request
    of someone not signed in (401, where the ALB would redirect to the sign-in page)."""
    import http.client
    import urllib.parse
    from http.cookies import SimpleCookie

    target = urllib.parse.urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
            session = cookie.get(SESSION_COOKIE)
            claims = people.get(session.value) if session is not None else None
            if claims is None:
                self.answer(401, [("Content-Type", "text/plain")], b"sign in first")
                return
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in HOP_BY_HOP and not k.lower().startswith("x-amzn-oidc")}
            headers["x-amzn-oidc-data"] = key.token(claims, signer=signer)
            headers["x-amzn-oidc-identity"] = str(claims.get("sub", ""))
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                self.answer(response.status, [(k, v) for k, v in response.getheaders()
                                              if k.lower() not in HOP_BY_HOP], response.read())
            finally:
                connection.close()

        def answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = forward  # noqa: N815

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
