"""The local endpoint's request path: a router in front of one model-server process per variant.

It answers the container route `POST /invocations` and the SageMaker Runtime route
`POST /endpoints/{name}/invocations` alike, so an unchanged boto3 `sagemaker-runtime` client (or
`aws sagemaker-runtime invoke-endpoint --endpoint-url …`) talks to it as to a real endpoint.
Production variants share traffic by weight, or one is picked with
`X-Amzn-SageMaker-Target-Variant`; the answer says which in `X-Amzn-Invoked-Production-Variant`.
Shadow variants get a sampled, mirrored copy after the caller's request is on its way; their
answers and errors go to the capture files and metrics only, and a shadow that crashes or hangs
costs callers nothing. Shadow processes run at the lowest CPU priority and, while production has
requests in flight, are stopped but for their `share_while_busy` of the time (`serving.yielding`).
Per-variant metrics use CloudWatch's names and units; data capture uses SageMaker's format.

The host (`python -m local_aws.router --folder <endpoint folder>`) serves HTTP here; its
`local_aws.supervisor` starts the variant processes, health-checks them, restarts one that crashes,
applies weight, variant and fleet changes while serving (`POST /_genaiops/reload`, loopback only)
and stops everything on SIGTERM. While a blue/green deployment runs two fleets, a request first
goes to a fleet by its share of the traffic, then to a variant of it by weight; a shadow mirrors
the requests of its own fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local_aws.capture import CaptureWriter, capture_record
from local_aws.endpoint import EndpointConfig, EndpointStore, VariantConfig, now
from local_aws.supervisor import Supervisor
from local_aws.variant import Variant
from monitoring.metrics import SAGEMAKER_NAMESPACE, MetricDatum, MetricSink, SqliteMetricSink
from serving.channel import Answer
from serving.handler import MAX_BODY_BYTES
from serving.protocol import (
    BATCH_SIZE,
    CUSTOM_ATTRIBUTES,
    INFERENCE_ID,
    INVOKED_VARIANT,
    MODEL_TIME_US,
    REQUEST_ID,
    TARGET_VARIANT,
    Reply,
    error_reply,
    error_response,
)
from serving.yielding import active_clock
from steps.offline import go_offline

log = logging.getLogger("local_aws.router")

MAX_SHADOW_PENDING = 512  # mirrored copies waiting on shadows; past it, copies are dropped (and counted)
# ASGI gives header names in lower case
TARGET_VARIANT_KEY, CUSTOM_ATTRIBUTES_KEY, INFERENCE_ID_KEY = (h.lower() for h in (TARGET_VARIANT, CUSTOM_ATTRIBUTES,
                                                                                   INFERENCE_ID))


class Endpoint:
    """The request path of one local endpoint: its variants' processes and route table are its fleet's
    (`Supervisor`), which knows nothing of requests."""

    def __init__(self, fleet: Supervisor, sink: MetricSink, default_capture: Path) -> None:
        self.fleet, self.sink, self.name = fleet, sink, fleet.name
        self.default_capture = default_capture
        self.capture = CaptureWriter(self._capture_destination(), self.name)
        fleet.capture_path = self.capture.location
        self._metrics: list[MetricDatum] = []
        self._shadow_pending = 0
        self._busy = 0  # production requests in flight: while there are any, shadows are stopped
        self._random = random.Random()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def config(self) -> EndpointConfig:
        return self.fleet.config

    def _capture_destination(self) -> str:
        return self.fleet.config.capture.destination or str(self.default_capture)

    async def start(self) -> None:
        await self.fleet.start()
        if self.fleet.status == "InService":
            self._spawn_task(self._flush_metrics())

    async def reload(self) -> dict[str, Any]:
        """Apply the fleet's new config; a changed capture destination takes effect with it (as SageMaker's
        DataCaptureConfig does)."""
        result = await self.fleet.reload()
        destination = self._capture_destination()
        if destination != self.capture.destination:
            previous, self.capture = self.capture, CaptureWriter(destination, self.name)
            self.fleet.capture_path = self.capture.location
            self.fleet.publish()
            previous.close()
        return result

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.fleet.stop()
        await self._flush_once()
        self.capture.close()

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- requests ------------------------------------------------------------------------

    def _pick(self, target: str | None) -> Variant | str:
        """A fleet by its share of the traffic, then a production variant of it by weight (or the target)."""
        routes = self.fleet.routes
        if target:
            candidates = [r for r in routes if any(v.config.name == target for v in r.variants)]
            if candidates:
                route = candidates[0] if len(candidates) == 1 else self._random.choices(
                    candidates, weights=[r.share for r in candidates])[0]
                return next(v for v in route.variants if v.config.name == target)
            known = sorted({v.config.name for v in self.fleet.variants.values() if not v.config.shadow})
            return f"target variant {target!r} is not a production variant in service of endpoint {self.name} " \
                   f"(variants: {', '.join(known)})"
        if not routes:
            return f"endpoint {self.name} has no production variant in service"
        if len(routes) == 1:
            route = routes[0]
        elif sum(r.share for r in routes) <= 0:
            route = routes[0]  # shares of fleets in service can all be 0 only briefly; the first fleet answers
        else:
            route = self._random.choices(routes, weights=[r.share for r in routes])[0]
        production, weights = route.variants, route.weights
        if len(production) == 1:
            return production[0]
        if sum(weights) <= 0:
            return f"endpoint {self.name}: every production variant in service has weight 0"
        return self._random.choices(production, weights=weights)[0]

    async def invoke(self, headers: Mapping[str, str], body: bytes) -> Forwarded:
        """Forward one request (`headers` with lower-case names) to a production variant.

        The caller sends the reply, then calls `account` for metrics, capture and shadow copies,
        so that none of them delays the answer.
        """
        started = time.perf_counter()
        picked = self._pick(headers.get(TARGET_VARIANT_KEY))
        if isinstance(picked, str):
            return Forwarded(error_reply(400, picked))
        variant = picked
        content_type = headers.get("content-type", "application/json")
        accept = headers.get("accept", "application/json")
        attributes = headers.get(CUSTOM_ATTRIBUTES_KEY)
        variant.in_flight += 1
        self._busy += 1
        if self._busy == 1:  # production went busy: shadows step aside
            for throttle in self.fleet.throttles():
                throttle.busy()
        sent = time.perf_counter()
        try:
            upstream = await variant.channel.invoke(body, content_type=content_type, accept=accept,
                                                    custom_attributes=attributes, timeout=self.config.timeout_s + 5)
            status, answer, upstream_headers = upstream.status, upstream.body, upstream.headers
        except (OSError, TimeoutError) as exc:  # the variant's process died or hung: the caller gets a ModelError
            status, upstream_headers = 424, {}
            reason = "no answer within the timeout" if isinstance(exc, TimeoutError) else str(exc)
            answer, _ = error_response(424, f"variant {variant.config.name} did not answer: {reason}",
                                       original_status=502)
        finally:
            variant.in_flight -= 1
            self._busy -= 1
            if not self._busy:
                for throttle in self.fleet.throttles():
                    throttle.idle()
        model_us = (time.perf_counter() - sent) * 1e6
        reply_headers = {INVOKED_VARIANT: variant.config.name, REQUEST_ID: str(uuid.uuid4())}
        if status == 200:
            reply_headers["Content-Type"] = upstream_headers.get("Content-Type", "application/json")
            for key in (CUSTOM_ATTRIBUTES, MODEL_TIME_US, BATCH_SIZE):
                if key in upstream_headers:
                    reply_headers[key] = upstream_headers[key]
            reply: Reply = (200, reply_headers, answer)
        else:
            code = status if status in (400, 413, 424) else 424
            error_body, error_headers = error_response(code, _message(answer), original_status=status)
            reply = (code, {**reply_headers, **error_headers}, error_body)
        return Forwarded(reply, variant=variant.config.name, fleet=variant.config.fleet, model_us=model_us,
                          overhead_us=(time.perf_counter() - started) * 1e6 - model_us, request=body, answer=answer,
                          content_type=content_type, accept=accept, attributes=attributes,
                          inference_id=headers.get(INFERENCE_ID_KEY))

    def account(self, done: Forwarded) -> None:
        """After the reply went out: metrics, data capture and the shadows' copies."""
        if done.variant is None:
            return
        status, headers, _ = done.reply
        self._record(done.variant, status, done.model_us, done.overhead_us)
        capture = self.config.capture
        if capture.enabled and self._random.random() * 100 < capture.sampling_percentage:
            self.capture.write(done.variant, capture_record(
                done.request, done.answer, content_type=done.content_type,
                accept=headers.get("Content-Type", done.accept), inference_id=done.inference_id,
                when=datetime.now(UTC), error=status != 200, event_id=headers.get(REQUEST_ID)))
        for shadow in self.config.shadows:
            if shadow.fleet == done.fleet and self._random.random() * 100 < shadow.sampling_percentage:
                self._spawn_task(self._mirror(shadow, done.request, done.content_type, done.accept, done.attributes,
                                              done.inference_id, headers.get(REQUEST_ID)))

    async def _mirror(self, shadow: VariantConfig, body: bytes, content_type: str, accept: str,
                      attributes: str | None, inference_id: str | None, event_id: str | None = None) -> None:
        """The shadow's copy: answered or not, it only ever reaches the capture files and metrics."""
        variant = self.fleet.variants.get(shadow.key)
        if variant is None or variant.status != "InService":
            return
        if self._shadow_pending >= MAX_SHADOW_PENDING:  # a hung shadow must not pile up copies without bound
            self._record(shadow.name, 503, 0, 0)
            return
        self._shadow_pending += 1
        sent = time.perf_counter()
        try:
            # The shadow's clock stands still while the router keeps it stopped; the shadow answers its own
            # timeout, so the router waits a little longer (a hung shadow process answers nothing).
            upstream = await _within(variant.channel.invoke(body, content_type=content_type, accept=accept,
                                                            custom_attributes=attributes, timeout=None),
                                     self.config.timeout_s + 5, active_clock(variant.throttle))
            answer, status = upstream.body, upstream.status
        except (OSError, TimeoutError) as exc:
            status = 424
            reason = "no answer within the timeout" if isinstance(exc, TimeoutError) else str(exc)
            answer, _ = error_response(424, f"shadow {shadow.name}: {reason}", original_status=502)
        finally:
            self._shadow_pending -= 1
        model_us = (time.perf_counter() - sent) * 1e6
        self._record(shadow.name, status, model_us, 0)
        if self.config.capture.enabled:
            self.capture.write(shadow.name, capture_record(
                body, answer, content_type=content_type,
                accept="application/json", inference_id=inference_id, when=datetime.now(UTC), error=status != 200,
                event_id=event_id))

    def _record(self, variant: str, status: int, model_us: float, overhead_us: float) -> None:
        self._metrics.extend(invocation_datums(self.name, variant, status, model_us, overhead_us))

    async def _flush_once(self) -> None:
        batch, self._metrics = self._metrics, []
        if batch:
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.sink.put, batch)
            except Exception:
                log.exception("could not write %d metric datums", len(batch))

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._flush_once()


