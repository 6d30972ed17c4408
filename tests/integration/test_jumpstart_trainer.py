"""The JumpStart trainer end to end, offline: moto for SageMaker and S3, a spec fixture for
DescribeHubContent, and assertions on the exact CreateTrainingJob request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from serving import package
from serving.deployer import DeploymentConfig, SageMakerDeployer, Version
from steps.artifacts import S3Store
from steps.data import DataConfig, PreparedDataset, prepare_dataset
from steps.finetune import FinetuneConfig, FinetuneError
from steps.jumpstart import JumpStartTrainer
from tests.jumpstart import create_role, jumpstart_session, spec

MODEL = "meta-textgeneration-llama-3-2-1b-instruct"


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="artifacts")
        key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
        calls: dict[str, list[dict[str, Any]]] = {}
        yield {"s3": s3, "kms": key, "role": create_role(), "calls": calls,
               "session": jumpstart_session(calls, "artifacts")}


def _dataset(sample_jsonl: Path, store: S3Store) -> PreparedDataset:
    return prepare_dataset(DataConfig(source=str(sample_jsonl)), store, lambda texts: [len(t.split()) for t in texts])


def _trainer(aws: dict[str, Any], **kwargs: Any) -> tuple[JumpStartTrainer, S3Store]:
    store = S3Store("artifacts", aws["s3"], prefix="genaiops", kms_key_id=aws["kms"])
    return JumpStartTrainer(store=store, sagemaker_session=aws["session"], role_arn=aws["role"],
                            output_s3_uri="s3://artifacts/genaiops", kms_key_id=aws["kms"], **kwargs), store


def _config(**jumpstart: Any) -> FinetuneConfig:
    return FinetuneConfig.model_validate({
        "epochs": 2, "learning_rate": 0.0002, "batch_size": 4, "max_seq_len": 1024, "seed": 7,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.1},
        "jumpstart": {"model_id": MODEL, "accept_eula": True, **jumpstart},
    })


def test_distributed_spot_job_is_requested_exactly_and_returns_the_fine_tuned_artifact(
    aws: dict[str, Any], sample_jsonl: Path
) -> None:
    trainer, store = _trainer(aws, subnets=["subnet-0a"], security_group_ids=["sg-0b"])
    dataset = _dataset(sample_jsonl, store)
    config = _config(instance_type="ml.g5.12xlarge", instance_count=2, spot=True, max_run_seconds=7200,
                     max_wait_seconds=10800, hyperparameters={"int8_quantization": "True"})

    trained = trainer.train(dataset, config)

    [request] = aws["calls"]["CreateTrainingJob"]
    document = spec(MODEL)["HubContentDocument"]
    g5 = document["TrainingInstanceTypeVariants"]["Variants"]["g5"]
    assert request["AlgorithmSpecification"]["TrainingImage"] == g5["Properties"]["ImageUri"]
    hyper = request["HyperParameters"]
    assert {k: hyper[k] for k in ("epoch", "learning_rate", "lora_r", "lora_alpha", "lora_dropout",
                                  "per_device_train_batch_size", "max_input_length", "seed", "instruction_tuned",
                                  "chat_dataset", "int8_quantization")} == {
        "epoch": "2", "learning_rate": "0.0002", "lora_r": "16", "lora_alpha": "32", "lora_dropout": "0.1",
        "per_device_train_batch_size": "4", "max_input_length": "1024", "seed": "7", "instruction_tuned": "True",
        "chat_dataset": "False", "int8_quantization": "True"}
    assert hyper["validation_split_ratio"] == "0.2"  # spec defaults fill the rest
    # no VolumeKmsKeyId: ml.g5's local NVMe volume is encrypted by its hardware, and SageMaker refuses a key for it
    assert request["ResourceConfig"] == {"InstanceType": "ml.g5.12xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    prefix = f"s3://artifacts/genaiops/jumpstart/{dataset.hash[:16]}"
    assert channels["training"]["S3Uri"] == f"{prefix}/training/"
    assert channels["validation"]["S3Uri"] == f"{prefix}/validation/"
    assert channels["model"]["S3Uri"] == document["TrainingArtifactUri"]
    assert channels["model"]["ModelAccessConfig"] == {"AcceptEula": True}
    assert request["OutputDataConfig"] == {"S3OutputPath": "s3://artifacts/genaiops/training-jobs",
                                           "KmsKeyId": aws["kms"], "CompressionType": "GZIP"}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 10800}
    assert request["CheckpointConfig"]["S3Uri"].startswith("s3://artifacts/genaiops/checkpoints/")
    assert request["VpcConfig"] == {"Subnets": ["subnet-0a"], "SecurityGroupIds": ["sg-0b"]}
    assert request["EnableNetworkIsolation"] is True
    assert request["EnableInterContainerTrafficEncryption"] is True
    assert request["RoleArn"] == aws["role"]

    lines = store.get(f"jumpstart/{dataset.hash[:16]}/training/train.jsonl").decode().splitlines()
    assert len(lines) == dataset.counts["train"]
    first = json.loads(lines[0])
    assert first == {"prompt": dataset.splits["train"][0].prompt, "completion": dataset.splits["train"][0].target}
    assert json.loads(store.get(f"jumpstart/{dataset.hash[:16]}/training/template.json")) == {
        "prompt": "{prompt}", "completion": " {completion}"}

    described = boto3.client("sagemaker", region_name="us-east-1").describe_training_job(
        TrainingJobName=trained.lineage["training_job"])
    assert trained.path == described["ModelArtifacts"]["S3ModelArtifacts"]
    assert trained.path.startswith("s3://artifacts/genaiops/training-jobs/")
    assert trained.path != document["TrainingArtifactUri"]  # the fine-tuned output, not the base model
    assert trained.kind == "full" and trained.base_model == f"jumpstart:{MODEL}"
    assert trained.metrics["instance_count"] == 2 and trained.metrics["spot"] == 1
    # What a deployment serves: the job's own artifact, with JumpStart's inference image for the model.
    assert trained.lineage["inference_image"] == document["HostingEcrUri"]
    served = package.of_candidate(trained, template="{input}", generation={}, store=store, region="us-east-1")
    version = Version(model="m", version="1", package_uri=served.uri, digest=served.digest, image=served.image)
    container = SageMakerDeployer(None, DeploymentConfig()).plan("e", version, "all_at_once").models[0]["PrimaryContainer"]
    assert container["ModelDataUrl"] == described["ModelArtifacts"]["S3ModelArtifacts"] != document["TrainingArtifactUri"]
    assert container["Image"] == document["HostingEcrUri"]


def test_on_demand_single_instance_defaults(aws: dict[str, Any], sample_jsonl: Path) -> None:
    trainer, store = _trainer(aws)
    trainer.train(_dataset(sample_jsonl, store), _config())
    [request] = aws["calls"]["CreateTrainingJob"]
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.2xlarge"
    assert "EnableManagedSpotTraining" not in request and "CheckpointConfig" not in request
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 4 * 3600}
    assert "VpcConfig" not in request


@pytest.mark.parametrize(("jumpstart", "message"), [
    ({"instance_type": "ml.m5.large"}, r"finetune\.jumpstart\.instance_type: ml\.m5\.large is not supported for "
                                       r"meta-textgeneration-llama-3-2-1b-instruct; allowed: ml\.g5\.2xlarge"),
    ({"accept_eula": False}, r"finetune\.jumpstart\.accept_eula: .* is a gated model"),
    ({"hyperparameters": {"lora_rank": "4"}}, r"\['lora_rank'\] are not hyperparameters of .*allowed: \[.*'lora_r'"),
])
def test_bad_jumpstart_settings_fail_before_any_upload_or_job(
    aws: dict[str, Any], sample_jsonl: Path, jumpstart: dict[str, Any], message: str
) -> None:
    trainer, store = _trainer(aws)
    dataset = _dataset(sample_jsonl, store)
    with pytest.raises(FinetuneError, match=message):
        trainer.train(dataset, _config(**jumpstart))
    assert "CreateTrainingJob" not in aws["calls"]
    assert not store.exists(f"jumpstart/{dataset.hash[:16]}/training/train.jsonl")


def test_an_instance_type_sagemaker_cannot_train_on_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"'ml\.t9\.huge' is not a SageMaker training instance type; "
                                              r"allowed: .*ml\.g5\.2xlarge"):
        _config(instance_type="ml.t9.huge")
    with pytest.raises(ValidationError, match=r"max_wait_seconds .* must be >= max_run_seconds"):
        _config(spot=True, max_run_seconds=3600, max_wait_seconds=600)


def test_a_vpc_needs_subnets_and_security_groups(aws: dict[str, Any]) -> None:
    with pytest.raises(FinetuneError, match="both subnets and security groups"):
        _trainer(aws, subnets=["subnet-0a"])
