"""Reliability of the flows: transient AWS errors retried with backoff, bad input never; a retrain killed after
fine-tuning and started again skips prepare and fine-tune and registers one version; new data is noticed once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber
from mlflow import MlflowClient
from prefect import flow

from contracts import tags as T
from pipelines.reliability import OrchestrationConfig, RetryConfig, is_transient, reliable
from pipelines.settings import PipelineConfig, load_settings
from pipelines.trigger import Trigger
from tests.conftest import tiny_pipeline

FAST = OrchestrationConfig(retries=RetryConfig(attempts=3, first_delay_s=0.05, jitter=0.5))


def _config_document(data: Path, model: Path) -> dict[str, Any]:
    return tiny_pipeline(data, model, orchestration={"retries": {"attempts": 3, "first_delay_s": 0.05}})


def _sagemaker() -> Any:
    return boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _calls(client: Any, operation: str) -> list[str]:
    """Every call of `operation` the client makes (each attempt, before the stub answers it)."""
    seen: list[str] = []
    client.meta.events.register(f"before-parameter-build.sagemaker.{operation}", lambda **_: seen.append(operation))
    return seen


def _recover_flow(client: Any) -> Any:
    from pipelines.backends import make_registry
    from pipelines.flows import recover_crashed
    from serving.deployer import DeploymentConfig, SageMakerDeployer

    registry = make_registry(load_settings(), PipelineConfig(model_name="tiny-summarizer"))
    deployer = SageMakerDeployer(client, DeploymentConfig(instance_type="ml.m5.large", poll_seconds=1))

    @flow(name="recover-test")
    def run() -> Any:
        return reliable(recover_crashed, FAST)(registry, deployer)

    return run


def test_a_throttled_aws_call_is_retried_with_backoff_and_succeeds() -> None:
    client = _sagemaker()
    calls = _calls(client, "ListEndpoints")
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_client_error("list_endpoints", service_error_code="ThrottlingException",
                                  service_message="Rate exceeded", http_status_code=400)
        stub.add_response("list_endpoints", {"Endpoints": []})
        recovered = _recover_flow(client)()
        stub.assert_no_pending_responses()
    assert recovered.endpoints_removed == [] and recovered.crashed == []
    assert calls == ["ListEndpoints"] * 3  # two throttled attempts, then the one that succeeded


def test_a_validation_error_is_not_retried() -> None:
    client = _sagemaker()
    calls = _calls(client, "ListEndpoints")
    with Stubber(client) as stub:
        stub.add_client_error("list_endpoints", service_error_code="ValidationException",
                              service_message="bad request", http_status_code=400)
        stub.add_response("list_endpoints", {"Endpoints": []})  # what a retry would have been answered
        with pytest.raises(ClientError, match="ValidationException"):
            _recover_flow(client)()
    assert calls == ["ListEndpoints"]


def test_only_transient_errors_are_transient() -> None:
    from pipelines.flows import GateFailedError
    from steps.data import DataSourceError

    def client_error(code: str, status: int = 400) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "Op")

    try:
        raise RuntimeError("the evaluation stopped") from ConnectionResetError("reset by peer")
    except RuntimeError as chained:
        reset = chained
    for exc in (client_error("ThrottlingException"), client_error("Throttling"), client_error("SlowDown", 503),
                client_error("InternalFailure", 500), client_error("Anything", 502),
                EndpointConnectionError(endpoint_url="https://sagemaker"), reset):
        assert is_transient(exc), exc
    for exc in (client_error("ValidationException"), client_error("AccessDeniedException", 403), ValueError("bad"),
                GateFailedError("rejected"), DataSourceError("no such column"), KeyError("x")):
        assert not is_transient(exc), exc


def _version_count(name: str) -> int:
    uri = load_settings().tracking_uri
    return len(MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name = '{name}'"))


KILL_AFTER_FINETUNE = """
import sys, threading
from pathlib import Path
from prefect import task
import pipelines.flows as flows

def stall(*args, **kwargs):  # evaluation never ends: the test kills this process group here
    Path(sys.argv[2]).write_text("fine-tuned")
    threading.Event().wait()

flows.evaluate = task(name="evaluate")(stall)
flows.retrain(sys.argv[1], trigger=flows.Trigger(kind="manual", name="killed"))
"""


def test_a_retrain_killed_after_finetuning_reruns_without_prepare_or_finetune_and_registers_one_version(
    sample_jsonl: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    from pipelines.flows import retrain

    document = _config_document(sample_jsonl, tiny_model_dir)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(document))
    marker = tmp_path / "fine-tuned"
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}  # the test's Prefect server
    process = subprocess.Popen([sys.executable, "-c", KILL_AFTER_FINETUNE, str(config_file), str(marker)], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 900
        while not marker.exists():
            assert process.poll() is None, process.stderr.read().decode()[-3000:] if process.stderr else ""
            assert time.monotonic() < deadline, "the retrain never reached evaluation"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert _version_count("tiny-summarizer") == 0
    uri = load_settings().tracking_uri
    [killed] = MlflowClient(tracking_uri=uri).search_runs(
        [MlflowClient(tracking_uri=uri).get_experiment_by_name("genaiops-retrain").experiment_id])
    assert killed.info.status == "RUNNING"  # nobody closed it: the process died

    result = retrain(PipelineConfig.model_validate(document), trigger=Trigger(kind="manual", name="rerun"))
    assert result.reused_stages == ["prepare", "finetune"]
    assert _version_count("tiny-summarizer") == 1
    closed = MlflowClient(tracking_uri=uri).get_run(killed.info.run_id)
    assert closed.info.status == "KILLED" and "ended without closing it" in closed.data.tags["genaiops.crashed"]
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(closed.data.tags["genaiops.prefect.flow_run_id"]).state
    assert state is not None and state.type.value == "CRASHED"
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version("tiny-summarizer", result.version)
    assert (version.tags[T.TRIGGER], version.tags[T.TRIGGER_NAME]) == ("manual", "rerun")

    again = retrain(PipelineConfig.model_validate(document))  # nothing new: the same version, nothing redone
    assert again.reused and again.version == result.version and _version_count("tiny-summarizer") == 1


def test_new_data_is_noticed_once_and_without_a_server_nothing_is_started(sample_jsonl: Path, tmp_path: Path) -> None:
    from pipelines.backends import make_store
    from pipelines.flows.triggers import data_watch
    from pipelines.trigger import source_seen

    config = PipelineConfig.model_validate({"model_name": "tiny-summarizer", "data": {"source": str(sample_jsonl)}})
    store = make_store(load_settings())
    seen = source_seen(store, "tiny-summarizer", str(sample_jsonl))
    assert seen.changed and seen.previous is None
    seen.record(store)
    assert not source_seen(store, "tiny-summarizer", str(sample_jsonl)).changed
    with sample_jsonl.open("a") as out:
        out.write(json.dumps({"dialogue": "Ana: New? Ben: Yes.", "summary": "It is new."}) + "\n")
    changed = source_seen(store, "tiny-summarizer", str(sample_jsonl))
    assert changed.changed and changed.previous == seen.content_hash
    # The test's Prefect server serves no deployment: the trigger says so and the change stays unrecorded.
    watched = data_watch(config)
    assert watched.changed and watched.retrain_run is None
    assert source_seen(store, "tiny-summarizer", str(sample_jsonl)).changed