def invocation_datums(endpoint: str, variant: str, status: int, model_us: float,
                      overhead_us: float) -> list[MetricDatum]:
    """One invocation's per-variant metrics, with CloudWatch's names, units and dimensions."""
    dimensions = {"EndpointName": endpoint, "VariantName": variant}
    when = datetime.now(UTC)
    datums = [
        MetricDatum(namespace=SAGEMAKER_NAMESPACE, name="Invocations", value=1, unit="Count",
                    dimensions=dimensions, timestamp=when),
        # The caller's fault (400, 413) is a 4XX; the model's (a ModelError 424: it failed, timed out or its
        # process died) is a 5XX, as SageMaker counts a container's own 5xx answer behind a ModelError.
        MetricDatum(namespace=SAGEMAKER_NAMESPACE, name="Invocation4XXErrors",
                    value=float(400 <= status < 500 and status != 424), unit="Count", dimensions=dimensions,
                    timestamp=when),
        MetricDatum(namespace=SAGEMAKER_NAMESPACE, name="Invocation5XXErrors", value=float(status >= 500 or status == 424),
                    unit="Count", dimensions=dimensions, timestamp=when),
    ]
    if model_us:
        datums.append(MetricDatum(namespace=SAGEMAKER_NAMESPACE, name="ModelLatency", value=round(model_us),
                                  unit="Microseconds", dimensions=dimensions, timestamp=when))
    if overhead_us:
        datums.append(MetricDatum(namespace=SAGEMAKER_NAMESPACE, name="OverheadLatency", value=round(overhead_us),
                                  unit="Microseconds", dimensions=dimensions, timestamp=when))
    return datums


