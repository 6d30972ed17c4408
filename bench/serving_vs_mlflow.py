"""The local endpoint against `mlflow models serve`: overhead, throughput under concurrency, shadow cost.

Both serve the same MLflow model (the default model, SmolLM2-135M-Instruct, as the pyfunc flavour
the registry logs) and get the same requests in the same run:

- overhead: endpoint latency minus the in-process generate time of the same request, one request
  at a time, 1 new token so that generate's own jitter stays small; for the endpoint also the
  exact figure (latency minus the generate time the model server reports for that request);
- throughput: requests/s with 1, 4 and 8 callers, distinct held-out dialogues, 32 new tokens;
- shadow: the caller's latency with and without a shadow variant mirroring 100% of requests.

    .venv/bin/python -m bench.serving_vs_mlflow [--requests 16] [--write bench/RESULTS.md]
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
    connection = connections.get(parts.netloc)
    if connection is None:
        connection = connections[parts.netloc] = socket.create_connection((parts.hostname, parts.port), timeout=600)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    started = time.perf_counter()
    connection.sendall(request)
    while not response.complete:
        data = connection.recv(1 << 20)
        if not data:
            raise RuntimeError(f"{url}: the server closed the connection")
        parser.feed_data(data)
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
        from serving.router import free_port

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
        from serving.endpoint import EndpointConfig

        variants: list[dict[str, Any]] = [{"name": "main", "model": str(model), "max_batch_size": 8}]
        if shadow is not None:
            variants.append({"name": "shadow", "model": str(shadow), "shadow": True, "sampling_percentage": 100,
                             "threads": 1})
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=16, help="requests per throughput level")
    parser.add_argument("--overhead-requests", type=int, default=60)
    parser.add_argument("--new-tokens", type=int, default=32, help="new tokens per request for throughput and shadow")
    parser.add_argument("--workspace", type=Path, default=ROOT / ".genaiops")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    from bench.common import held_out
    from serving.handler import Invocation, Predictor
    from serving.local import LocalEndpoints

    samples = held_out(args.workspace, args.requests)
    base, texts = samples.base, samples.inputs
    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    short = save_model(scratch / "one-token", base, samples.template, 1)
    longer = save_model(scratch / "longer", base, samples.template, args.new_tokens)
    endpoints = LocalEndpoints(scratch / "ws")

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

    results: dict[str, Any] = {}
    for label, make in (("endpoint", lambda m: Endpoint(endpoints, "bench", m)),
                        ("mlflow", lambda m: MlflowServe(m, scratch / "mlflow.log"))):
        server = make(short)
        try:
            results[label] = {"overhead": overhead(server, probe, in_process, args.overhead_requests)}
        finally:
            server.stop()
        print(label, results[label], flush=True)
        server = make(longer)
        try:
            latencies(server, texts[:1])  # warm up
            results[label]["throughput"] = {c: throughput(server, texts, c) for c in (1, 4, 8)}
        finally:
            server.stop()
        print(label, results[label]["throughput"], flush=True)

    shadow: dict[str, list[float]] = {}
    for label, with_shadow in (("off", False), ("on", True)):
        server = Endpoint(endpoints, f"shadow-{label}", longer, longer if with_shadow else None)
        try:
            latencies(server, texts[:1])
            shadow[label] = latencies(server, texts)
        finally:
            server.stop()
        print("shadow", label, statistics.median(shadow[label]), percentile(shadow[label], 99), flush=True)

    from monitoring.metrics import SAGEMAKER_NAMESPACE, SqliteMetricSink

    router = [d.value / 1000 for d in SqliteMetricSink(scratch / "ws" / "metrics.db").query(
        SAGEMAKER_NAMESPACE, "OverheadLatency", {"EndpointName": "bench", "VariantName": "main"})]
    ours, theirs = results["endpoint"], results["mlflow"]
    p99 = {k: percentile(v, 99) for k, v in shadow.items()}
    lines = [
        f"## Serving: the local endpoint against `mlflow models serve` ({time.strftime('%Y-%m-%d')})", "",
        f"`python -m bench.serving_vs_mlflow --requests {args.requests}`: the same MLflow pyfunc model "
        "(SmolLM2-135M-Instruct, the default model) behind both, the same requests in the same run, CPU fp32, "
        "`mlflow models serve --env-manager local` with its default single worker.", "",
        f"Overhead: latency minus the in-process generate time of the same request (1 new token, median "
        f"{in_process * 1000:.1f} ms in process), {args.overhead_requests} sequential requests on a kept-alive "
        "connection; the client is a blocking socket with httptools' parser for both servers, so that its own "
        "work adds as little as possible.", "",
        "| | local endpoint | mlflow models serve |", "| --- | ---: | ---: |",
        f"| median latency (ms) | {ours['overhead']['latency_ms']:.1f} | {theirs['overhead']['latency_ms']:.1f} |",
        f"| overhead, median (ms) | {ours['overhead']['median_ms']:.2f} | {theirs['overhead']['median_ms']:.2f} |",
        f"| overhead, p99 (ms) | {ours['overhead']['p99_ms']:.2f} | {theirs['overhead']['p99_ms']:.2f} |",
        f"| overhead, exact: latency minus the model time the server reports, median / p99 (ms) | "
        f"{ours['overhead']['exact_median_ms']:.2f} / {ours['overhead']['exact_p99_ms']:.2f} | n/a |",
        f"| of which the router (its `OverheadLatency` metric), median / p99 (ms) | "
        f"{statistics.median(router):.2f} / {percentile(router, 99):.2f} | n/a |", "",
        f"Throughput: {args.requests} held-out dialogues, {args.new_tokens} new tokens, N callers at once, "
        "each on its own kept-alive connection.", "",
        "| callers | local endpoint (req/s) | mlflow models serve (req/s) | endpoint / mlflow |",
        "| ---: | ---: | ---: | ---: |",
        *(f"| {c} | {ours['throughput'][c]:.2f} | {theirs['throughput'][c]:.2f} | "
          f"{ours['throughput'][c] / theirs['throughput'][c]:.2f}x |" for c in (1, 4, 8)), "",
        f"Shadow: one production variant, with and without a shadow variant mirroring 100% of requests (same "
        f"model, SCHED_IDLE, one thread), {args.requests} sequential requests, {args.new_tokens} new tokens.", "",
        "| shadow | median (ms) | p99 (ms) |", "| --- | ---: | ---: |",
        *(f"| {k} | {statistics.median(v):.0f} | {p99[k]:.0f} |" for k, v in shadow.items()), "",
        f"The shadow adds {100 * (p99['on'] / p99['off'] - 1):+.1f}% to the caller's p99.", "",
    ]
    print("\n".join(lines))
    if args.write:
        with args.write.open("a", encoding="utf-8") as out:
            out.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
