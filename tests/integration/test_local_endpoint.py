"""A real local endpoint on 127.0.0.1: two production variants and one shadow, each its own process.

Production variants serve one tiny model, the shadow another (seeded differently), so an answer
tells which model wrote it. Every client here is a real one: boto3's sagemaker-runtime client,
urllib, and the `genaiops` CLI from another process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from local_aws.endpoint import EndpointConfig
from local_aws.endpoints import LocalEndpoints
from monitoring.metrics import SAGEMAKER_NAMESPACE, SqliteMetricSink
from tests.conftest import make_held_model, make_tiny_model

NAME = "summaries"
BODY = json.dumps({"inputs": "Ana: the parcel is late. Ben: I will call the courier.",
                   "parameters": {"max_new_tokens": 3}}).encode()
WEIGHTS = {"a": 0.75, "b": 0.25}
SHADOW_PERCENT = 50.0


@pytest.fixture(scope="module")
def endpoint(tiny_model_dir: Path, smollm2_tokenizer_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workspace = tmp_path_factory.mktemp("endpoint-ws")
    shadow_model = make_tiny_model(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny-shadow"), seed=1, tied=False)
    held = make_held_model(tiny_model_dir, tmp_path_factory.mktemp("tiny-held"))  # b: the same model, by its script
    endpoints = LocalEndpoints(workspace)
    config = EndpointConfig.model_validate({
        "name": NAME, "timeout_s": 3.0,
        "variants": [{"name": "a", "model": str(tiny_model_dir), "weight": WEIGHTS["a"], "threads": 1},
                     {"name": "b", "model": str(held), "weight": WEIGHTS["b"], "threads": 1},
                     {"name": "shadow", "model": str(shadow_model), "shadow": True,
                      "sampling_percentage": SHADOW_PERCENT, "threads": 1}]})
    state = endpoints.create(config)
    try:
        yield {"url": state.url, "endpoints": endpoints, "workspace": workspace, "tiny": tiny_model_dir,
               "shadow_model": shadow_model}
    finally:
        endpoints.delete(NAME)
        assert not servers_of(tiny_model_dir, shadow_model, held)  # every process of the endpoint is gone


def servers_of(*models: Path) -> list[str]:
    """Command lines of running model servers of these models."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "serving.model_server" in command and any(str(m) in command for m in models):
            found.append(command)
    return found


def runtime(endpoint: dict[str, Any]) -> Any:
    return boto3.client("sagemaker-runtime", endpoint_url=endpoint["url"], region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 1}, read_timeout=120))


