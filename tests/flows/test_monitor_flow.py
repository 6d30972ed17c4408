"""The monitor flow against a real local endpoint serving the tiny model: drifted traffic fires the drift alarm
and files a retrain request, held-out traffic does not; model failures fire the 5XX alarm; an idle endpoint
fires no-invocations. Metrics, capture and alarms are the real ones in the workspace."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local_aws.server import stop
from monitoring.alarms import AlarmStore
from monitoring.drift import read_capture
from monitoring.metrics import SAGEMAKER_NAMESPACE, SqliteMetricSink
from pipelines.flows.monitor import monitor
from pipelines.settings import PipelineConfig
from steps.artifacts import LocalStore
from steps.base_model import token_counter
from steps.data import DataConfig, prepare_dataset
from steps.prompts import raw_input
from steps.sample_data import generate_records, write_jsonl
from tests.servers import create_endpoint

NAME = "watched"
OTHER_TOPICS = [
    "The database index rebuild took four hours because the vacuum process held a lock on the table.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "def merge(a, b): return sorted(a + b)  # merges two lists, then sorts the result",
    "Quarterly revenue grew twelve percent while the operating margin narrowed by two points.",
    "The orchestra tuned to a concert A before the symphony began in the old hall.",
]


@pytest.fixture(scope="module")
def lab(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A workspace with a prepared dataset (the reference) and an endpoint of one variant with capture on."""
    workspace = tmp_path_factory.mktemp("monitor-ws")
    source = workspace / "dialogues.jsonl"
    write_jsonl(generate_records(600, seed=7), source)
    data = DataConfig.model_validate({"source": str(source), "contract": {"min_rows": 20}})
    dataset = prepare_dataset(data, LocalStore(workspace / "artifacts"), token_counter(tiny_model_dir))
    url = create_endpoint(workspace, NAME, [{"name": "main", "model": tiny_model_dir}])
    config = PipelineConfig.model_validate({
        "finetune": {"base_model": str(tiny_model_dir)},
        "monitoring": {"period": 10, "drift": {"reference_dataset": dataset.hash, "min_requests": 20},
                       "alarms": {"5xx_rate": {"evaluation_periods": 3, "datapoints_to_alarm": 1},
                                  "no_invocations": {"evaluation_periods": 2, "datapoints_to_alarm": 2}}}})
    try:
        yield {"workspace": workspace, "url": url, "config": config, "dataset": dataset, "template": data.template}
    finally:
        stop(workspace)


def invoke(lab: dict[str, Any], text: str) -> int:
    body = json.dumps({"inputs": text, "parameters": {"max_new_tokens": 4}}).encode()
    request = urllib.request.Request(f"{lab['url']}/endpoints/{NAME}/invocations", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def send(lab: dict[str, Any], texts: list[str]) -> None:
    """Invoke, then wait until the router has written every invocation's metrics and capture (both off the
    request path, in batches)."""
    sink = SqliteMetricSink(lab["workspace"] / "metrics.db")
    dimensions = {"EndpointName": NAME, "VariantName": "main"}

    def written() -> tuple[float, int]:
        return sink.total(SAGEMAKER_NAMESPACE, "Invocations", dimensions), \
            len(read_capture(LocalStore(lab["workspace"] / "capture"), NAME)[0])

    metrics, captured = written()
    for text in texts:
        invoke(lab, text)
    deadline = time.monotonic() + 120
    while written() < (metrics + len(texts), captured + len(texts)):
        assert time.monotonic() < deadline, f"the router wrote {written()} of {(metrics + len(texts), captured + len(texts))}"
        time.sleep(0.1)


def states(lab: dict[str, Any]) -> dict[str, str]:
    return {r.spec.name.removeprefix(f"{NAME}/"): r.state for r in AlarmStore(lab["workspace"] / "alarms").list()}


def retrain_requests(lab: dict[str, Any]) -> list[dict[str, Any]]:
    folder = lab["workspace"] / "artifacts" / "requests" / "retrain"
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))] if folder.exists() else []


