"""The orchestration stack: what Prefect needs to run the flows on AWS.

- an ECS cluster with a Prefect worker (a Fargate service in the private subnets) that polls the `genaiops-ecs`
  work pool and starts each flow run as its own Fargate task of the genaiops image;
- the flow runs' task roles, one per approval-server account (least privilege: the buckets, the key, SageMaker,
  CloudWatch, the topic, its own account's secret, the audit bucket read-only);
- the Prefect API key in Secrets Manager, the image repository, encrypted logs;
- EventBridge rules per model: a model package state change runs `approval-watch/<model>` at once; an alarm
  whose spec's actions include `retrain` (the drift alarms, by default) runs `retrain/<model>`, and one whose actions
  include `rollback` (a release variant's 5XX rate, p99 latency, empty outputs) runs `rollout/<model>`, which rolls
  a shadow or A/B candidate back; each with the alarm as its trigger. (A canary or linear release is rolled back by
  SageMaker's own guardrails, which the deployer gives the same alarms.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from constructs import Construct

from contracts.names import release_endpoint
from infra_cdk.approvals import ACCOUNTS, audit_bucket_name
from infra_cdk.constructs.ids import logical_id, pascal
from infra_cdk.constructs.logs import LogKey
from infra_cdk.constructs.nag import acknowledge
from infra_cdk.constructs.triggers import DeploymentTriggers, alarm_names, alarm_trigger
from monitoring.metrics import GENAIOPS_NAMESPACE
from monitoring.monitor import MonitoringConfig, endpoint_alarms

WORK_POOL = "genaiops-ecs"  # prefect.yaml's work pool
PREFECT_IMAGE = "prefecthq/prefect:3-python3.11"
NO_RESOURCE_TYPES = ("These actions have no resource types (SageMaker List*, CloudWatch GetMetricData, "
                     "GetMetricStatistics, DescribeAlarms and PutMetricData, application-autoscaling, "
                     "ListServiceQuotas); PutMetricData is held to the genaiops namespace.")


class OrchestrationStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, stage: str, models: Sequence[str], vpc: ec2.IVpc,
                 subnets: ec2.SubnetSelection, security_group: ec2.ISecurityGroup,
                 bucket_access: iam.IManagedPolicy, execution_role: iam.IRole,
                 tracking_url: str, account_secrets: Mapping[str, secretsmanager.ISecret], audit: s3.IBucket,
                 approvals_key: kms.IKey,
                 topic: sns.ITopic, topic_key: kms.IKey,
                 model_package_groups: Mapping[str, str],
                 monitoring: Mapping[str, Any],
                 prefect_api_url: str | None, retain: bool, log_days: logs.RetentionDays, worker_cpu: int,
                 worker_memory_mib: int, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        log_key = LogKey(self, "LogKey", retain=retain, purpose="the Prefect worker and the flow runs")
        worker_logs = log_key.group("WorkerLogs", days=log_days, retain=retain)
        flow_logs = log_key.group("FlowRunLogs", days=log_days, retain=retain)
        secret_key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=removal,
                             description="genaiops orchestration: the Prefect API key and the image repository")
        api_key = secretsmanager.Secret(self, "PrefectApiKey", encryption_key=secret_key, removal_policy=removal,
                                        description=f"genaiops {stage}: the Prefect API key of the worker and flows "
                                                    "(put the real key after the first deploy)")
        acknowledge(api_key, **{"AwsSolutions-SMG4": "A Prefect API key is issued by the Prefect API (Cloud or a "
                                                     "server), not by AWS; it is rotated there and put here."})
        self.repository = ecr.Repository(self, "Image", image_scan_on_push=True,
                                         image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                                         encryption=ecr.RepositoryEncryption.KMS, encryption_key=secret_key,
                                         removal_policy=removal, empty_on_delete=not retain,
                                         lifecycle_rules=[ecr.LifecycleRule(max_image_count=30)])
        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED)

        # The flow runs: a task role per approval-server account (retrain runs as the pipeline, approval-watch as
        # the watcher, the rest as the release account), each reading its own account's secret and no other, and
        # the audit bucket read-only; one execution role. The worker passes them to each run's task.
        self.flow_roles: dict[str, iam.Role] = {}
        for account, flows in ((ACCOUNTS.pipeline_account, "retrain"), (ACCOUNTS.watcher_account, "approval-watch"),
                               (ACCOUNTS.release_account, "release, rollout, monitor")):
            role = iam.Role(self, f"FlowRole{pascal(account)}", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                            description=f"genaiops flow runs as {account}: {flows}")
            role.add_managed_policy(bucket_access)
            # Identity policies only: a grant on the approvals stack's key or bucket would make it depend on this one.
            role.add_to_policy(iam.PolicyStatement(actions=["secretsmanager:GetSecretValue",
                                                            "secretsmanager:DescribeSecret"],
                                                   resources=[account_secrets[account].secret_arn]))
            audit_arn = f"arn:{self.partition}:s3:::{audit_bucket_name(self, stage)}"
            role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject", "s3:ListBucket"],
                                                   resources=[audit_arn, f"{audit_arn}/*"]))
            role.add_to_policy(iam.PolicyStatement(actions=["kms:Decrypt"], resources=[approvals_key.key_arn],
                                                   conditions={"StringLike": {"kms:ViaService": [
                                                       f"secretsmanager.{self.region}.amazonaws.com",
                                                       f"s3.{self.region}.amazonaws.com"]}}))
            policy = iam.Policy(self, f"FlowPolicy{pascal(account)}", roles=[role],
                                statements=self._flow_statements(execution_role, topic, topic_key))
            acknowledge(policy, **{"AwsSolutions-IAM5[Resource::*]": NO_RESOURCE_TYPES, **{
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:{kind}/*]":
                    f"The flows create and delete SageMaker {kind}s named from model versions and content digests; "
                    "every one is in this account and region." for kind in SAGEMAKER_KINDS}, **{
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:{rest}]": reason for rest, reason in WILDCARDS.items()}})
            acknowledge(role, **{f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::genaiops-{stage}-audit-"
                                 "<AWS::AccountId>-<AWS::Region>/*]": "The audit log's entries, read-only."})
            self.flow_roles[account] = role
        self.flow_role = self.flow_roles[ACCOUNTS.release_account]  # the work pool's default
        self.flow_execution_role = iam.Role(self, "FlowExecutionRole",
                                            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                            description="genaiops flow runs' tasks: pull the image, write logs")
        self.repository.grant_pull(self.flow_execution_role)
        flow_logs.grant_write(self.flow_execution_role)
        api_key.grant_read(self.flow_execution_role)
        acknowledge(self.flow_execution_role, **{"AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken has "
                                                                                    "no resource type; the pulls "
                                                                                    "are held to this repository."})

        # The worker.
        worker = ecs.FargateTaskDefinition(self, "Worker", cpu=worker_cpu, memory_limit_mib=worker_memory_mib)
        worker.add_container(
            "prefect-worker", image=ecs.ContainerImage.from_registry(PREFECT_IMAGE),
            command=["prefect", "worker", "start", "--pool", WORK_POOL, "--type", "ecs"],
            environment={"PREFECT_API_URL": prefect_api_url or "", "EXTRA_PIP_PACKAGES": "prefect-aws",
                         "DO_NOT_TRACK": "1"},
            secrets={"PREFECT_API_KEY": ecs.Secret.from_secrets_manager(api_key)},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker", log_group=worker_logs))
        worker_policy = iam.Policy(self, "WorkerPolicy", roles=[worker.task_role], statements=[
            iam.PolicyStatement(actions=["ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition",
                                         "ecs:DescribeTaskDefinition", "ecs:ListTaskDefinitions",
                                         "ec2:DescribeSubnets", "ec2:DescribeVpcs", "ec2:DescribeSecurityGroups"],
                                resources=["*"]),
            iam.PolicyStatement(actions=["ecs:RunTask"], resources=["*"],
                                conditions={"ArnEquals": {"ecs:cluster": self.cluster.cluster_arn}}),
            iam.PolicyStatement(actions=["ecs:StopTask", "ecs:DescribeTasks", "ecs:TagResource"],
                                resources=[f"arn:{self.partition}:ecs:{self.region}:{self.account}:task/"
                                           f"{self.cluster.cluster_name}/*"]),
            iam.PolicyStatement(actions=["iam:PassRole"],
                                resources=[*(r.role_arn for r in self.flow_roles.values()),
                                           self.flow_execution_role.role_arn],
                                conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}),
            iam.PolicyStatement(actions=["logs:GetLogEvents"], resources=[f"{flow_logs.log_group_arn}:*"]),
        ])
        acknowledge(worker_policy, **{
            "AwsSolutions-IAM5[Resource::*]": "Task definition calls and EC2 Describe calls have no resource types; "
                                              "RunTask is held to this cluster by its condition.",
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task/"
            f"<{logical_id(self.cluster)}>/*]": "The flow runs' tasks in this cluster only.",
            f"AwsSolutions-IAM5[Resource::<{logical_id(flow_logs)}.Arn>:*]":
                "The log streams of the flow runs' log group, read-only.",
        })
        service = ecs.FargateService(self, "WorkerService", cluster=self.cluster, task_definition=worker,
                                     desired_count=1 if prefect_api_url else 0, vpc_subnets=subnets,
                                     security_groups=[security_group],
                                     assign_public_ip=False, circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
                                     min_healthy_percent=0, max_healthy_percent=100)
        acknowledge(worker, **{"AwsSolutions-ECS2": "The environment holds no secret: the Prefect API URL and "
                                                    "switches. The API key comes from Secrets Manager."})
        del service

        # An approval or rejection in SageMaker reaches the approval watcher at once, not at its next interval,
        # and a drift alarm whose spec says `retrain` starts the model's retrain with the alarm as its trigger.
        triggers = DeploymentTriggers(self, "Triggers", cluster=self.cluster, image=PREFECT_IMAGE,
                                      api_url=prefect_api_url or "", api_key=api_key, subnets=subnets,
                                      security_group=security_group, log_group=worker_logs, retain=retain)
        for model in models if prefect_api_url else []:  # without the API, a trigger could only fail
            triggers.add(f"Approval{pascal(model)}", deployment=f"approval-watch/{model}",
                         description=f"a {model} model package changed: run approval-watch/{model}",
                         pattern=events.EventPattern(source=["aws.sagemaker"],
                                                     detail_type=["SageMaker Model Package State Change"],
                                                     detail={"ModelPackageGroupName": [model_package_groups[model]]}))
            for kind, flow in (("retrain", "retrain"), ("rollback", "rollout")):
                names = alarm_names_with(model, monitoring, kind)
                if not names:
                    continue
                triggers.add(f"{pascal(kind)}{pascal(model)}", deployment=f"{flow}/{model}",
                             description=f"an alarm whose action is {kind} went into ALARM: run {flow}/{model}",
                             pattern=events.EventPattern(source=["aws.cloudwatch"],
                                                         detail_type=["CloudWatch Alarm State Change"],
                                                         detail={"alarmName": alarm_names(names),
                                                                 "state": {"value": ["ALARM"]}}),
                             parameters={"trigger": alarm_trigger(  # names and times hold no quote to escape
                                 events.EventField.from_path("$.detail.alarmName"),
                                 f"went into ALARM at {events.EventField.from_path('$.time')}")},
                             tags=["trigger:alarm", f"alarm:{events.EventField.from_path('$.detail.alarmName')}"])
        events_role = triggers.task.node.try_find_child("EventsRole")
        if events_role is not None:
            acknowledge(events_role, **{
                f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:<AWS::Region>:*:task/"
                f"<{logical_id(self.cluster)}>/*]": "EventBridge runs and tags the trigger's tasks "
                                                                   "in this cluster only."})

        # The ECS work pool's job variables (prefect-aws's ECS worker) that this stack owns; `vpc_id` and
        # `network_configuration` (its subnets and security group, no public IP) come from the network stack's outputs.
        job_variables = {
            "cluster": self.cluster.cluster_arn, "task_role_arn": self.flow_role.role_arn,
            "execution_role_arn": self.flow_execution_role.role_arn, "prefect_api_key_secret_arn": api_key.secret_arn,
            "configure_cloudwatch_logs": True,
            "cloudwatch_logs_options": {"awslogs-group": flow_logs.log_group_name, "awslogs-region": self.region,
                                        "awslogs-stream-prefix": "flow-run"}}
        cdk.CfnOutput(self, "WorkPoolJobVariables", value=self.to_json_string(job_variables),
                      description=f"the job variables of the {WORK_POOL} work pool")
        cdk.CfnOutput(self, "WorkerState", value="running" if prefect_api_url else "stopped: deploy with -c prefect_api_url",
                      description="the Prefect worker and the triggers run once the Prefect API is given")
        for name, value, setting in (
                ("ClusterArn", self.cluster.cluster_arn, "the work pool's `cluster`"),
                ("FlowTaskRoleArn", self.flow_role.role_arn, "the work pool's `task_role_arn` (the release account's)"),
                ("PipelineTaskRoleArn", self.flow_roles[ACCOUNTS.pipeline_account].role_arn,
                 "retrain's `task_role_arn` (its job_variables in prefect.yaml)"),
                ("WatcherTaskRoleArn", self.flow_roles[ACCOUNTS.watcher_account].role_arn,
                 "approval-watch's `task_role_arn` (its job_variables in prefect.yaml)"),
                ("TrackingUri", tracking_url, "GENAIOPS_MLFLOW_TRACKING_URI of the flows"),
                ("FlowExecutionRoleArn", self.flow_execution_role.role_arn, "the work pool's `execution_role_arn`"),
                ("FlowLogGroup", flow_logs.log_group_name, "the work pool's `cloudwatch_logs_options.awslogs-group`"),
                ("ImageRepository", self.repository.repository_uri, "GENAIOPS_IMAGE (<uri>:<tag>) for prefect deploy"),
                ("PrefectApiKeySecret", api_key.secret_arn, "put the Prefect API key here")):
            cdk.CfnOutput(self, name, value=value, description=setting)

    def _flow_statements(self, execution_role: iam.IRole, topic: sns.ITopic,
                         topic_key: kms.IKey) -> list[iam.PolicyStatement]:
        arn = f"arn:{self.partition}:sagemaker:{self.region}:{self.account}"
        return [
            iam.PolicyStatement(actions=["iam:PassRole"], resources=[execution_role.role_arn],
                                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
            iam.PolicyStatement(actions=[
                "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                "sagemaker:CreateModel", "sagemaker:DescribeModel", "sagemaker:DeleteModel",
                "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig",
                "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint",
                "sagemaker:DeleteEndpoint", "sagemaker:UpdateEndpointWeightsAndCapacities", "sagemaker:InvokeEndpoint",
                "sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage",
                "sagemaker:CreateModelPackageGroup", "sagemaker:DescribeModelPackageGroup",
                "sagemaker:ListModelPackages", "sagemaker:AddTags", "sagemaker:ListTags"],
                resources=[f"{arn}:{kind}/*" for kind in SAGEMAKER_KINDS]),
            iam.PolicyStatement(actions=["sagemaker:DescribeHubContent"], resources=[
                f"arn:{self.partition}:sagemaker:{self.region}:aws:hub-content/SageMakerPublicHub/*"]),
            iam.PolicyStatement(actions=["sagemaker:ListEndpoints", "sagemaker:ListTrainingJobs",
                                         "sagemaker:ListModelPackageGroups", "cloudwatch:GetMetricData",
                                         "cloudwatch:GetMetricStatistics", "cloudwatch:DescribeAlarms",
                                         "application-autoscaling:RegisterScalableTarget",
                                         "application-autoscaling:DeregisterScalableTarget",
                                         "application-autoscaling:PutScalingPolicy",
                                         "application-autoscaling:DeleteScalingPolicy",
                                         "application-autoscaling:DescribeScalableTargets",
                                         "application-autoscaling:DescribeScalingPolicies"], resources=["*"]),
            iam.PolicyStatement(actions=["cloudwatch:PutMetricData"], resources=["*"],
                                conditions={"StringEquals": {"cloudwatch:namespace": GENAIOPS_NAMESPACE}}),
            iam.PolicyStatement(actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms",
                                         "cloudwatch:DescribeAlarmHistory", "cloudwatch:TagResource"],
                                resources=[f"arn:{self.partition}:cloudwatch:{self.region}:{self.account}:alarm:*"]),
            iam.PolicyStatement(actions=["cloudwatch:PutDashboard"],
                                resources=[f"arn:{self.partition}:cloudwatch::{self.account}:dashboard/genaiops-*"]),
            iam.PolicyStatement(actions=["sns:Publish"], resources=[topic.topic_arn]),
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[topic_key.key_arn]),
            # the aws preflight reads the execution role, and SageMaker's quotas
            iam.PolicyStatement(actions=["iam:GetRole"], resources=[execution_role.role_arn]),
            iam.PolicyStatement(actions=["servicequotas:ListServiceQuotas"], resources=["*"]),
            # the deployer's first scalable target in an account creates Application Auto Scaling's role for SageMaker
            iam.PolicyStatement(actions=["iam:CreateServiceLinkedRole"], resources=[
                f"arn:{self.partition}:iam::{self.account}:role/aws-service-role/"
                "sagemaker.application-autoscaling.amazonaws.com/*"],
                conditions={"StringLike": {"iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"}}),
            iam.PolicyStatement(actions=["logs:GetLogEvents", "logs:FilterLogEvents", "logs:DescribeLogStreams"],
                                resources=[f"arn:{self.partition}:logs:{self.region}:{self.account}:"
                                           "log-group:/aws/sagemaker/*"]),
        ]


SAGEMAKER_KINDS = ("training-job", "model", "endpoint-config", "endpoint", "model-package", "model-package-group")
WILDCARDS = {
    "sagemaker:<AWS::Region>:aws:hub-content/SageMakerPublicHub/*": "JumpStart's public model specs, read-only.",
    "cloudwatch:<AWS::Region>:<AWS::AccountId>:alarm:*": "The release and monitor flows keep each endpoint's "
                                                        "alarms, named <endpoint>/..., equal to their specs.",
    "cloudwatch::<AWS::AccountId>:dashboard/genaiops-*": "The endpoints' dashboards, named genaiops-<endpoint>.",
    "iam::<AWS::AccountId>:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/*":
        "Application Auto Scaling's service-linked role for SageMaker, created once per account, by that service name.",
    "logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/sagemaker/*": "The training jobs' and endpoints' logs, "
                                                                     "read-only, to report a failed job.",
}


def alarm_names_with(model: str, monitoring: Mapping[str, Any], kind: str) -> list[str]:
    """The names of the release endpoint's alarms whose actions include `kind` (retrain, rollback), with `*` for the
    variant (the release flow names variants vN as it releases versions)."""
    config = MonitoringConfig.model_validate(monitoring)
    specs = endpoint_alarms(release_endpoint(model), ["*"], model, config)
    return [spec.name for spec in specs if any(a.kind == kind for a in spec.actions)]