def post(endpoint: dict[str, Any], body: bytes, headers: dict[str, str] | None = None,
         path: str = f"/endpoints/{NAME}/invocations") -> tuple[int, dict[str, str], bytes]:
    """Status, headers (names in lower case: HTTP's are case-insensitive) and body."""
    request = urllib.request.Request(endpoint["url"] + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def captured(endpoint: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    folder = endpoint["workspace"] / "capture" / NAME / variant
    return [json.loads(line) for path in sorted(folder.rglob("*.jsonl")) for line in path.read_text().splitlines()]


def settle(count: Callable[[], int], quiet: float = 3.0, limit: float = 180.0) -> int:
    """Wait until `count()` stops changing (asynchronous work has drained)."""
    deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        time.sleep(0.2)
    return last


def describe(endpoint: dict[str, Any]) -> dict[str, Any]:
    """The endpoint's state as its host publishes it, read from another process as the control plane reads it."""
    code = ("import sys; from pathlib import Path; from local_aws.endpoints import LocalEndpoints; "
            f"print(LocalEndpoints(Path(sys.argv[1])).describe({NAME!r}).model_dump_json())")
    result = subprocess.run([sys.executable, "-c", code, str(endpoint["workspace"])], capture_output=True, text=True,
                            timeout=120, check=True)
    return dict(json.loads(result.stdout))


def production_answer(endpoint: dict[str, Any], variant: str = "a") -> bytes:
    return post(endpoint, BODY, {"X-Amzn-SageMaker-Target-Variant": variant})[2]


def test_boto3_talks_to_the_local_endpoint_as_to_a_real_one(endpoint: dict[str, Any]) -> None:
    client = runtime(endpoint)
    answer = client.invoke_endpoint(EndpointName=NAME, Body=BODY, ContentType="application/json",
                                    Accept="application/json", InferenceId="ticket-42")
    assert answer["InvokedProductionVariant"] in WEIGHTS
    assert answer["ContentType"] == "application/json"
    assert answer["Body"].read() == production_answer(endpoint)
    targeted = client.invoke_endpoint(EndpointName=NAME, Body=BODY, ContentType="application/json", TargetVariant="b")
    assert targeted["InvokedProductionVariant"] == "b"

    with pytest.raises(client.exceptions.ValidationError, match="not valid JSON"):
        client.invoke_endpoint(EndpointName=NAME, Body=b"{oops", ContentType="application/json")
    with pytest.raises(client.exceptions.ValidationError, match="target variant 'nope'"):
        client.invoke_endpoint(EndpointName=NAME, Body=BODY, ContentType="application/json", TargetVariant="nope")
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint elsewhere not found"):
        client.invoke_endpoint(EndpointName="elsewhere", Body=BODY, ContentType="application/json")
    with pytest.raises(client.exceptions.ModelError, match="exceeds the model's context") as error:
        client.invoke_endpoint(EndpointName=NAME, Body=json.dumps({"inputs": "word " * 1500}).encode(),
                               ContentType="application/json")
    assert error.value.response["OriginalStatusCode"] == 424
    settle(lambda: len(captured(endpoint, "a")) + len(captured(endpoint, "b")))
    records = captured(endpoint, "a") + captured(endpoint, "b")
    assert any(r["eventMetadata"].get("inferenceId") == "ticket-42" for r in records)


def test_traffic_follows_the_weights_and_the_shadow_gets_its_share(endpoint: dict[str, Any]) -> None:
    expected_answer = production_answer(endpoint)
    shadow_before = settle(lambda: len(captured(endpoint, "shadow")))
    sink = SqliteMetricSink(endpoint["workspace"] / "metrics.db")
    invocations_before = sum(sink.total(SAGEMAKER_NAMESPACE, "Invocations", {"EndpointName": NAME, "VariantName": v})
                             for v in WEIGHTS)
    total = 400
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(endpoint, BODY), range(total)))
    assert [status for status, _, _ in results] == [200] * total
    counts = Counter(headers["x-amzn-invoked-production-variant"] for _, headers, _ in results)
    assert set(counts) == set(WEIGHTS)  # never the shadow
    sigma = (total * WEIGHTS["a"] * WEIGHTS["b"]) ** 0.5
    assert abs(counts["a"] - total * WEIGHTS["a"]) < 4.5 * sigma, counts  # fails by chance about once in 150,000 runs
    assert {body for _, _, body in results} == {expected_answer}  # every caller got a production model's answer

    mirrored = settle(lambda: len(captured(endpoint, "shadow"))) - shadow_before
    half = total * SHADOW_PERCENT / 100
    assert abs(mirrored - half) < 4.5 * (total * 0.25) ** 0.5, mirrored
    shadow_records = captured(endpoint, "shadow")[shadow_before:]
    shadow_answers = {r["captureData"]["endpointOutput"]["data"] for r in shadow_records
                      if not r["eventMetadata"].get("error")}
    assert shadow_answers and expected_answer.decode() not in shadow_answers  # the shadow's answers are its own...
    assert not shadow_answers & {body.decode() for _, _, body in results}  # ...and never reached a caller

    def invocations() -> int:
        return int(sum(sink.total(SAGEMAKER_NAMESPACE, "Invocations", {"EndpointName": NAME, "VariantName": v})
                       for v in WEIGHTS))
    assert settle(invocations) - invocations_before == total
    latency = sink.query(SAGEMAKER_NAMESPACE, "ModelLatency", {"EndpointName": NAME, "VariantName": "a"})
    assert latency and all(d.unit == "Microseconds" and d.value > 0 for d in latency)
    assert sink.query(SAGEMAKER_NAMESPACE, "OverheadLatency", {"EndpointName": NAME, "VariantName": "b"})


def test_a_hung_or_crashed_shadow_costs_callers_nothing(endpoint: dict[str, Any]) -> None:
    shadow = next(v for v in describe(endpoint)["variants"] if v["name"] == "shadow")
    settle(lambda: len(captured(endpoint, "shadow")))
    before = len(captured(endpoint, "shadow"))
    os.kill(shadow["pid"], signal.SIGSTOP)  # hung: accepts connections, never answers
    try:
        results = [post(endpoint, BODY) for _ in range(30)]
        assert [status for status, _, _ in results] == [200] * 30
        # Every caller has its answer while the mirrored copies still wait on the hung shadow.
        assert len(captured(endpoint, "shadow")) == before
    finally:
        os.kill(shadow["pid"], signal.SIGKILL)  # and now it crashes
    results = [post(endpoint, BODY) for _ in range(10)]
    assert [status for status, _, _ in results] == [200] * 10
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        restarted = next(v for v in describe(endpoint)["variants"] if v["name"] == "shadow")
        if restarted["restarts"] == 1 and restarted["status"] == "InService":
            break
        time.sleep(1)
    assert restarted["restarts"] == 1 and restarted["status"] == "InService", restarted
    assert restarted["pid"] != shadow["pid"]
    assert any("variant shadow crashed" in e for e in describe(endpoint)["events"])
    failures = [r for r in captured(endpoint, "shadow")[before:] if r["eventMetadata"].get("error")]
    assert failures  # the lost copies are recorded as the shadow's errors, not the callers'


