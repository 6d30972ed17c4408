"""The local endpoint against `mlflow models serve`: overhead, throughput under concurrency, shadow cost.

Both serve the same MLflow model (the default model, SmolLM2-135M-Instruct, as the pyfunc flavour
the registry logs) and get the same requests in the same run:

- overhead: endpoint latency minus the in-process generate time of the same request, one request
  at a time, 1 new token so that generate's own jitter stays small; for the endpoint also the
  exact figure (latency minus the generate time the model server reports for that request);
- throughput: requests/s with 1, 4 and 8 callers, distinct held-out dialogues, 32 new tokens;
- shadow: the caller's latency with and without a shadow variant mirroring 100% of requests, in
  alternating rounds (off, on, on, off) so that drift of the machine falls on both sides alike.

    .venv/bin/python -m bench.serving_vs_mlflow [--requests 16] [--parts overhead,throughput,shadow]
                                                [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHADOW_SHARE = 0.1  # the default of a shadow variant


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def save_model(folder: Path, base: Path, template: str, max_new_tokens: int) -> Path:
    import mlflow.pyfunc

    from model_registry import pyfunc_model

    mlflow.pyfunc.save_model(str(folder), python_model=pyfunc_model.__file__, artifacts={"weights": str(base)},
                             model_config={"kind": "full", "base_model": "builtin:smollm2-135m-instruct",
                                           "base_model_path": str(base), "template": template,
                                           "generation": {"max_new_tokens": max_new_tokens, "batch_size": 8}})
    return folder


_local = threading.local()


class _Response:
    """httptools callbacks: the status, headers and body of one response."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def call(url: str, body: bytes) -> tuple[float, dict[str, str], bytes]:
    """One POST on this thread's kept-alive connection (as boto3 and other pooled clients do); header names in lower case.

    The client is a blocking socket and the C parser of httptools, so that its own work adds as
    little as possible to the latency it measures; both servers are measured with it.
    """
    import httptools

    parts = urllib.parse.urlsplit(url)
    connections = _local.__dict__.setdefault("connections", {})
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    for attempt in (1, 2):  # a kept-alive connection the server closed while idle is opened anew, as pools do
        connection = connections.get(parts.netloc)
        reused = connection is not None
        if connection is None:
            connection = connections[parts.netloc] = socket.create_connection((parts.hostname, parts.port),
                                                                              timeout=600)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        started = time.perf_counter()
        received = False
        try:
            connection.sendall(request)
            while not response.complete:
                data = connection.recv(1 << 20)
                if not data:
                    raise ConnectionResetError("the server closed the connection")
                received = True
                parser.feed_data(data)
            break
        except ConnectionError as exc:
            connection.close()
            del connections[parts.netloc]
            if not reused or received or attempt == 2:
                raise RuntimeError(f"{url}: {exc}") from exc
    elapsed = time.perf_counter() - started
    answer = b"".join(response.body)
    if parser.get_status_code() != 200:
        raise RuntimeError(f"{url}: {parser.get_status_code()} {answer[:300]!r}")
    return elapsed, response.headers, answer


def wait_up(url: str, process: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


class MlflowServe:
    def __init__(self, model: Path, log: Path) -> None:
        from local_aws.variant import free_port

        self.port = free_port()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(BIN / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
        wait_up(f"http://127.0.0.1:{self.port}/ping", self.process)
        self.url = f"http://127.0.0.1:{self.port}/invocations"

    @staticmethod
    def body(text: str) -> bytes:
        return json.dumps({"inputs": [text]}).encode()

    def stop(self) -> None:
        import signal

        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)


class Endpoint:
    def __init__(self, endpoints: Any, name: str, model: Path, shadow: Path | None = None) -> None:
        from local_aws.endpoint import EndpointConfig

        variants: list[dict[str, Any]] = [{"name": "main", "model": str(model), "max_batch_size": 8}]
        if shadow is not None:
            variants.append({"name": "shadow", "model": str(shadow), "shadow": True, "sampling_percentage": 100,
                             "threads": 1, "share_while_busy": SHADOW_SHARE})
        self.endpoints, self.name = endpoints, name
        state = endpoints.create(EndpointConfig.model_validate({"name": name, "variants": variants,
                                                                "capture": {"enabled": False}, "timeout_s": 600}))
        self.url = f"{state.url}/endpoints/{name}/invocations"

    @staticmethod
    def body(text: str) -> bytes:
        return json.dumps({"inputs": text}).encode()

    def stop(self) -> None:
        self.endpoints.delete(self.name)


def overhead(server: Any, text: str, in_process_s: float, n: int) -> dict[str, float]:
    body = server.body(text)
    call(server.url, body)  # warm up
    rows = [call(server.url, body) for _ in range(n)]
    versus = [(latency - in_process_s) * 1000 for latency, _, _ in rows]
    result = {"latency_ms": statistics.median(r[0] for r in rows) * 1000,
              "median_ms": statistics.median(versus), "p99_ms": percentile(versus, 99)}
    exact = [(latency * 1e6 - int(headers["x-genaiops-model-time-us"])) / 1000 for latency, headers, _ in rows
             if "x-genaiops-model-time-us" in headers]
    if exact:
        result.update(exact_median_ms=statistics.median(exact), exact_p99_ms=percentile(exact, 99))
    return result


def throughput(server: Any, texts: list[str], concurrency: int) -> float:
    bodies = [server.body(t) for t in texts]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda b: call(server.url, b), bodies))
    return len(bodies) / (time.perf_counter() - started)


