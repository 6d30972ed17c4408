"""Events that start Prefect deployment runs: an EventBridge rule's target is a small Fargate task that runs
`prefect deployment run <flow>/<model>` against the Prefect API, with a dead-letter queue for what it cannot start."""

from __future__ import annotations

import json
from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk.constructs.nag import acknowledge

CONTAINER = "prefect"


class DeploymentTriggers(Construct):
    """One task definition and one dead-letter queue for every rule that starts a deployment run."""

    def __init__(self, scope: Construct, id: str, *, cluster: ecs.ICluster, image: str, api_url: str,
                 api_key: secretsmanager.ISecret, subnets: ec2.SubnetSelection, security_group: ec2.ISecurityGroup,
                 log_group: logs.ILogGroup, retain: bool) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        self.cluster, self.subnets, self.security_group = cluster, subnets, security_group
        key = kms.Key(self, "QueueKey", enable_key_rotation=True, description="genaiops trigger dead letters",
                      removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY)
        key.add_to_resource_policy(iam.PolicyStatement(  # EventBridge encrypts what it sends to the queue
            principals=[iam.ServicePrincipal("events.amazonaws.com")], actions=["kms:GenerateDataKey", "kms:Decrypt"],
            resources=["*"], conditions={"StringEquals": {"aws:SourceAccount": stack.account}}))
        self.dead_letters = sqs.Queue(self, "DeadLetters", encryption=sqs.QueueEncryption.KMS,
                                      encryption_master_key=key, enforce_ssl=True,
                                      retention_period=cdk.Duration.days(14))
        acknowledge(self.dead_letters, **{"AwsSolutions-SQS3": "This queue is itself the dead-letter queue of the "
                                                               "deployment triggers."})
        self.task = ecs.FargateTaskDefinition(self, "Task", cpu=256, memory_limit_mib=512)
        self.task.add_container(CONTAINER, image=ecs.ContainerImage.from_registry(image),
                                environment={"PREFECT_API_URL": api_url, "DO_NOT_TRACK": "1"},
                                secrets={"PREFECT_API_KEY": ecs.Secret.from_secrets_manager(api_key)},
                                logging=ecs.LogDrivers.aws_logs(stream_prefix="trigger", log_group=log_group))
        acknowledge(self.task, **{"AwsSolutions-ECS2": "The environment holds no secret: the Prefect API URL and a "
                                                       "switch. The API key comes from Secrets Manager."})

    def add(self, id: str, *, pattern: events.EventPattern, deployment: str, description: str,
            parameters: dict[str, str] | None = None, tags: Sequence[str] = ()) -> events.Rule:
        """A rule whose events run `deployment` (`flow/name`) with `tags`; `parameters` are JSON texts. Both may
        hold `events.EventField` values of the event."""
        rule = events.Rule(self, id, event_pattern=pattern, description=description)
        command = ["prefect", "deployment", "run", deployment]
        for name, value in (parameters or {}).items():
            command += ["--param", f"{name}={value}"]
        for tag in tags:
            command += ["--tag", tag]
        rule.add_target(targets.EcsTask(
            cluster=self.cluster, task_definition=self.task, subnet_selection=self.subnets,
            security_groups=[self.security_group], assign_public_ip=False, dead_letter_queue=self.dead_letters,
            retry_attempts=4, max_event_age=cdk.Duration.hours(1),
            container_overrides=[targets.ContainerOverride(container_name=CONTAINER, command=command)]))
        return rule


def alarm_trigger(alarm_name: str, reason: str) -> str:
    """The `trigger` parameter of a retrain started by an alarm (`pipelines.trigger.Trigger`), as JSON text
    whose name and detail are filled from the event."""
    return json.dumps({"kind": "alarm", "name": alarm_name, "detail": reason})


def alarm_names(patterns: Sequence[str]) -> list[str | dict[str, str]]:
    """EventBridge matchers of alarm names: a name with `*` is a wildcard pattern."""
    return [{"wildcard": p} if "*" in p else p for p in patterns]
