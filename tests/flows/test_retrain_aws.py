"""The whole retrain on the aws backend, offline: moto's server on 127.0.0.1 stands in for S3, IAM, KMS and
SageMaker's training jobs, a botocore hook answers DescribeHubContent (which moto lacks) with the JumpStart
spec, and the training job's artifact is a real model: SmolLM2-135M-Instruct with a LoRA adapter, packaged
as the deployer packages it. The local SageMaker control plane serves `candidate` and `base` on a temporary
endpoint from those S3 artifacts, so the evaluation numbers are real; the run registers one version with its
lineage and leaves no endpoint, endpoint config or model behind, also when evaluation fails half-way."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from mlflow import MlflowClient

from contracts import tags as T
from local_aws.server import client as local_client
from local_aws.server import running_url
from local_aws.server import stop as stop_twin
from pipelines.orchestration import OrchestrationConfig, RetryConfig
from pipelines.settings import PipelineConfig
from serving import package
from steps.artifacts import LocalStore
from tests.integration.test_aws_plan import answer_service_quotas
from tests.jumpstart import ROLE_ARN, answer_describe_hub_content, create_role
from tests.servers import control_plane_state

REGION = "us-east-1"
BUCKET = "genaiops-artifacts"
BASE_PREFIX = "meta-textgeneration/meta-textgeneration-llama-3-2-1b-instruct/artifacts/inference-prepack/v1.0.0/"
BASE_ARTIFACT = f"s3://jumpstart-cache-prod-{REGION}/{BASE_PREFIX}"
TEMPLATE = "Summarize the following conversation.\n\n{input}\n\nSummary:"
GENERATION = {"max_new_tokens": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SmolLM2-135M-Instruct as a Hugging Face folder, and an (untrained) LoRA adapter on it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steps.base_model import resolve_base_model

    base = resolve_base_model("builtin:smollm2-135m-instruct", tmp_path_factory.mktemp("models"))
    adapter = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)  # a fine-tuned artifact carries its tokenizer
    return Path(base), adapter


@pytest.fixture
def aws(isolated_env: Path, smollm2: tuple[Path, Path], sample_jsonl: Path, tmp_path: Path, moto_url: str,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto's server (emptied) and the local control plane, and the aws backend's settings pointing at them."""
    base_dir, adapter = smollm2
    reset = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=30).close()  # moto's state is per process: start from nothing
    # MLflow caches its S3 client by MLFLOW_S3_ENDPOINT_URL: naming it keeps a client of another server out.
    for key, value in {"AWS_ENDPOINT_URL": moto_url, "MLFLOW_S3_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_EC2_METADATA_DISABLED": "true", "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
        monkeypatch.setenv(key, value)
    workspace = isolated_env
    try:
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=f"jumpstart-cache-prod-{REGION}")
        create_role()
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        topic = boto3.client("sns", region_name=REGION).create_topic(Name="genaiops-notifications")["TopicArn"]
        # JumpStart's base model, uncompressed under a prefix as JumpStart keeps it: the base model's package.
        scratch = LocalStore(tmp_path / "scratch")
        base = package.of_base("jumpstart:meta-textgeneration-llama-3-2-1b-instruct", str(base_dir),
                               template=TEMPLATE, generation=GENERATION, store=scratch, region=REGION)
        with tarfile.open(fileobj=io.BytesIO(Path(base.uri.removeprefix("file://")).read_bytes())) as archive:
            for member in archive.getmembers():
                data = archive.extractfile(member)
                if data is not None:
                    s3.put_object(Bucket=f"jumpstart-cache-prod-{REGION}", Key=BASE_PREFIX + member.name,
                                  Body=data.read())
        # What the training job writes: the fine-tuned model, packaged as the deployer packages it.
        candidate = package.build(package.ServedModel(weights=str(adapter), kind="adapter",
                                                      base_model="jumpstart:meta-textgeneration-llama-3-2-1b-instruct",
                                                      base_model_path=str(base_dir), template=TEMPLATE,
                                                      generation=GENERATION), scratch, region=REGION)
        artifact = Path(candidate.uri.removeprefix("file://")).read_bytes()
        calls: list[str] = []

        def answer_hub(params: dict[str, Any], **kwargs: Any) -> Any:
            response, parsed = answer_describe_hub_content(params, **kwargs)
            document = json.loads(parsed["HubContentDocument"])
            parsed["HubContentDocument"] = json.dumps({**document, "HostingArtifactUri": BASE_ARTIFACT})
            return response, parsed

        def train(params: dict[str, Any], **_: Any) -> None:  # the job's output, where SageMaker puts it
            output = params["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://")
            bucket, _, prefix = output.partition("/")
            s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{params['TrainingJobName']}/output/model.tar.gz",
                          Body=artifact)

        def session(settings: Any) -> Any:
            created = boto3.Session(region_name=settings.region)
            events = created._session
            events.register("before-call.sagemaker.DescribeHubContent", answer_hub)
            events.register("provide-client-params.sagemaker.CreateTrainingJob", train)
            events.register("before-call.service-quotas.*", answer_service_quotas)
            events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
            return created

        monkeypatch.setattr("pipelines.backends.boto_session", session)
        local_client(workspace)  # the local control plane, started with the AWS environment above
        for name, value in {"BACKEND": "aws", "REGION": REGION, "ARTIFACT_BUCKET": BUCKET, "KMS_KEY_ID": key,
                            "SAGEMAKER_ROLE_ARN": ROLE_ARN, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "NOTIFY_TOPIC_ARN": topic,
                            "SAGEMAKER_ENDPOINT_URL": running_url(workspace)}.items():
            monkeypatch.setenv(f"GENAIOPS_{name}", value)
        config = PipelineConfig.model_validate({
            "model_name": "summarizer",
            "data": {"source": str(sample_jsonl), "contract": {"min_rows": 20}, "template": TEMPLATE},
            "finetune": {"jumpstart": {"accept_eula": True, "max_run_seconds": 3600}},
            "evaluate": {"max_samples": 4, "general_samples": 2, "generation": GENERATION,
                         "bootstrap": {"resamples": 200}, "gates": [{"metric": "empty_rate", "max": 1.0}]},
            "deployment": {"instance_type": "ml.g5.xlarge"},
        })
        yield {"workspace": workspace, "config": config, "calls": calls, "tracking": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    finally:
        for log in sorted((workspace / "endpoints").glob("*/*.log")):  # shown with a failure
            print(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
        stop_twin(workspace)
        urllib.request.urlopen(reset, timeout=30).close()  # and leave nothing to the next test


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
