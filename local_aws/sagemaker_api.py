"""SageMaker's JSON protocol as the local control plane speaks it: requests checked against botocore's
service model, answers and errors shaped as SageMaker's.

botocore checks types and required members on the client; SageMaker checks the rest on the
server (enums, lengths, ranges, patterns). `check` does both (taking `file://` where SageMaker
takes an S3 URI), so a request that SageMaker would
refuse is refused here with SageMaker's `ValidationException` and its wording, whatever client
sent it (boto3, the aws CLI, curl).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from functools import cache
from typing import Any

log = logging.getLogger("local_aws.sagemaker_api")

ACCOUNT = "000000000000"  # the local account of every ARN the local control plane makes
TARGET_PREFIX = "SageMaker."
# Where SageMaker takes an S3 URI, the local control plane also takes a file:// URI: there is no S3 locally.
LOCAL_URI_SHAPES = frozenset({"Url", "DestinationS3Uri", "S3Uri", "S3ModelUri"})
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_REQUEST_BYTES = 16 << 20  # a control-plane request; SageMaker's are a few kilobytes
RUNTIME_PATH = re.compile(r"/endpoints/([^/]+)/invocations")


class ApiError(Exception):
    """An error answer: SageMaker's error code, its message, and the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def body(self) -> bytes:
        return json.dumps({"__type": self.code, "message": self.message}).encode()


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


@cache
def service_model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


def arn(region: str, kind: str, name: str) -> str:
    """SageMaker's ARN of a resource (the name part is lower case, as SageMaker writes it)."""
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kind}/{name.lower()}"


def timestamp(when: datetime | None = None) -> float:
    """Timestamps travel as epoch seconds in the JSON protocol."""
    return round((when or datetime.now(UTC)).timestamp(), 3)


def check(operation: str, params: dict[str, Any]) -> None:
    """Raise SageMaker's ValidationException for a request its service model does not allow."""
    from botocore.validate import ParamValidator

    shape = service_model().operation_model(operation).input_shape
    if shape is None:
        return
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise validation(report.generate_report().replace("\n", " "))
    errors: list[str] = []
    _constraints(shape, params, "", errors)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise validation(f"{len(errors)} validation {noun} detected: " + "; ".join(errors[:10]))


def _constraints(shape: Any, value: Any, where: str, errors: list[str]) -> None:
    """The constraints botocore leaves to the server, in the words AWS services use for them."""
    meta = shape.metadata
    kind = shape.type_name

    def fail(constraint: str) -> None:
        shown = value if not isinstance(value, (dict, list)) else json.dumps(value)[:80]
        errors.append(f"Value '{shown}' at '{where or 'request'}' failed to satisfy constraint: {constraint}")

    if kind == "structure":
        for name, member in shape.members.items():
            if name in value:
                _constraints(member, value[name], f"{where}.{_lower(name)}" if where else _lower(name), errors)
    elif kind == "list":
        if "max" in meta and len(value) > meta["max"]:
            fail(f"Member must have length less than or equal to {meta['max']}")
        for index, item in enumerate(value, start=1):
            _constraints(shape.member, item, f"{where}.{index}.member", errors)
    elif kind == "map":
        for key, item in value.items():
            _constraints(shape.value, item, f"{where}.{key}", errors)
    elif kind == "string":
        if shape.enum and value not in shape.enum:
            fail(f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
        elif "max" in meta and len(value) > meta["max"]:
            fail(f"Member must have length less than or equal to {meta['max']}")
        elif shape.name in LOCAL_URI_SHAPES and value.startswith("file:///"):
            pass
        elif "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            fail(f"Member must satisfy regular expression pattern: {meta['pattern']}")
    elif kind in ("integer", "long", "float", "double") and "max" in meta and value > meta["max"]:
        fail(f"Member must have value less than or equal to {meta['max']}")


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # Java's \p{...} classes are not Python's; the ones SageMaker's model uses, approximately.
    translated = (pattern.replace(r"\p{XDigit}", "0-9a-fA-F").replace(r"\p{Alnum}", "a-zA-Z0-9")
                  .replace(r"\p{L}", "a-zA-Z").replace(r"\p{Z}", " ").replace(r"\p{N}", "0-9"))
    try:
        return re.compile(translated, re.DOTALL)
    except re.error:
        return re.compile(".*", re.DOTALL)


def _lower(name: str) -> str:
    return name[:1].lower() + name[1:]


def serve_api(call: Any, host: str = "127.0.0.1", port: int = 0, runtime: Any = None) -> Any:
    """A threading HTTP server answering SageMaker's JSON protocol with `call(action, params) -> dict`, and, with
    `runtime(name, path, headers, body) -> (status, headers, body)`, SageMaker Runtime's
    `POST /endpoints/{name}/invocations` at the same URL.

    `GET /_genaiops/health` answers 200, for the process that waits for it to start."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from serving.handler import MAX_BODY_BYTES
    from serving.protocol import error_reply

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "genaiops-sagemaker"

        def do_GET(self) -> None:
            if self.path == "/_genaiops/health":
                self._reply(200, b'{"status": "ok"}', "application/json")
            else:
                self._reply(404, ApiError("UnknownOperationException", f"no route GET {self.path}").body())

        def do_POST(self) -> None:
            declared = self.headers.get("Content-Length") or "0"
            length = int(declared) if declared.isdigit() else -1
            invocation = RUNTIME_PATH.fullmatch(self.path.split("?")[0])
            if invocation is not None and runtime is not None:
                if not 0 <= length <= MAX_BODY_BYTES:
                    self.close_connection = True  # the body is not read
                    status, headers, body = error_reply(413, f"body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
                else:
                    raw = self.rfile.read(length) if length else b""
                    status, headers, body = runtime(invocation.group(1), self.path, dict(self.headers.items()), raw)
                self._reply(status, body, headers.get("Content-Type", "application/json"), headers=headers)
                return
            if not 0 <= length <= MAX_REQUEST_BYTES:
                self.close_connection = True
                self._reply(413, ApiError("SerializationException", f"the request body is {declared} bytes; the "
                                                                    f"limit is {MAX_REQUEST_BYTES}", 413).body())
                return
            raw = self.rfile.read(length) if length else b""
            target = self.headers.get("X-Amz-Target", "")
            request_id = str(uuid.uuid4())
            try:
                if not target.startswith(TARGET_PREFIX):
                    raise ApiError("UnknownOperationException", f"X-Amz-Target {target!r} is not a SageMaker action")
                try:
                    params = json.loads(raw or b"{}")
                except (ValueError, RecursionError):
                    raise ApiError("SerializationException", "the request body is not JSON (or nests too deep)") \
                        from None
                if not isinstance(params, dict):
                    raise ApiError("SerializationException", "the request body must be a JSON object")
                answer = call(target[len(TARGET_PREFIX):], params)
                self._reply(200, json.dumps(answer).encode(), request_id=request_id)
            except ApiError as exc:
                self._reply(exc.status, exc.body(), request_id=request_id)
            except Exception as exc:  # a bug: answered as SageMaker answers its own failures, and logged
                log.exception("%s failed", target)
                self._reply(500, ApiError("InternalFailure", f"{type(exc).__name__}: {exc}", 500).body(),
                            request_id=request_id)

        def _reply(self, status: int, body: bytes, content_type: str = CONTENT_TYPE, request_id: str = "",
                   headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if request_id:
                self.send_header("x-amzn-RequestId", request_id)
            for key, value in (headers or {}).items():
                if key.lower() != "content-type":
                    self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
