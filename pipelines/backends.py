"""Factories that pick each port's implementation from Settings, once, in the flow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from steps.artifacts import ArtifactStore, LocalStore, S3Store

if TYPE_CHECKING:
    from model_registry.mlflow_registry import MlflowRegistry
    from pipelines.settings import PipelineConfig, Settings


def make_store(settings: Settings) -> ArtifactStore:
    if settings.backend == "aws":
        import boto3

        assert settings.artifact_bucket is not None  # Settings validates this for the aws backend
        return S3Store(settings.artifact_bucket, boto3.client("s3", region_name=settings.region),
                       prefix=settings.artifact_prefix, kms_key_id=settings.kms_key_id)
    return LocalStore(settings.root / "artifacts")


def make_registry(settings: Settings, config: PipelineConfig) -> MlflowRegistry:
    from model_registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry(settings.tracking_uri, experiment=config.experiment, model_name=config.model_name,
                          artifact_root=settings.mlflow_artifact_root)
