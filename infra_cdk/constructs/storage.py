"""Buckets: SSE-KMS, versioned, TLS-only, access-logged, with lifecycle rules; and the bucket their access logs go to."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra_cdk.constructs.nag import acknowledge

REPLICATION = ("Cross-region replication is a disaster-recovery choice this stage does not make: the bucket is "
               "versioned, and retained with its key in prod, so a deleted or overwritten object can be restored.")


class AccessLogBucket(Construct):
    """Where the other buckets' server access logs go. S3 delivers access logs only to SSE-S3 buckets."""

    def __init__(self, scope: Construct, id: str, *, retain: bool, days: int) -> None:
        super().__init__(scope, id)
        self.bucket = s3.Bucket(
            self, "Bucket", encryption=s3.BucketEncryption.S3_MANAGED, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True, versioned=True, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(days),
                                              noncurrent_version_expiration=cdk.Duration.days(7),
                                              abort_incomplete_multipart_upload_after=cdk.Duration.days(1))],
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
            auto_delete_objects=not retain,
        )
        acknowledge(
            self.bucket,
            **{"AwsSolutions-S1": "This bucket receives the access logs; logging it into itself would loop.",
               "HIPAA.Security-S3BucketLoggingEnabled": "This bucket receives the access logs; logging it into "
                                                        "itself would loop.",
               "NIST.800.53.R5-S3BucketLoggingEnabled": "This bucket receives the access logs; logging it into "
                                                        "itself would loop.",
               "HIPAA.Security-S3DefaultEncryptionKMS": "S3 delivers server access logs only to buckets encrypted "
                                                        "with SSE-S3, not SSE-KMS.",
               "NIST.800.53.R5-S3DefaultEncryptionKMS": "S3 delivers server access logs only to buckets encrypted "
                                                        "with SSE-S3, not SSE-KMS.",
               "HIPAA.Security-S3BucketReplicationEnabled": REPLICATION,
               "NIST.800.53.R5-S3BucketReplicationEnabled": REPLICATION})


class SecureBucket(Construct):
    """A private bucket: SSE-KMS with a bucket key, versioned, TLS-only, access-logged under `<name>/`, with the
    lifecycle rules given (noncurrent versions and incomplete uploads always expire)."""

    def __init__(self, scope: Construct, id: str, *, key: kms.IKey, access_logs: s3.IBucket, retain: bool,
                 noncurrent_days: int, expire_days: int | None = None,
                 rules: Sequence[s3.LifecycleRule] = ()) -> None:
        super().__init__(scope, id)
        self.bucket = s3.Bucket(
            self, "Bucket", encryption=s3.BucketEncryption.KMS, encryption_key=key, bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True, versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs, server_access_logs_prefix=f"{id.lower()}/",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-old-versions", noncurrent_version_expiration=cdk.Duration.days(noncurrent_days),
                                 abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                                 expiration=cdk.Duration.days(expire_days) if expire_days else None),
                *rules],
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
            auto_delete_objects=not retain,
        )
        acknowledge(self.bucket, **{"HIPAA.Security-S3BucketReplicationEnabled": REPLICATION,
                                    "NIST.800.53.R5-S3BucketReplicationEnabled": REPLICATION})