def test_every_error_case_gets_its_status_and_the_endpoint_stays_up(endpoint: dict[str, Any]) -> None:
    cases = {
        "too large": (post(endpoint, b'{"inputs": "' + b"x" * (6 * 1024 * 1024) + b'"}'), 413, "ValidationError"),
        "bad json": (post(endpoint, b"{"), 400, "ValidationError"),
        "too deep": (post(endpoint, b"[" * 100_000), 400, "ValidationError"),  # the channel thread survives it
        "bad field": (post(endpoint, b'{"inputs": "x", "parameters": {"max_new_tokens": "many"}}'), 400,
                      "ValidationError"),
        "model error": (post(endpoint, json.dumps({"inputs": "word " * 1500}).encode()), 424, "ModelError"),
        "timeout": (post(endpoint, b'{"inputs": "[hold] x", "parameters": {"max_new_tokens": 2}}',
                         {"X-Amzn-SageMaker-Target-Variant": "b"}), 424, "ModelError"),
        "unknown variant": (post(endpoint, BODY, {"X-Amzn-SageMaker-Target-Variant": "zz"}), 400, "ValidationError"),
        "container route": (post(endpoint, b"{", path="/invocations"), 400, "ValidationError"),
    }
    for label, ((status, headers, body), want, kind) in cases.items():
        assert (status, headers.get("x-amzn-errortype")) == (want, kind), (label, status, body[:300])
    assert "parameters.max_new_tokens" in json.loads(cases["bad field"][0][2])["message"]
    assert "did not answer within 3 s" in json.loads(cases["timeout"][0][2])["message"]
    for variant in ("a", "b"):  # every variant still answers after every error
        assert post(endpoint, BODY, {"X-Amzn-SageMaker-Target-Variant": variant})[0] == 200
    with urllib.request.urlopen(endpoint["url"] + "/ping", timeout=10) as ping:
        assert ping.status == 200


def test_the_shadow_is_stopped_while_production_is_busy(endpoint: dict[str, Any]) -> None:
    from serving.yielding import stopped

    shadow = next(v for v in describe(endpoint)["variants"] if v["name"] == "shadow")
    long = json.dumps({"inputs": "Ana: the parcel is late.", "parameters": {"max_new_tokens": 300}}).encode()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post, endpoint, long)
        seen = set()
        while not pending.done():
            seen.add(stopped(shadow["pid"]))
            time.sleep(0.001)
        assert pending.result()[0] == 200
    assert True in seen, seen  # stopped (but for its share) while the request was in flight...
    for _ in range(100):
        if not stopped(shadow["pid"]):
            break
        time.sleep(0.01)
    assert not stopped(shadow["pid"])  # ...and running again once it was answered


def test_weights_and_variants_change_while_serving_without_dropping_requests(endpoint: dict[str, Any]) -> None:
    endpoints: LocalEndpoints = endpoint["endpoints"]
    state = endpoints.update_weights(NAME, {"a": 0, "b": 1})
    assert {v.name: v.weight for v in state.variants if not v.shadow} == {"a": 0, "b": 1}
    assert {post(endpoint, BODY)[1]["x-amzn-invoked-production-variant"] for _ in range(30)} == {"b"}

    statuses: list[int] = []
    stop = time.monotonic() + 600

    def keep_calling() -> None:
        while time.monotonic() < stop:
            statuses.append(post(endpoint, BODY)[0])

    config = endpoints.store.config(NAME)
    grown = EndpointConfig.model_validate({**config.model_dump(), "variants": [
        *[v.model_dump() for v in config.variants if v.name != "a"],
        {"name": "c", "model": str(endpoint["tiny"]), "weight": 1, "threads": 1}]})
    with ThreadPoolExecutor(4) as pool:
        callers = [pool.submit(keep_calling) for _ in range(4)]
        state = endpoints.update(grown)  # c starts before it gets traffic; a drains, then stops
        stop = time.monotonic() + 2
        for caller in callers:
            caller.result()
    assert statuses and set(statuses) == {200}, Counter(statuses)
    assert sorted(v.name for v in state.variants) == ["b", "c", "shadow"]
    seen = {post(endpoint, BODY)[1]["x-amzn-invoked-production-variant"] for _ in range(40)}
    assert seen == {"b", "c"}
    shown = describe(endpoint)
    assert shown["status"] == "InService" and shown["url"] == endpoint["url"]
    assert {v["name"]: v["weight"] for v in shown["variants"] if not v["shadow"]} == {"b": 1, "c": 1}
