"""The registry stack: a model package group per model and the approvers' role (SageMaker's side of approval)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from contracts.names import package_group
from infra_cdk.constructs.ids import pascal
from infra_cdk.constructs.roles import ApproversRole


class RegistryStack(cdk.Stack):
    """The SageMaker Model Registry that mirrors MLflow's versions (the approval server, in the approvals stack, is
    the approval protocol's home): a model package group per model, and the approvers' role over them."""

    def __init__(self, scope: Construct, id: str, *, models: Sequence[str], retain: bool,
                 approver_principals: Sequence[iam.IPrincipal], **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        self.groups = {}
        for model in models:
            group = package_group(model)
            self.groups[model] = sagemaker.CfnModelPackageGroup(
                self, f"Group{pascal(group)}", model_package_group_name=group,
                model_package_group_description=f"genaiops versions of {model}, mirrored from MLflow")
        if retain:  # the mirror of the approval record: a deleted or replaced stack keeps it
            for resource in self.groups.values():
                resource.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
        approvers = ApproversRole(self, "Approvers", groups=[g.model_package_group_name for g in self.groups.values()],
                                  principals=approver_principals)
        cdk.CfnOutput(self, "ApproversRoleArn", value=approvers.role.role_arn,
                      description="the role approvers assume (with MFA)")
