"""The monitoring stack: the notification topic, the cost budget, and the alarms and dashboards of the endpoints
kept as code, built from `monitoring/`'s specs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_budgets as budgets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra_cdk.config import EndpointAsCode
from infra_cdk.constructs.alarms import EndpointAlarms
from infra_cdk.constructs.ids import pascal
from monitoring.monitor import MonitoringConfig, endpoint_alarms

PUBLISHERS = ("cloudwatch.amazonaws.com", "budgets.amazonaws.com")


class MonitoringStack(cdk.Stack):
    """Its topic's ARN becomes the `GENAIOPS_NOTIFY_TOPIC_ARN` setting of the flows."""

    def __init__(self, scope: Construct, id: str, *, stage: str, retain: bool, endpoints: Sequence[EndpointAsCode],
                 monitoring: Mapping[str, Any], budget_usd: float, emails: Sequence[str], **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        self.topic_key = key = kms.Key(self, "TopicKey", enable_key_rotation=True, description="genaiops notifications",
                      removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY)
        for service in PUBLISHERS:  # the services that publish to the topic encrypt with its key
            key.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.ServicePrincipal(service)], actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"], conditions={"StringEquals": {"aws:SourceAccount": self.account}}))
        self.topic = sns.Topic(self, "Notifications", display_name=f"genaiops {stage}", master_key=key,
                               enforce_ssl=True)
        for service in PUBLISHERS:
            self.topic.add_to_resource_policy(iam.PolicyStatement(
                principals=[iam.ServicePrincipal(service)], actions=["sns:Publish"], resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": self.account}}))
        for address in emails:  # notifications and budget alerts alike
            self.topic.add_subscription(subscriptions.EmailSubscription(address))
        config = MonitoringConfig.model_validate(monitoring)
        self.endpoints: dict[str, EndpointAlarms] = {}
        for endpoint in endpoints:
            self.endpoints[endpoint.name] = EndpointAlarms(
                self, f"Alarms{pascal(endpoint.name)}", endpoint=endpoint.name,
                variants=endpoint.variants, period=config.period,
                specs=endpoint_alarms(endpoint.name, endpoint.variants, endpoint.model, config,
                                      notify_topic=self.topic.topic_arn))
        subscribers = [budgets.CfnBudget.SubscriberProperty(subscription_type="SNS", address=self.topic.topic_arn)]
        budgets.CfnBudget(self, "Budget", budget=budgets.CfnBudget.BudgetDataProperty(
            budget_name=f"genaiops-{stage}", budget_type="COST", time_unit="MONTHLY",
            budget_limit=budgets.CfnBudget.SpendProperty(amount=budget_usd, unit="USD"),
            cost_filters={"TagKeyValue": [f"user:genaiops:stage${stage}"]}),
            notifications_with_subscribers=[
                budgets.CfnBudget.NotificationWithSubscribersProperty(
                    notification=budgets.CfnBudget.NotificationProperty(
                        notification_type=kind, comparison_operator="GREATER_THAN", threshold=percent,
                        threshold_type="PERCENTAGE"),
                    subscribers=subscribers)
                for kind, percent in (("ACTUAL", 80), ("FORECASTED", 100))])
        cdk.CfnOutput(self, "NotifyTopicArn", value=self.topic.topic_arn,
                      description="GENAIOPS_NOTIFY_TOPIC_ARN (where the flows' notifications and alarms go)")
