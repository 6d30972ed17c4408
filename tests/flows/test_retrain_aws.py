"""The whole retrain on the aws backend, offline: moto's server on 127.0.0.1 stands in for S3, IAM, KMS and
SageMaker's training jobs, a botocore hook answers DescribeHubContent (which moto lacks) with the JumpStart
spec, and the training job's artifact is a real model: the tiny test model with a LoRA adapter, packaged
as the deployer packages it. The local SageMaker control plane serves `candidate` and `base` on a temporary
endpoint from those S3 artifacts, so the evaluation numbers are real; the run registers one version with its
lineage and leaves no endpoint, endpoint config or model behind, also when evaluation fails half-way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow import MlflowClient

from contracts import tags as T
from pipelines.reliability import OrchestrationConfig, RetryConfig
from pipelines.settings import PipelineConfig
from tests.aws import BUCKET, REGION, aws_backend, jumpstart
from tests.aws import adapter as make_adapter
from tests.servers import control_plane_state

TEMPLATE = "Summarize the following conversation.\n\n{input}\n\nSummary:"
GENERATION = {"max_new_tokens": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model as the JumpStart base model, and an (untrained) LoRA adapter on it."""
    return tiny_model_dir, make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"), seed=1)


@pytest.fixture
def aws(isolated_env: Path, adapter: tuple[Path, Path], sample_jsonl: Path, tmp_path: Path, moto_url: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto's server (emptied), JumpStart offline and the local control plane, and the aws backend's settings
    pointing at them."""
    base_dir, trained = adapter
    with aws_backend(isolated_env, moto_url, monkeypatch) as world:
        calls = jumpstart(monkeypatch, tmp_path / "scratch", base_dir, [trained], template=TEMPLATE,
                          generation=GENERATION)
        config = PipelineConfig.model_validate({
            "model_name": "summarizer",
            "data": {"source": str(sample_jsonl), "contract": {"min_rows": 20}, "template": TEMPLATE},
            "finetune": {"jumpstart": {"accept_eula": True, "max_run_seconds": 3600}},
            "evaluate": {"max_samples": 4, "general_samples": 2, "generation": GENERATION,
                         "bootstrap": {"resamples": 200}, "gates": [{"metric": "empty_rate", "max": 1.0}]},
            "deployment": {"instance_type": "ml.g5.xlarge"},
        })
        yield {"workspace": isolated_env, "config": config, "calls": calls, "tracking": world["tracking"]}


def test_an_aws_retrain_trains_on_jumpstart_evaluates_on_a_temporary_endpoint_and_registers_one_version(
        aws: dict[str, Any]) -> None:
    from pipelines.flows import retrain

    result = retrain(aws["config"])
    assert result.gate == "passed" and result.status == T.PENDING
    assert result.candidate["rougeL"] == pytest.approx(result.base["rougeL"], abs=0.2)  # real answers, both sides
    client = MlflowClient(tracking_uri=aws["tracking"], registry_uri=aws["tracking"])
    [version] = client.search_model_versions("name = 'summarizer'")
    job = boto3.client("sagemaker", region_name=REGION).list_training_jobs()["TrainingJobSummaries"]
    assert len(job) == 1
    artifact = boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=job[0]["TrainingJobName"])["ModelArtifacts"]["S3ModelArtifacts"]
    assert version.source == artifact and artifact.startswith(f"s3://{BUCKET}/")
    assert version.tags[T.PACKAGE_URI] == artifact  # served as trained: the job's own artifact
    assert version.tags[T.BASE_MODEL] == "jumpstart:meta-textgeneration-llama-3-2-1b-instruct"
    assert version.tags[T.GATE] == "passed" and version.tags[T.DATASET_HASH] == result.dataset_hash
    assert control_plane_state(aws["workspace"]) == {"endpoints": [], "configs": [], "models": []}
    assert {"GetRole", "HeadBucket", "DescribeKey", "DescribeHubContent"} <= set(aws["calls"])  # checked first


def test_an_evaluation_that_fails_half_way_leaves_no_endpoint_config_or_model_and_no_version(
        aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines import backends
    from pipelines.flows import retrain

    answered: list[int] = []
    make_runtime = backends.make_runtime

    def failing(settings: Any) -> Any:
        client = make_runtime(settings)

        def count(**_: Any) -> None:
            answered.append(1)
            if len(answered) > 2:
                raise ConnectionResetError("the evaluation was cut off half-way")

        client.meta.events.register("before-call.sagemaker-runtime.InvokeEndpoint", count)
        return client

    monkeypatch.setattr(backends, "make_runtime", failing)
    # A reset connection is transient: the stage is tried once more (each attempt removes its endpoint), then fails.
    config = aws["config"].model_copy(update={"orchestration": OrchestrationConfig(
        retries=RetryConfig(attempts=1, first_delay_s=0.05))})
    with pytest.raises(Exception, match="cut off half-way"):
        retrain(config)
    assert len(answered) == 4  # three answers and the cut, then the retry's first request, cut at once
    assert control_plane_state(aws["workspace"]) == {"endpoints": [], "configs": [], "models": []}
    client = MlflowClient(tracking_uri=aws["tracking"], registry_uri=aws["tracking"])
    assert client.search_model_versions("name = 'summarizer'") == []
