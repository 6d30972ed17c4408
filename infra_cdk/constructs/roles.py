"""Least-privilege roles: SageMaker's execution role, the Prefect flows' task role, and the approvers' role."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra_cdk.constructs.ids import logical_id
from infra_cdk.constructs.nag import acknowledge
from monitoring.metrics import GENAIOPS_NAMESPACE


def bucket_statements(read: Sequence[s3.IBucket], write: Sequence[s3.IBucket]) -> list[iam.PolicyStatement]:
    """Read (get, list) on `read`, and read and write (put, multipart, delete of what one wrote) on `write`."""
    every = list(dict.fromkeys([*read, *write]))
    statements = [iam.PolicyStatement(actions=["s3:ListBucket", "s3:GetBucketLocation"],
                                      resources=[b.bucket_arn for b in every]),
                  iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"],
                                      resources=[b.arn_for_objects("*") for b in every])]
    if write:
        statements.append(iam.PolicyStatement(
            actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
            resources=[b.arn_for_objects("*") for b in write]))
    return statements


def key_statement(key: kms.IKey) -> iam.PolicyStatement:
    return iam.PolicyStatement(actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                               resources=[key.key_arn])


class BucketAccess(Construct):
    """A managed policy with access to genaiops buckets and their key, and nothing else. It lives in the stack of
    the buckets, and roles of later stacks attach it; its only wildcards are the objects of those buckets."""

    def __init__(self, scope: Construct, id: str, *, read: Sequence[s3.IBucket], write: Sequence[s3.IBucket],
                 key: kms.IKey, description: str) -> None:
        super().__init__(scope, id)
        self.policy = iam.ManagedPolicy(self, "Policy", description=description,
                                        statements=[*bucket_statements(read, write), key_statement(key)])
        for bucket in dict.fromkeys([*read, *write]):
            acknowledge(self.policy, **{f"AwsSolutions-IAM5[Resource::<{logical_id(bucket)}.Arn>/*]":
                                        "Object-level actions on the objects of one genaiops bucket (<bucket>/*)."})


class SageMakerExecutionRole(Construct):
    """What training jobs and endpoints run as: their buckets, their key, their logs and metrics, the container
    images, network interfaces in the platform's VPC, and JumpStart's public model artifacts."""

    def __init__(self, scope: Construct, id: str, *, buckets: iam.IManagedPolicy, key: kms.IKey,
                 vpc: ec2.IVpc) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        self.role = iam.Role(self, "Role", description="genaiops SageMaker execution role (training jobs, endpoints)",
                             assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com", conditions={
                                 "StringEquals": {"aws:SourceAccount": stack.account}}))
        self.role.add_managed_policy(buckets)
        policy = iam.ManagedPolicy(self, "Policy", roles=[self.role], statements=[
            iam.PolicyStatement(actions=["kms:CreateGrant"], resources=[key.key_arn],
                                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}}),
            iam.PolicyStatement(actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                         "logs:DescribeLogStreams"],
                                resources=[f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:"
                                           "log-group:/aws/sagemaker/*"]),
            iam.PolicyStatement(actions=["cloudwatch:PutMetricData"], resources=["*"],
                                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", GENAIOPS_NAMESPACE]}}),
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                         "ecr:BatchCheckLayerAvailability"],
                                resources=[f"arn:{stack.partition}:ecr:{stack.region}:*:repository/*"]),
            iam.PolicyStatement(actions=["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
                                         "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions"], resources=["*"]),
            iam.PolicyStatement(actions=["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                                         "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"],
                                resources=["*"], conditions={"ArnEquals": {"ec2:Vpc": vpc_arn(vpc)}}),
            iam.PolicyStatement(actions=["s3:GetObject", "s3:ListBucket"], resources=[
                f"arn:{stack.partition}:s3:::jumpstart-cache-prod-{stack.region}",
                f"arn:{stack.partition}:s3:::jumpstart-cache-prod-{stack.region}/*",
                # gated models (accept_eula) are served from JumpStart's private cache
                f"arn:{stack.partition}:s3:::jumpstart-private-cache-prod-{stack.region}",
                f"arn:{stack.partition}:s3:::jumpstart-private-cache-prod-{stack.region}/*"]),
        ])
        acknowledge(policy, **{
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/*]":
                "SageMaker names its log groups per job and endpoint under /aws/sagemaker/; nothing else is granted.",
            "AwsSolutions-IAM5[Resource::*]":
                "PutMetricData, GetAuthorizationToken and the EC2 Describe calls have no resource types; "
                "PutMetricData is held to SageMaker's and genaiops' namespaces, and network interfaces to this VPC.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecr:<AWS::Region>:*:repository/*]":
                "Deep learning container images live in AWS-owned accounts that differ by region; pulls only.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::jumpstart-cache-prod-<AWS::Region>/*]":
                "JumpStart's public model artifacts and scripts, read-only.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::jumpstart-private-cache-prod-<AWS::Region>/*]":
                "JumpStart's gated model artifacts (accepted with accept_eula), read-only.",
        })


def vpc_arn(vpc: ec2.IVpc) -> str:
    stack = cdk.Stack.of(vpc)
    return f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}:vpc/{vpc.vpc_id}"


class ApproversRole(Construct):
    """What an approver may change: a model package's approval status, to Rejected or back to pending, and nothing
    else; they read the packages. Approvals are made in MLflow through genaiops' approval server (its own sign-in,
    Cognito), where the approvers group, the gate and the audit log apply; no IAM role reaches it. Assumed with
    MFA by the principals given."""

    def __init__(self, scope: Construct, id: str, *, groups: Sequence[str], principals: Sequence[iam.IPrincipal]) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        packages = [f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:model-package/{g}/*"
                    for g in groups]
        package_groups = [f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:model-package-group/{g}"
                          for g in groups]
        self.role = iam.Role(self, "Role", description="genaiops approvers: model package approval status only",
                             assumed_by=iam.CompositePrincipal(*principals).with_conditions(
                                 {"Bool": {"aws:MultiFactorAuthPresent": "true"}}),
                             max_session_duration=cdk.Duration.hours(1))
        policy = iam.ManagedPolicy(self, "Policy", roles=[self.role], statements=[
            iam.PolicyStatement(sid="ApprovalStatusOnly", actions=["sagemaker:UpdateModelPackage"], resources=packages,
                                conditions={"StringEquals": {"sagemaker:ModelApprovalStatus":
                                                             ["Rejected", "PendingManualApproval"]}}),
            iam.PolicyStatement(sid="ReadWhatIsDecided", actions=["sagemaker:DescribeModelPackage",
                                                                  "sagemaker:ListModelPackages",
                                                                  "sagemaker:DescribeModelPackageGroup"],
                                resources=[*packages, *package_groups]),
        ])
        for group in groups:
            acknowledge(policy, **{
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                f"model-package/{group}/*]": "The versions of one model package group; only their approval status "
                                             "may change, and only to Rejected or PendingManualApproval."})
