"""The registry stack: SageMaker's managed MLflow tracking server, a model package group per model, the approvers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from contracts.names import package_group
from infra_cdk.constructs.ids import pascal
from infra_cdk.constructs.roles import ApproversRole

MLFLOW_PREFIX = "mlflow"


class RegistryStack(cdk.Stack):
    """Where versions are registered and approved: MLflow (the approval protocol's home) and the SageMaker Model
    Registry that mirrors it. The tracking server's ARN becomes GENAIOPS_MLFLOW_TRACKING_URI."""

    def __init__(self, scope: Construct, id: str, *, stage: str, models: Sequence[str], artifacts: s3.IBucket,
                 artifact_access: iam.IManagedPolicy, tracking_server_size: str, retain: bool,
                 approver_principals: Sequence[iam.IPrincipal],
                 **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        role = iam.Role(self, "MlflowRole", description="genaiops MLflow tracking server: the artifacts bucket",
                        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com", conditions={
                            "StringEquals": {"aws:SourceAccount": self.account}}))
        role.add_managed_policy(artifact_access)
        self.tracking_server = sagemaker.CfnMlflowTrackingServer(
            self, "Mlflow", tracking_server_name=f"genaiops-{stage}", role_arn=role.role_arn,
            artifact_store_uri=f"s3://{artifacts.bucket_name}/{MLFLOW_PREFIX}", tracking_server_size=tracking_server_size,
            automatic_model_registration=False,  # genaiops mirrors versions itself, with their approval status
            weekly_maintenance_window_start="Sun:03:00")
        self.tracking_server_arn = self.tracking_server.attr_tracking_server_arn
        self.groups = {}
        for model in models:
            group = package_group(model)
            self.groups[model] = sagemaker.CfnModelPackageGroup(
                self, f"Group{pascal(group)}", model_package_group_name=group,
                model_package_group_description=f"genaiops versions of {model}, mirrored from MLflow")
        if retain:  # the registry is the approval record: a deleted or replaced stack keeps it
            for resource in (self.tracking_server, *self.groups.values()):
                resource.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        approvers = ApproversRole(self, "Approvers", groups=[g.model_package_group_name for g in self.groups.values()],
                                  tracking_server_arn=self.tracking_server_arn, principals=approver_principals)
        cdk.CfnOutput(self, "MlflowTrackingServerArn", value=self.tracking_server_arn,
                      description="GENAIOPS_MLFLOW_TRACKING_URI")
        cdk.CfnOutput(self, "ApproversRoleArn", value=approvers.role.role_arn,
                      description="the role approvers assume (with MFA)")