async def _within(work: Coroutine[Any, Any, Answer], timeout: float, clock: Callable[[], float]) -> Answer:
    """`work`'s result, or TimeoutError once `clock` has advanced `timeout` seconds (cancelling `work`)."""
    task = asyncio.ensure_future(work)
    started = clock()
    try:
        while (left := timeout - (clock() - started)) > 0:
            done, _ = await asyncio.wait({task}, timeout=left)
            if done:
                return task.result()
    finally:
        task.cancel()
    raise TimeoutError


def _message(answer: bytes) -> str:
    try:
        document = json.loads(answer)
        return str(document.get("message") or document.get("Message") or answer[:500].decode(errors="replace"))
    except (ValueError, AttributeError):
        return answer[:500].decode(errors="replace") or "the model answered with an error"


class RouterApp:
    """The router's HTTP face, an ASGI application served by uvicorn (httptools, uvloop).

    Routes: `POST /invocations`, `POST /endpoints/{name}/invocations` (SageMaker Runtime's),
    `GET /ping`, and `POST /_genaiops/reload` from loopback only.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if path == "/invocations" or (path.startswith("/endpoints/") and path.endswith("/invocations")):
            if method != "POST":
                await _send(send, error_reply(405, f"{method} {path}: use POST"))
                return
            name = path[len("/endpoints/"):-len("/invocations")] if path.startswith("/endpoints/") else None
            if name is not None and name != self.endpoint.name:
                await _send(send, error_reply(400, f"Endpoint {name} not found (this is endpoint {self.endpoint.name})."))
                return
            body = await _read_body(headers, receive)
            if not isinstance(body, bytes):
                await _send(send, body)
                return
            done = await self.endpoint.invoke(headers, body)
            await _send(send, done.reply)
            self.endpoint.account(done)
        elif path == "/ping" and method in ("GET", "HEAD"):
            fleet = self.endpoint.fleet
            ready = fleet.status in ("InService", "Updating") and bool(fleet.production)
            await _send(send, (200, {}, b"") if ready else (503, {"Content-Type": "text/plain"}, fleet.status.encode()))
        elif path == "/_genaiops/reload" and method == "POST":
            client = scope.get("client") or ("", 0)
            if client[0] not in ("127.0.0.1", "::1"):
                await _send(send, error_reply(400, "reload is accepted from loopback only"))
                return
            try:
                result = await self.endpoint.reload()
            except (ValueError, RuntimeError, KeyError) as exc:
                await _send(send, error_reply(400, str(exc)))
                return
            await _send(send, (200, {"Content-Type": "application/json"}, json.dumps(result).encode()))
        else:
            await _send(send, error_reply(404, f"no route {method} {path}"))


@dataclass
class Forwarded:
    """A forwarded request: the reply for the caller, and what `Endpoint.account` records after it."""

    reply: Reply
    variant: str | None = None  # None: refused before any variant was asked
    fleet: str = ""
    model_us: float = 0.0
    overhead_us: float = 0.0
    request: bytes = b""
    answer: bytes = b""
    content_type: str = "application/json"
    accept: str = "application/json"
    attributes: str | None = None
    inference_id: str | None = None


async def _read_body(headers: Mapping[str, str], receive: Any) -> bytes | Reply:
    """The request body, or the 413 for one over SageMaker's limit."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        await _drain(receive)
        return error_reply(413, f"body is {declared} bytes; the limit is {MAX_BODY_BYTES}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return error_reply(400, "the client went away before its body arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            await _drain(receive)
            return error_reply(413, f"body exceeds the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Any, limit: int = 8 * MAX_BODY_BYTES, seconds: float = 10.0) -> None:
    """Read and drop the rest of a refused body (bounded), so that a client still sending it gets the
    error instead of a reset connection when the server closes it."""
    size = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while size <= limit:
                message = await receive()
                size += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return


async def _send(send: Any, reply: Reply) -> None:
    status, headers, body = reply
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def metric_sink(config: EndpointConfig, workspace: Path) -> MetricSink:
    """Where the endpoint's metrics go: CloudWatch, as SageMaker sends them, when the twin stands in for SageMaker
    in an AWS account; else the workspace's series, which the local alarm evaluator reads."""
    if config.metrics == "cloudwatch":
        from monitoring.metrics import CloudWatchSink, cloudwatch_client

        return CloudWatchSink(cloudwatch_client(os.environ.get("AWS_DEFAULT_REGION", "us-east-1")))
    return SqliteMetricSink(workspace / "metrics.db")


async def serve(folder: Path) -> int:
    import uvicorn

    store = EndpointStore(folder.parent)
    config = store.config(folder.name)
    workspace = folder.parent.parent
    sink = metric_sink(config, workspace)
    fleet = Supervisor(folder, store, metrics=str(getattr(sink, "path", "cloudwatch")))
    endpoint = Endpoint(fleet, sink, workspace / "capture")
    listener = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((config.host, config.port or 0))
    host, port = listener.getsockname()[:2]
    fleet.url = f"http://{host}:{port}"
    server = uvicorn.Server(uvicorn.Config(
        RouterApp(endpoint), loop="none", http="httptools", lifespan="off", access_log=False, log_config=None,
        log_level="warning", server_header=False, timeout_keep_alive=75))  # as long as SageMaker's clients keep them
    # uvicorn takes SIGTERM and SIGINT while it serves, drains requests in flight, then raises the
    # signal again: these no-op handlers take that second delivery, and the variants stop below.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: endpoint._spawn_task(endpoint.reload()))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            if serving.done():  # it could not start: say why
                serving.result()
                return 1
            await asyncio.sleep(0.01)
        await endpoint.start()
        if fleet.status == "Failed":
            server.should_exit = True
            return 1
        await asyncio.shield(serving)  # until SIGTERM or SIGINT, and the requests in flight are answered
        return 0
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await serving
        listener.close()
        await endpoint.stop()
        if fleet.status != "Failed":
            state = store.state(endpoint.name)
            if state is not None:
                store.write_state(state.model_copy(update={"status": "Deleting", "updated": now()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Host one local endpoint (started by `genaiops endpoints create`).")
    parser.add_argument("--folder", type=Path, required=True, help="the endpoint's folder in the workspace")
    args = parser.parse_args(argv)
    go_offline()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from serving.model_server import new_event_loop

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        sys.exit(runner.run(serve(args.folder.resolve())))


if __name__ == "__main__":
    main()
