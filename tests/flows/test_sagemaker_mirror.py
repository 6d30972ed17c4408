"""The SageMaker Model Registry mirror on the aws backend, against moto on 127.0.0.1.

The genaiops-auth MLflow server keeps its audit log in (moto's) S3, approvers approve through the
CLI, and the approval-watch flow runs with GENAIOPS_BACKEND=aws (once through `genaiops approvals
watch --once`, then in this process): the same processes and calls as on AWS, with moto's server
standing in for the AWS endpoints.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from contracts import tags as T
from model_registry.audit import AuditLog
from steps.artifacts import S3Store
from tests.approvals import CONFIG, as_user, cli, register
from tests.servers import approval_server, free_port

MODEL = "summarizer"
GROUP = "summarizer"
BUCKET = "genaiops-artifacts"
REGION = "us-east-1"
IMAGE = ("763104351884.dkr.ecr.us-east-1.amazonaws.com/"
         "huggingface-pytorch-tgi-inference:2.4.0-tgi3.0.1-gpu-py311-cu124-ubuntu22.04")
PACKAGE_IMAGE = ("763104351884.dkr.ecr.us-east-1.amazonaws.com/"
                 "huggingface-pytorch-inference:2.6.0-transformers4.51.3-gpu-py312-cu124-ubuntu22.04")


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's server on 127.0.0.1, and the environment that points every AWS client of every process at it."""
    import os

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        moto.stop()