def test_drift_fires_its_alarm_and_a_retrain_errors_the_5xx_alarm_and_idleness_no_invocations(
        lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENAIOPS_WORKSPACE", str(lab["workspace"]))
    held_out = [raw_input(lab["template"], e.prompt) for e in lab["dataset"].splits["test"]]
    assert len(held_out) >= 40
    send(lab, held_out)
    normal = monitor(NAME, lab["config"])
    assert normal.new_records == len(held_out)
    assert states(lab)["embedding-drift"] == "OK" and states(lab)["input-length-drift"] == "OK", normal.metrics
    assert normal.metrics["EmbeddingDrift"] < 0.15 and retrain_requests(lab) == []
    quality = {k: v for k, v in normal.metrics.items() if k.startswith(("UnfaithfulOutputRate/", "ToxicOutputRate/"))}
    assert len(quality) >= 2 and all(0 <= v <= 100 for v in quality.values()), normal.metrics
    tokens = {k: v for k, v in normal.metrics.items() if k.startswith(("InputTokenCount/", "OutputTokenCount/"))}
    assert len(tokens) >= 2 and all(v >= 0 for v in tokens.values()), normal.metrics
    assert sum(v for k, v in tokens.items() if k.startswith("InputTokenCount/")) >= 10 * len(held_out)  # dialogues

    rng = random.Random(3)
    drifted = [" ".join(rng.choice(OTHER_TOPICS) for _ in range(rng.randint(1, 6))) for _ in range(len(held_out))]
    send(lab, drifted)
    shifted = monitor(NAME, lab["config"])
    assert shifted.new_records == len(drifted)  # only the capture since the last run
    assert shifted.metrics["EmbeddingDrift"] > 0.15 > normal.metrics["EmbeddingDrift"]
    assert shifted.metrics["InputLengthPSI"] > normal.metrics["InputLengthPSI"]
    assert states(lab)["embedding-drift"] == "ALARM"
    [request] = [r for r in retrain_requests(lab) if r["alarm"] == f"{NAME}/embedding-drift"]
    assert request["target"] == lab["config"].model_name and "greater than the threshold (0.15)" in request["reason"]
    again = monitor(NAME, lab["config"])  # still in ALARM: the action is not run a second time
    assert again.actions_run == 0 and len([r for r in retrain_requests(lab) if "embedding" in r["alarm"]]) == 1

    assert states(lab)["main/5xx-rate"] == "OK"
    send(lab, ["word " * 1500] * 10)  # longer than the model's context: every one is a ModelError
    failing = monitor(NAME, lab["config"])
    assert states(lab)["main/5xx-rate"] == "ALARM", [t.change.reason for t in failing.transitions]
    history = AlarmStore(lab["workspace"] / "alarms").get(f"{NAME}/main/5xx-rate").history  # type: ignore[union-attr]
    assert history[-1].new == "ALARM" and "greater than the threshold (5.0)" in history[-1].reason

    assert states(lab)["main/no-invocations"] == "OK"
    later = datetime.now(UTC) + timedelta(seconds=60)  # six 10-second periods without a single invocation
    monitor(NAME, lab["config"], now=later)
    assert states(lab)["main/no-invocations"] == "ALARM"
    notes = (lab["workspace"] / "notifications.jsonl").read_text().splitlines()  # the one notifier's
    assert {json.loads(n)["subject"] for n in notes} >= {f"genaiops: ALARM {NAME}/{name}" for name in (
        "embedding-drift", "main/5xx-rate", "main/no-invocations")}


def test_the_dashboard_page_shows_the_charts_and_the_alarms(lab: dict[str, Any]) -> None:
    import os
    import subprocess
    import sys

    send(lab, ["Ana: the parcel is late. Ben: I will call the courier."] * 3)
    env = {**os.environ, "GENAIOPS_WORKSPACE": str(lab["workspace"]), "COLUMNS": "200"}
    result = subprocess.run([str(Path(sys.executable).parent / "genaiops"), "dashboard", NAME, "--hours", "0.5",
                             "--period", "10"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    page = Path(result.stdout.strip())
    text = page.read_text()
    assert sorted(p.name for p in page.parent.glob("*.png")) == [f"panel-{i}.png" for i in range(8)]
    assert "Invocations per variant" in text and f"{NAME}/embedding-drift" in text and "ALARM" in text
    missing = subprocess.run([str(Path(sys.executable).parent / "genaiops"), "dashboard", "nowhere"], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
    assert missing.returncode == 2 and "endpoints list" in missing.stderr


def test_the_reference_is_the_training_split_the_served_versions_lineage_names(
        lab: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from contracts import tags as T
    from pipelines.backends import make_registry, make_store
    from pipelines.flows.monitor import MonitorError, reference_of
    from pipelines.settings import load_settings

    monkeypatch.setenv("GENAIOPS_WORKSPACE", str(lab["workspace"]))
    settings, config = load_settings(), lab["config"].model_copy(update={"model_name": "lineage-model"})
    registry = make_registry(settings, config)
    with registry.runs.run("lineage", {}) as run_id:
        version = registry.register(run_id, weights_path=str(tiny_model_dir), description="",
                                    model_config={"kind": "full", "template": lab["template"]},
                                    tags={T.DATASET_HASH: lab["dataset"].hash})
    plain = config.model_copy(update={"monitoring": config.monitoring.model_copy(
        update={"drift": config.monitoring.drift.model_copy(update={"reference_dataset": None})})})
    reference = reference_of(settings, plain, make_store(settings), {T.MODEL: "lineage-model",
                                                                       T.VERSION: version.version})
    train = lab["dataset"].splits["train"][: len(reference.inputs)]
    assert reference.inputs[0] == raw_input(lab["template"], train[0].prompt) and "Summarize" not in reference.inputs[0]
    assert reference.outputs == [e.target for e in train]
    with pytest.raises(MonitorError, match="reference_dataset"):
        reference_of(settings, plain, make_store(settings), {})
