"""Shared storage: the KMS key and the S3 artifact bucket the aws backend writes to."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import Validations
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct


class EncryptedArtifactStore(Construct):
    """A customer-managed KMS key (rotated) and a versioned, TLS-only, SSE-KMS bucket with access logs."""

    def __init__(self, scope: Construct, id: str, *, retain: bool, noncurrent_days: int) -> None:
        super().__init__(scope, id)
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=removal,
                           description="genaiops artifacts: datasets, adapters, evaluation reports")
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 server access logging cannot write SSE-KMS
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(365))],
            removal_policy=removal,
            auto_delete_objects=not retain,
        )
        Validations.of(self.access_logs).acknowledge(cdk.Acknowledgment(
            id="AwsSolutions-S1", reason="This is the access-log bucket; logging it into itself would loop.",
        ))
        self.bucket = s3.Bucket(
            self, "Artifacts",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="artifacts/",
            lifecycle_rules=[s3.LifecycleRule(noncurrent_version_expiration=cdk.Duration.days(noncurrent_days))],
            removal_policy=removal,
            auto_delete_objects=not retain,
        )


class StorageStack(cdk.Stack):
    """The storage every lifecycle stage shares; its outputs become GENAIOPS_* settings."""

    def __init__(self, scope: Construct, id: str, *, retain: bool = True, noncurrent_days: int = 90,
                 **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        store = EncryptedArtifactStore(self, "ArtifactStore", retain=retain, noncurrent_days=noncurrent_days)
        self.bucket, self.key = store.bucket, store.key
        cdk.CfnOutput(self, "ArtifactBucket", value=store.bucket.bucket_name,
                      description="GENAIOPS_ARTIFACT_BUCKET")
        cdk.CfnOutput(self, "ArtifactKeyArn", value=store.key.key_arn, description="GENAIOPS_KMS_KEY_ID")