@pytest.fixture(scope="module")
def server(aws: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workspace = tmp_path_factory.mktemp("mirror-ws")
    audit = {"kind": "s3", "bucket": BUCKET, "region": REGION, "prefix": "genaiops"}
    with approval_server(workspace, CONFIG, audit=audit) as (url, passwords):
        yield {"url": url, "passwords": passwords, "workspace": workspace}


def aws_env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "aws.yaml"
    config.write_text(f"model_name: {MODEL}\nexperiment: approvals\n"
                      f"model_packages: {{inference_image_uri: '{IMAGE}'}}\n")
    return {"GENAIOPS_BACKEND": "aws", "GENAIOPS_REGION": REGION, "GENAIOPS_ARTIFACT_BUCKET": BUCKET,
            "GENAIOPS_ARTIFACT_PREFIX": "genaiops", "GENAIOPS_CONFIG": str(config),
            "GENAIOPS_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/genaiops-sagemaker"}


def watch_by_cli(server: dict[str, Any], tmp_path: Path) -> str:
    result = cli(server, CONFIG.watcher_account, "approvals", "watch", "--once",
                 env={**aws_env(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def watch(server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          caplog: pytest.LogCaptureFixture) -> str:
    """One pass of the approval-watch flow in this process, as the watcher account."""
    from pipelines.flows import approval_watch
    from pipelines.settings import load_config

    env = {**aws_env(tmp_path), "GENAIOPS_MLFLOW_TRACKING_URI": server["url"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    as_user(server, CONFIG.watcher_account)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        approval_watch(load_config(Path(env["GENAIOPS_CONFIG"])))
    return caplog.text


def package(server: dict[str, Any], version: str) -> dict[str, Any]:
    arn = tags_of(server, version)[T.SM_MODEL_PACKAGE]
    return boto3.client("sagemaker", region_name=REGION).describe_model_package(ModelPackageName=arn)


def tags_of(server: dict[str, Any], version: str) -> dict[str, str]:
    return dict(as_user(server, "bob").get_model_version(MODEL, version).tags)


def test_packages_follow_mlflow_approvals_and_carry_approver_and_note(
        server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    approved = register(server, MODEL, source=f"s3://{BUCKET}/genaiops/mlflow/1/model")
    packaged = register(server, MODEL, package={"uri": f"s3://{BUCKET}/genaiops/packages/abc/model.tar.gz",
                                                "digest": "a" * 64, "image": PACKAGE_IMAGE})
    rejected = register(server, MODEL)
    pending = register(server, MODEL)
    output = watch_by_cli(server, tmp_path)
    assert f"v{approved}: SageMaker model package mirrored" in output, output
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    assert sagemaker.describe_model_package_group(ModelPackageGroupName=GROUP)["ModelPackageGroupStatus"] == "Completed"
    for version in (approved, rejected, pending):
        assert package(server, version)["ModelApprovalStatus"] == T.PENDING
    first = package(server, approved)
    assert first["CustomerMetadataProperties"]["mlflow.version"] == approved
    assert first["CustomerMetadataProperties"]["genaiops.dataset_hash"] == "d" * 64
    container = first["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == IMAGE
    assert container["ModelDataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/genaiops/mlflow/1/model/"
    # A version registered with its servable package names the package and its image, not the MLflow folder.
    served = package(server, packaged)["InferenceSpecification"]["Containers"][0]
    assert (served["Image"], served["ModelDataUrl"]) == (PACKAGE_IMAGE, f"s3://{BUCKET}/genaiops/packages/abc/model.tar.gz")
    assert package(server, packaged)["CustomerMetadataProperties"]["genaiops.package_digest"] == "a" * 64

    assert cli(server, "alice", "approve", MODEL, approved, "--note", "clear ROUGE-L gain").returncode == 0
    assert cli(server, "alice", "reject", MODEL, rejected, "--note", "summaries too short").returncode == 0
    watch(server, tmp_path, monkeypatch, caplog)
    now_approved = package(server, approved)
    assert now_approved["ModelApprovalStatus"] == T.APPROVED
    assert "Approved by alice in MLflow" in now_approved["ApprovalDescription"]
    assert "clear ROUGE-L gain" in now_approved["ApprovalDescription"]
    assert now_approved["CustomerMetadataProperties"]["mlflow.version"] == approved  # lineage survives the update
    assert package(server, rejected)["ModelApprovalStatus"] == T.REJECTED
    assert "Rejected by alice" in package(server, rejected)["ApprovalDescription"]
    assert package(server, pending)["ModelApprovalStatus"] == T.PENDING
    store = S3Store(BUCKET, boto3.client("s3", region_name=REGION), prefix="genaiops")
    assert store.exists(f"releases/requests/{MODEL}/v{approved}.json")  # the watcher read the audit log in S3

    watch(server, tmp_path, monkeypatch, caplog)  # a second pass changes nothing and mirrors nothing twice
    summaries = sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    assert len(summaries) == 4


def test_changes_made_in_sagemaker_come_back_and_approvals_there_do_not_count(
        server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    revoked, sneaked = register(server, MODEL), register(server, MODEL)
    watch(server, tmp_path, monkeypatch, caplog)
    assert cli(server, "alice", "approve", MODEL, revoked).returncode == 0
    watch(server, tmp_path, monkeypatch, caplog)
    assert package(server, revoked)["ModelApprovalStatus"] == T.APPROVED

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.update_model_package(ModelPackageArn=package(server, revoked)["ModelPackageArn"], ModelApprovalStatus=T.REJECTED,
                                   ApprovalDescription="security review failed")
    sagemaker.update_model_package(ModelPackageArn=package(server, sneaked)["ModelPackageArn"], ModelApprovalStatus=T.APPROVED,
                                   ApprovalDescription="looks fine to me")
    output = watch(server, tmp_path, monkeypatch, caplog)

    tags = tags_of(server, revoked)
    assert tags[T.APPROVAL_STATUS] == T.REJECTED
    assert "set to Rejected in SageMaker" in tags[T.SM_STATUS_CHANGE]
    assert "security review failed" in tags[T.SM_STATUS_CHANGE]
    tags = tags_of(server, sneaked)
    assert tags[T.APPROVAL_STATUS] == T.PENDING and T.APPROVED_BY not in tags
    assert "approvals are made in the MLflow UI" in tags[T.SM_STATUS_CHANGE]
    assert package(server, sneaked)["ModelApprovalStatus"] == T.PENDING
    assert "approvals are made in the MLflow UI" in package(server, sneaked)["ApprovalDescription"]
    store = S3Store(BUCKET, boto3.client("s3", region_name=REGION), prefix="genaiops")
    assert not store.exists(f"releases/requests/{MODEL}/v{sneaked}.json")
    entries = AuditLog(store).entries(MODEL, revoked)
    assert any(e.outcome.startswith("mirrored from SageMaker") and e.new == T.REJECTED for e in entries), \
        json.dumps([e.model_dump() for e in entries], indent=1)
    assert f"v{revoked}: SageMaker model package pulled" in output, output
