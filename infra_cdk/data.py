"""The data stack: the KMS key, the data, artifact and data-capture buckets, and SageMaker's execution role."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra_cdk.constructs.roles import BucketAccess, SageMakerExecutionRole
from infra_cdk.constructs.storage import AccessLogBucket, SecureBucket


class DataStack(cdk.Stack):
    """What every lifecycle stage reads and writes; its outputs become GENAIOPS_* settings.

    - data: the sources retraining reads (`data.source: s3://<data bucket>/...`);
    - artifacts: prepared datasets, adapters, packages, evaluation reports, MLflow's artifacts;
    - capture: the endpoints' captured requests and responses, expired after `capture_days`.
    """

    def __init__(self, scope: Construct, id: str, *, vpc: ec2.IVpc, retain: bool, noncurrent_days: int,
                 capture_days: int, access_log_days: int, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=removal,
                           description="genaiops data: datasets, adapters, packages, reports, captured traffic")
        logs = AccessLogBucket(self, "AccessLogs", retain=retain, days=access_log_days).bucket
        self.data = SecureBucket(self, "Data", key=self.key, access_logs=logs, retain=retain,
                                 noncurrent_days=noncurrent_days).bucket
        self.artifacts = SecureBucket(self, "Artifacts", key=self.key, access_logs=logs, retain=retain,
                                      noncurrent_days=noncurrent_days, rules=[s3.LifecycleRule(
                                          id="reports-to-infrequent-access", prefix="genaiops/reports/",
                                          transitions=[s3.Transition(storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                                                                     transition_after=cdk.Duration.days(30))])]).bucket
        self.capture = SecureBucket(self, "Capture", key=self.key, access_logs=logs, retain=retain,
                                    noncurrent_days=7, expire_days=capture_days).bucket
        # What the pipeline may do with the buckets: read the data, write artifacts and captured traffic. SageMaker's
        # execution role and the flow runs' role attach it; MLflow's role attaches the artifact access.
        self.pipeline_access = BucketAccess(self, "PipelineAccess", read=[self.data],
                                            write=[self.artifacts, self.capture], key=self.key,
                                            description="genaiops pipeline: read data, write artifacts and capture").policy
        self.artifact_access = BucketAccess(self, "ArtifactAccess", read=[], write=[self.artifacts], key=self.key,
                                            description="genaiops MLflow: its artifacts").policy
        self.execution_role = SageMakerExecutionRole(self, "SageMakerExecution", buckets=self.pipeline_access,
                                                     key=self.key, vpc=vpc).role
        for name, value, setting in (("ArtifactBucket", self.artifacts.bucket_name, "GENAIOPS_ARTIFACT_BUCKET"),
                                     ("CaptureBucket", self.capture.bucket_name, "GENAIOPS_CAPTURE_BUCKET"),
                                     ("DataBucket", self.data.bucket_name, "data.source: s3://<bucket>/<key>"),
                                     ("KeyArn", self.key.key_arn, "GENAIOPS_KMS_KEY_ID"),
                                     ("SageMakerRoleArn", self.execution_role.role_arn, "GENAIOPS_SAGEMAKER_ROLE_ARN")):
            cdk.CfnOutput(self, name, value=value, description=setting)
