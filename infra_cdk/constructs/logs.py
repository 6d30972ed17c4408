"""Encrypted log groups: a customer-managed key that CloudWatch Logs may use, and groups that expire."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct


class LogKey(Construct):
    """A rotated KMS key that the account's CloudWatch Logs may encrypt with, for this stack's log groups only."""

    def __init__(self, scope: Construct, id: str, *, retain: bool, purpose: str) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        self.key = kms.Key(self, "Key", enable_key_rotation=True, description=f"genaiops logs: {purpose}",
                           removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY)
        self.key.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],  # in a key policy, "*" is this key
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                    f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"}},
        ))

    def group(self, id: str, *, days: logs.RetentionDays, retain: bool, name: str | None = None) -> logs.LogGroup:
        """A log group encrypted with this key, kept for `days`."""
        return logs.LogGroup(cdk.Stack.of(self), id, log_group_name=name, encryption_key=self.key, retention=days,
                             removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY)