def latencies(server: Any, texts: list[str]) -> list[float]:
    return [call(server.url, server.body(t))[0] * 1000 for t in texts]


def shadow_invocations(sink: Path, endpoint: str) -> int:
    """Copies the shadow of `endpoint` has answered (or failed), from its `Invocations` metric."""
    from monitoring.metrics import SAGEMAKER_NAMESPACE, SqliteMetricSink

    if not sink.exists():
        return 0
    return len(SqliteMetricSink(sink).query(SAGEMAKER_NAMESPACE, "Invocations",
                                            {"EndpointName": endpoint, "VariantName": "shadow"}))


def drained(sink: Path, endpoint: str, sent: int, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while shadow_invocations(sink, endpoint) < sent:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the shadow of {endpoint} did not answer its {sent} copies within {timeout:.0f} s")
        time.sleep(1)


def shadow_cost(endpoints: Any, model: Path, texts: list[str], sink: Path, round_size: int) -> dict[str, Any]:
    """Caller latencies without and with a shadow, in blocks of rounds off, on, on, off (drift falls on both alike).

    Each block's two halves of texts go once to each side. Before a round without the shadow,
    the shadow of the other endpoint has answered every copy (or it would compete as a
    process whose production is idle); rounds with it keep its backlog, as sustained traffic does.
    """
    off = Endpoint(endpoints, "shadow-off", model)
    on = Endpoint(endpoints, "shadow-on", model, model)
    latency: dict[str, list[float]] = {"off": [], "on": []}
    paired: list[float] = []  # per text: latency with the shadow / latency without
    sent, during = 0, 0
    try:
        latencies(off, texts[:1])
        latencies(on, texts[:1])
        sent += 1
        block = 2 * round_size
        for first in range(0, len(texts) - block + 1, block):
            one, two = texts[first: first + round_size], texts[first + round_size: first + block]
            seen: dict[str, list[float]] = {}
            for label, part in (("off", one), ("on", one), ("on", two), ("off", two)):
                if label == "off":
                    drained(sink, on.name, sent)
                before = shadow_invocations(sink, on.name)
                measured = latencies(on if label == "on" else off, part)
                latency[label] += measured
                seen[label] = seen.get(label, []) + measured
                if label == "on":
                    sent += len(part)
                    time.sleep(1.5)  # the metrics of copies answered during the round are flushed
                    during += shadow_invocations(sink, on.name) - before
                print("shadow", label, len(part), "requests, median", round(statistics.median(measured)), flush=True)
            paired += [a / b for a, b in zip(seen["on"], seen["off"], strict=True)]
        drained(sink, on.name, sent)
    finally:
        off.stop()
        on.stop()
    return {"latency": latency, "paired": paired, "copies": sent - 1, "answered_during": during}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=16, help="requests per throughput level")
    parser.add_argument("--overhead-requests", type=int, default=60)
    parser.add_argument("--new-tokens", type=int, default=32, help="new tokens per request for throughput and shadow")
    parser.add_argument("--workspace", type=Path, default=ROOT / ".genaiops")
    parser.add_argument("--shadow-round", type=int, default=12, help="requests per round of the shadow comparison")
    parser.add_argument("--parts", default="overhead,throughput,shadow",
                        help="comma-separated: which of overhead, throughput and shadow to run")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts or parts - {"overhead", "throughput", "shadow"}:
        parser.error(f"--parts: choose from overhead, throughput, shadow (got {args.parts!r})")

    from bench.common import held_out, publish
    from local_aws.endpoints import LocalEndpoints
    from serving.handler import Invocation, Predictor

    samples = held_out(args.workspace, args.requests)
    base, texts = samples.base, samples.inputs
    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    short = save_model(scratch / "one-token", base, samples.template, 1)
    longer = save_model(scratch / "longer", base, samples.template, args.new_tokens)
    endpoints = LocalEndpoints(scratch / "ws")
    sink = scratch / "ws" / "metrics.db"
    lines = [
        f"## Serving: the local endpoint against `mlflow models serve` ({time.strftime('%Y-%m-%d')})", "",
        f"`python -m bench.serving_vs_mlflow --requests {args.requests} --new-tokens {args.new_tokens} "
        f"--parts {args.parts}`: the same MLflow pyfunc "
        "model (SmolLM2-135M-Instruct, the default model) behind both, the same requests in the same run, CPU fp32, "
        "`mlflow models serve --env-manager local` with its default single worker.", "",
    ]
    servers = (("endpoint", lambda m: Endpoint(endpoints, "bench", m)),
               ("mlflow", lambda m: MlflowServe(m, scratch / "mlflow.log")))

    if "overhead" in parts:
        predictor = Predictor.load(short)
        probe = texts[0]
        predictor.predict(Invocation(inputs=probe))
        timings = []
        for _ in range(args.overhead_requests):
            started = time.perf_counter()
            predictor.predict(Invocation(inputs=probe))
            timings.append(time.perf_counter() - started)
        in_process = statistics.median(timings)
        del predictor
        print(f"in-process generate (1 token): median {in_process * 1000:.1f} ms", flush=True)
        found: dict[str, dict[str, float]] = {}
        for label, make in servers:
            server = make(short)
            try:
                found[label] = overhead(server, probe, in_process, args.overhead_requests)
            finally:
                server.stop()
            print(label, found[label], flush=True)
        from monitoring.metrics import SAGEMAKER_NAMESPACE, SqliteMetricSink

        router = [d.value / 1000 for d in SqliteMetricSink(sink).query(
            SAGEMAKER_NAMESPACE, "OverheadLatency", {"EndpointName": "bench", "VariantName": "main"})]
        ours, theirs = found["endpoint"], found["mlflow"]
        lines += [
            f"Overhead: latency minus the in-process generate time of the same request (1 new token, median "
            f"{in_process * 1000:.1f} ms in process), {args.overhead_requests} sequential requests on a kept-alive "
            "connection; the client is a blocking socket with httptools' parser for both servers, so that its own "
            "work adds as little as possible.", "",
            "| | local endpoint | mlflow models serve |", "| --- | ---: | ---: |",
            f"| median latency (ms) | {ours['latency_ms']:.1f} | {theirs['latency_ms']:.1f} |",
            f"| overhead, median (ms) | {ours['median_ms']:.2f} | {theirs['median_ms']:.2f} |",
            f"| overhead, p99 (ms) | {ours['p99_ms']:.2f} | {theirs['p99_ms']:.2f} |",
            f"| overhead, exact: latency minus the model time the server reports, median / p99 (ms) | "
            f"{ours['exact_median_ms']:.2f} / {ours['exact_p99_ms']:.2f} | n/a |",
            f"| of which the router (its `OverheadLatency` metric), median / p99 (ms) | "
            f"{statistics.median(router):.2f} / {percentile(router, 99):.2f} | n/a |", "",
        ]

    if "throughput" in parts:
        rates: dict[str, dict[int, float]] = {}
        for label, make in servers:
            server = make(longer)
            try:
                latencies(server, texts[:1])  # warm up
                rates[label] = {c: throughput(server, texts, c) for c in (1, 4, 8)}
            finally:
                server.stop()
            print(label, rates[label], flush=True)
        lines += [
            f"Throughput: {args.requests} held-out dialogues, {args.new_tokens} new tokens, N callers at once, "
            "each on its own kept-alive connection.", "",
            "| callers | local endpoint (req/s) | mlflow models serve (req/s) | endpoint / mlflow |",
            "| ---: | ---: | ---: | ---: |",
            *(f"| {c} | {rates['endpoint'][c]:.2f} | {rates['mlflow'][c]:.2f} | "
              f"{rates['endpoint'][c] / rates['mlflow'][c]:.2f}x |" for c in (1, 4, 8)), "",
        ]

    if "shadow" in parts:
        cost = shadow_cost(endpoints, longer, texts, sink, args.shadow_round)
        shadow = cost["latency"]
        p99 = {k: percentile(v, 99) for k, v in shadow.items()}
        median = {k: statistics.median(v) for k, v in shadow.items()}
        lines += [
            f"Shadow: one production variant, with and without a shadow variant mirroring 100% of requests (same "
            f"model, one thread, SCHED_IDLE, `share_while_busy` {SHADOW_SHARE:g}), {len(shadow['on'])} sequential "
            f"requests each, {args.new_tokens} new tokens, in blocks of rounds off, on, on, off of "
            f"{args.shadow_round} requests (the same texts on both sides; the shadow's backlog is answered before "
            "each round without it).", "",
            "| shadow | median (ms) | p90 (ms) | p99 (ms) |", "| --- | ---: | ---: | ---: |",
            *(f"| {k} | {median[k]:.0f} | {percentile(v, 90):.0f} | {p99[k]:.0f} |" for k, v in shadow.items()), "",
            f"The shadow adds {100 * (p99['on'] / p99['off'] - 1):+.1f}% to the caller's p99 "
            f"({100 * (median['on'] / median['off'] - 1):+.1f}% to the median; the same text with and without it: "
            f"{100 * (statistics.median(cost['paired']) - 1):+.1f}% median, "
            f"{100 * (percentile(cost['paired'], 90) - 1):+.1f}% p90). It answered "
            f"{cost['answered_during']} of its {cost['copies']} copies during the rounds with it, the rest while "
            "production was idle.", "",
        ]

    publish("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
