"""On aws each flow signs in to the approval server as its own account, with the password of that account's secret
(`GENAIOPS_MLFLOW_SECRETS_PREFIX<account>`), which only its task role may read; tested against moto's Secrets
Manager."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from pipelines.backends import BackendError, make_registry, sign_in_as
from pipelines.settings import PipelineConfig, Settings

PREFIX = "genaiops/dev/approvals/"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # restored after the test, whatever it set
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(Name=f"{PREFIX}genaiops-pipeline",
                             SecretString=json.dumps({"username": "genaiops-pipeline", "password": "p1-secret"}))
        client.create_secret(Name=f"{PREFIX}genaiops-watcher",
                             SecretString=json.dumps({"username": "genaiops-release", "password": "mislabelled"}))
        yield client


def settings(prefix: str | None = PREFIX) -> Settings:
    return Settings(backend="aws", artifact_bucket="b", mlflow_tracking_uri="https://internal.approvals.example.com",
                    sagemaker_role_arn="arn:aws:iam::123456789012:role/x", mlflow_secrets_prefix=prefix)


def test_a_flow_signs_in_as_its_own_account_from_its_secret(secrets: object, tmp_path: Path) -> None:
    local = Settings(workspace=tmp_path, mlflow_secrets_prefix=PREFIX)  # the registry opened as the flows open it
    make_registry(local, PipelineConfig(), "genaiops-pipeline")
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == \
        ("genaiops-pipeline", "p1-secret")


def test_without_the_prefix_the_environment_decides(secrets: object, tmp_path: Path) -> None:
    make_registry(Settings(workspace=tmp_path), PipelineConfig(), "genaiops-pipeline")
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ


@pytest.mark.parametrize(("account", "reason"), [
    ("genaiops-release", "genaiops/dev/approvals/genaiops-release could not be read"),
    ("genaiops-watcher", "is the 'genaiops-release' account's, not 'genaiops-watcher'"),
])
def test_a_secret_that_cannot_be_read_or_names_another_account_stops_the_flow(secrets: object, account: str,
                                                                            reason: str) -> None:
    with pytest.raises(BackendError, match="GENAIOPS_MLFLOW_SECRETS_PREFIX") as error:
        sign_in_as(settings(), account)
    assert reason in str(error.value)
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
