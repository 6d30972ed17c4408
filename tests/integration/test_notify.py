"""Notifications on the aws backend: published to the SNS topic (moto), read back from a subscribed queue."""

from __future__ import annotations

import json

import boto3
from moto import mock_aws

from pipelines.backends import make_notifier
from pipelines.notify import LocalNotifier, SnsNotifier
from pipelines.settings import Settings


@mock_aws
def test_notifications_go_to_the_alarm_topic_on_aws_and_to_a_file_locally(tmp_path: object) -> None:
    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="genaiops-alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="approvers")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    aws = Settings(backend="aws", artifact_bucket="b", mlflow_tracking_uri="http://mlflow", sagemaker_role_arn="r",
                   notify_topic_arn=topic)

    notifier = make_notifier(aws)
    assert isinstance(notifier, SnsNotifier)
    notifier.send("genaiops: m v2 waits for approval", "m version 2 passed its gates",
                  {"version": "https://mlflow/#/models/m/versions/2"})
    [message] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(message["Body"])
    assert body["Subject"] == "genaiops: m v2 waits for approval"
    assert body["Message"] == "m version 2 passed its gates\nversion: https://mlflow/#/models/m/versions/2"

    local = make_notifier(Settings(workspace=tmp_path))  # type: ignore[arg-type]
    assert isinstance(local, LocalNotifier)
    local.send("subject", "message", {"run": "http://127.0.0.1:4200/runs/flow-run/1"})
    assert json.loads(local.path.read_text())["links"] == {"run": "http://127.0.0.1:4200/runs/flow-run/1"}
