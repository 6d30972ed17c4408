"""`genaiops serve` with the repository's prefect.yaml: the deployments with their schedules, a run started through
the Prefect API, a drift alarm and new data at once starting one retrain at a time, and SIGTERM stopping it all."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from contracts import tags as T
from pipelines.auth_server import BIN, free_port
from pipelines.deployments import load_deployments
from pipelines.trigger import Trigger
from tests.conftest import tiny_pipeline
from tests.servers import descendants, running

MODEL = "dialogue-summarizer"  # the name the repository's prefect.yaml serves


class Served:
    def __init__(self, process: subprocess.Popen[bytes], output: Path, api: str, workspace: Path, data: Path) -> None:
        self.process, self.output, self.api, self.workspace, self.data = process, output, api, workspace, data

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    from steps.sample_data import generate_records, write_jsonl

    root = tmp_path_factory.mktemp("serve")
    data = root / "sample.jsonl"
    write_jsonl(generate_records(120, seed=7), data)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_pipeline(data, tiny_model_dir, name=MODEL)))
    workspace, port = root / "workspace", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENAIOPS_", "PREFECT_API_URL", "PREFECT_HOME"))}
    env.update(GENAIOPS_WORKSPACE=str(workspace), PREFECT_RUNNER_POLL_FREQUENCY="2",
               PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="1")
    output = root / "serve.out"
    with output.open("wb") as out:
        process = subprocess.Popen([str(BIN / "genaiops"), "serve", "-c", str(config), "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    handle = Served(process, output, f"http://127.0.0.1:{port}/api", workspace, data)
    try:
        deadline = time.monotonic() + 600
        while "serving; Ctrl-C stops" not in handle.text():
            assert process.poll() is None, handle.text()[-4000:]
            assert time.monotonic() < deadline, handle.text()[-4000:]
            time.sleep(0.5)
        yield handle
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _client(served: Served) -> Any:
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(served.api)


def _final(served: Served, run_ids: list[Any], timeout: float = 900) -> list[Any]:
    """The flow runs once every one is in a final state (bounded: a run that hangs fails the test)."""
    deadline = time.monotonic() + timeout
    with _client(served) as client:
        while True:
            runs = [client.read_flow_run(run_id) for run_id in run_ids]
            if all(run.state is not None and run.state.is_final() for run in runs):
                return runs
            assert served.process.poll() is None, served.text()[-4000:]
            assert time.monotonic() < deadline, [(r.name, r.state) for r in runs]
            time.sleep(1)


def test_serve_lists_the_deployments_with_schedules_and_a_run_started_through_the_api_completes(served: Served) -> None:
    text = served.text()
    for spec in load_deployments():
        assert spec.full_name in text
        for schedule in spec.schedules:
            assert schedule.describe() in text
    assert f"Prefect UI: {served.api.removesuffix('/api')}" in text
    with _client(served) as client:  # as the UI's "Run" button does
        deployment = client.read_deployment_by_name(f"approval-watch/{MODEL}")
        run = client.create_flow_run_from_deployment(deployment.id)
    [done] = _final(served, [run.id])
    assert done.state.type.value == "COMPLETED", (done.state, served.text()[-4000:])


def test_a_drift_alarm_and_new_data_at_once_run_one_retrain_at_a_time(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from monitoring.alarms import AlarmStore
    from monitoring.metrics import MetricDatum, SqliteMetricSink
    from monitoring.monitor import MonitoringConfig, endpoint_alarms, evaluate_alarms, run_actions
    from pipelines.deployments import start
    from pipelines.flows.monitor import _runners
    from pipelines.settings import PipelineConfig, load_settings

    monkeypatch.setenv("GENAIOPS_WORKSPACE", str(served.workspace))
    settings = load_settings()
    [spec] = endpoint_alarms(MODEL, ["v1"], MODEL, MonitoringConfig(), only="embedding_drift")
    alarms = AlarmStore(settings.root / "alarms")
    alarms.sync(MODEL, [spec])
    now = datetime.now(UTC)
    SqliteMetricSink(settings.root / "metrics.db").put([MetricDatum(
        namespace=spec.metric.namespace, name=spec.metric.name, value=0.4,  # over the 0.15 threshold
        dimensions=spec.metric.dimensions, timestamp=now)])

    @flow(name="fire-drift-alarm")
    def fire() -> int:
        from pipelines.backends import make_store

        transitions = evaluate_alarms(alarms, SqliteMetricSink(settings.root / "metrics.db"), [spec.name], now)
        assert [t.change.new for t in transitions] == ["ALARM"]
        return run_actions(transitions, _runners(settings, PipelineConfig(model_name=MODEL), make_store(settings)))

    digest = hashlib.sha256(served.data.read_bytes()).hexdigest()
    with temporary_settings({PREFECT_API_URL: served.api}):
        assert fire() == 2  # notify, and retrain through the deployment
        start("retrain", MODEL, Trigger(kind="new-data", name=str(served.data), detail=digest))  # at once

    with _client(served) as client:  # by tag: the schedules have made hundreds of future runs by now
        retrain_deployment = client.read_deployment_by_name(f"retrain/{MODEL}")
        retrains = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[retrain_deployment.id])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(any_=["trigger:alarm", "trigger:new-data"])))
    assert len(retrains) == 2
    [alarmed] = [r for r in retrains if r.parameters["trigger"]["kind"] == "alarm"]
    assert alarmed.parameters["trigger"]["name"] == spec.name
    assert {"trigger:alarm", f"alarm:{spec.name}"} <= set(alarmed.tags)

    finished = _final(served, [r.id for r in retrains])
    assert all(r.state.type.value == "COMPLETED" for r in finished), ([r.state for r in finished],
                                                                       served.text()[-4000:])
    with _client(served) as client:
        history = {r.id: client.read_flow_run_states(r.id) for r in finished}
    running = {run_id: (min(s.timestamp for s in states if s.type.value == "RUNNING"),
                        max(s.timestamp for s in states if s.is_final()))
               for run_id, states in history.items()}
    (first, first_span), (second, second_span) = sorted(running.items(), key=lambda item: item[1][0])
    assert first_span[1] <= second_span[0], "two retrains of one model ran at once"
    assert any(s.name == "AwaitingConcurrencySlot" for s in history[second]), "the second trigger was not queued"

    uri = f"sqlite:///{served.workspace / 'mlflow.db'}"
    [version] = MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = '{MODEL}'")
    winner = next(r for r in finished if r.id == first).parameters["trigger"]
    assert (version.tags[T.TRIGGER], version.tags[T.TRIGGER_NAME]) == (winner["kind"], winner["name"])

    # `genaiops runs` tells the story: why each run started, its stages, its links.
    env = {**os.environ, "GENAIOPS_WORKSPACE": str(served.workspace), "PREFECT_API_URL": served.api,
           "COLUMNS": "220"}  # wide enough that no cell wraps (rich takes 80 columns when output is not a terminal)
    listed = subprocess.run([str(BIN / "genaiops"), "runs", "list", "--flow", "retrain"], env=env, capture_output=True,
                            text=True, timeout=300, check=True).stdout
    assert f"alarm {spec.name}" in listed and "new-data" in listed and listed.count("Completed") >= 2
    assert "Scheduled" not in listed  # the weekly runs still to come are not history
    upcoming = subprocess.run([str(BIN / "genaiops"), "runs", "list", "--upcoming", "--flow", "retrain"], env=env,
                              capture_output=True, text=True, timeout=300, check=True).stdout
    assert "schedule" in upcoming and "Scheduled" in upcoming and "alarm" not in upcoming
    winner_run = next(r for r in finished if r.id == first)
    shown = subprocess.run([str(BIN / "genaiops"), "runs", "show", winner_run.name], env=env, capture_output=True,
                           text=True, timeout=300, check=True).stdout
    assert "finetune" in shown and "register" in shown and f"/runs/flow-run/{winner_run.id}" in shown
    assert f"#/models/{MODEL}/versions/{version.version}" in shown


def test_a_correction_given_as_feedback_is_new_data_and_the_retrain_it_starts_names_it(
    served: Served, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from contracts.names import release_endpoint
    from local_aws.server import client, stop
    from pipelines.backends import make_corrections, make_feedback, make_store
    from pipelines.deployments import start
    from pipelines.settings import load_settings
    from pipelines.trigger import source_seen
    from steps.data import load_prepared
    from steps.feedback import source_hash
    from tests.servers import approval_server, create_endpoint

    monkeypatch.setenv("GENAIOPS_WORKSPACE", str(served.workspace))
    settings = load_settings()
    store = make_store(settings)
    source_seen(store, MODEL, str(served.data)).record(store)  # the data as the watcher last saw it
    endpoint = release_endpoint(MODEL)
    try:
        create_endpoint(served.workspace, endpoint, [{"name": "v1", "model": str(tiny_model_dir), "weight": 1.0}])
        dialogue = "Hana: My card is blocked since Monday. Ines: I can unblock it now. Hana: Thanks, Ines!"
        client(served.workspace, service="sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint, Body=json.dumps({"inputs": dialogue}), ContentType="application/json",
            InferenceId="support-42")
        deadline = time.monotonic() + 300  # capture is written after the reply goes out
        while not any("support-42" in p.read_text() for p in (served.workspace / "capture").rglob("*.jsonl")):
            assert time.monotonic() < deadline, "the answer was never captured"
            time.sleep(0.2)
        feedback_account = "genaiops-feedback"
        with approval_server(served.workspace) as (url, passwords):
            def feedback(user: str, *args: str) -> subprocess.CompletedProcess[str]:
                env = {**os.environ, "GENAIOPS_WORKSPACE": str(served.workspace), "GENAIOPS_MLFLOW_TRACKING_URI": url,
                       "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": passwords[user], "COLUMNS": "200"}
                return subprocess.run([str(BIN / "genaiops"), "feedback", endpoint, *args], env=env,
                                      capture_output=True, text=True, timeout=300, check=False)

            refused = feedback("alice", "support-42", "--rating", "bad", "--correction", "Ines unblocks the card.")
            assert refused.returncode == 1 and "is not a feedback account" in refused.stderr, refused.stderr
            unknown = feedback(feedback_account, "support-404", "--rating", "bad")
            assert unknown.returncode == 1 and "captured no answer for 'support-404'" in unknown.stderr
            bad = feedback(feedback_account, "support-42", "--rating", "fine")
            assert bad.returncode == 2 and "rating" in bad.stderr
            assert make_feedback(settings).entries(endpoint) == []  # nothing refused was written
            given = feedback(feedback_account, "support-42", "--rating", "bad", "--correction",
                             "Ines unblocks Hana's card, blocked since Monday.")
            assert given.returncode == 0 and "recorded feedback" in given.stdout, given.stderr
        [entry] = make_feedback(settings).entries(endpoint)
        assert (entry.by, entry.inference_id, entry.rating) == (feedback_account, "support-42", "bad")
        [correction] = make_corrections(settings)(MODEL)
        assert (correction.input, correction.variant) == (dialogue, "v1")  # the captured input it answers
        digest = source_hash(served.data.read_bytes(), [correction])

        with temporary_settings({PREFECT_API_URL: served.api}):
            watch = start("data-watch", MODEL, Trigger(kind="manual", name="feedback-test"))
        assert watch is not None
        [watched] = _final(served, [watch])
        assert watched.state.type.value == "COMPLETED", served.text()[-4000:]
        with _client(served) as prefect:
            deployment = prefect.read_deployment_by_name(f"retrain/{MODEL}")
            started = [r for r in prefect.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(any_=["trigger:new-data"])))
                if r.parameters["trigger"]["detail"] == digest]
        assert len(started) == 1, "the correction was not new data to the watcher"
        [retrained] = _final(served, [started[0].id])
        assert retrained.state.type.value == "COMPLETED", (retrained.state, served.text()[-4000:])
    finally:
        stop(served.workspace)
    uri = f"sqlite:///{served.workspace / 'mlflow.db'}"
    registry = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [version] = [v for v in registry.search_model_versions(f"name = '{MODEL}'")
                 if v.tags.get(T.TRIGGER_DETAIL) == digest]
    dataset = load_prepared(store, version.tags[T.DATASET_HASH])
    assert dataset.feedback == [entry.id] and dataset.source_hash == digest
    assert entry.id in registry.get_run(version.run_id).data.params["dataset.feedback"]
    added = [e for e in dataset.splits["train"] if e.id == f"feedback-{entry.id}"]
    assert added and added[0].target == "Ines unblocks Hana's card, blocked since Monday."


def test_sigterm_stops_the_server_the_runner_and_every_run(served: Served) -> None:
    with _client(served) as client:  # a run, when it is still going, must stop with the rest
        deployment = client.read_deployment_by_name(f"retrain/{MODEL}")
        run = client.create_flow_run_from_deployment(deployment.id)
        deadline = time.monotonic() + 300
        while (state := client.read_flow_run(run.id).state) is None or state.type.value in ("SCHEDULED", "PENDING"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
    started = descendants(served.process.pid)
    assert len(started) >= 3  # the Prefect server, the deployments' process and the run's process
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=120) == 0
    left = sorted(pid for pid in started if running(pid))
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
    assert "stopped" in served.text()

