"""The aws backend offline: moto's server on 127.0.0.1 for S3, CloudWatch, SNS, SQS, IAM, STS and KMS, and the local
twin as SageMaker's endpoint URL, standing in for SageMaker in that account: its endpoints put their metrics to
moto's CloudWatch and their capture to moto's S3, as SageMaker does. Nothing here writes a tag, a capture file or a
metric: the platform's own code does, through the same calls it makes on AWS."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest

REGION, BUCKET = "us-east-1", "genaiops-artifacts"


def reset(moto_url: str) -> None:
    """moto's state is per process: start from nothing."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=30).close()


def with_percentiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's CloudWatch answers Sum, Average, Minimum, Maximum and SampleCount but no percentile: give it CloudWatch's
    (nearest rank over the period's values), so that a reader of `ModelLatency` p50 and p99 runs against the datums
    the endpoints really put. The server runs in this process, so the patch reaches it."""
    from moto.cloudwatch import models

    plain = models.Statistics.get_statistics_for_type

    def statistic(self: Any, stat: str) -> Any:
        if stat.startswith("p") and stat[1:].replace(".", "", 1).isdigit():
            values = sorted(self.metric_single_values_list)
            if not values:
                return None
            return values[min(len(values) - 1, max(0, math.ceil(float(stat[1:]) / 100 * len(values)) - 1))]
        return plain(self, stat)

    monkeypatch.setattr(models.Statistics, "get_statistics_for_type", statistic)


@contextmanager
def aws_backend(workspace: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The aws backend's settings over moto and the workspace's twin (started here with CloudWatch for its metrics);
    an SQS queue subscribed to the notification topic hears what the platform publishes."""
    from local_aws.server import ensure, stop
    from tests.jumpstart import ROLE_ARN, create_role

    reset(moto_url)
    # MLflow caches its S3 client by MLFLOW_S3_ENDPOINT_URL: naming it keeps a client of another server out.
    for key, value in {"AWS_ENDPOINT_URL": moto_url, "MLFLOW_S3_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                       "AWS_EC2_METADATA_DISABLED": "true", "SAGEMAKER_VALIDATE_ROLE": "false"}.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    create_role()
    key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    sns, sqs = boto3.client("sns", region_name=REGION), boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="genaiops-notifications")["TopicArn"]
    queue = sqs.create_queue(QueueName="on-call")["QueueUrl"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
    twin = ensure(workspace, region=REGION, cloud="aws")  # with the environment above: moto is its AWS
    tracking = f"sqlite:///{workspace / 'mlflow.db'}"
    for name, value in {"BACKEND": "aws", "REGION": REGION, "ARTIFACT_BUCKET": BUCKET, "KMS_KEY_ID": key,
                        "SAGEMAKER_ROLE_ARN": ROLE_ARN, "MLFLOW_TRACKING_URI": tracking,
                        "SAGEMAKER_ENDPOINT_URL": twin, "NOTIFY_TOPIC_ARN": topic}.items():
        monkeypatch.setenv(f"GENAIOPS_{name}", value)
    try:
        yield {"s3": s3, "twin": twin, "topic": topic, "queue": queue, "key": key, "tracking": tracking}
    finally:
        for log in sorted((workspace / "endpoints").glob("*/*.log")):  # shown with a failure
            print(f"--- {log}\n{log.read_text(errors='replace')[-3000:]}")
        stop(workspace)
        reset(moto_url)


def notices(queue: str) -> list[dict[str, Any]]:
    """What the notification topic delivered to the queue so far (subject and message of each)."""
    sqs = boto3.client("sqs", region_name=REGION)
    found = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


JUMPSTART_MODEL = "meta-textgeneration-llama-3-2-1b-instruct"
BASE_PREFIX = f"meta-textgeneration/{JUMPSTART_MODEL}/artifacts/inference-prepack/v1.0.0/"
BASE_ARTIFACT = f"s3://jumpstart-cache-prod-{REGION}/{BASE_PREFIX}"


def jumpstart(monkeypatch: pytest.MonkeyPatch, scratch: Path, base_dir: Path, adapters: list[Path], *,
              template: str, generation: dict[str, Any]) -> list[str]:
    """JumpStart offline: its base model (`base_dir`, packaged as the base model's package) uncompressed under
    JumpStart's cache prefix, DescribeHubContent answered with the spec (naming that hosting artifact), and each
    training job's output: the next adapter of `adapters` on the base model, packaged as the deployer packages it.
    Every call the run's boto3 session makes is recorded in the list returned."""
    import io
    import tarfile

    from serving import package
    from steps.artifacts import LocalStore
    from tests.integration.test_aws_plan import answer_service_quotas
    from tests.jumpstart import answer_describe_hub_content

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=f"jumpstart-cache-prod-{REGION}")
    store = LocalStore(scratch)
    base = package.of_base(f"jumpstart:{JUMPSTART_MODEL}", str(base_dir), template=template, generation=generation,
                           store=store, region=REGION)
    with tarfile.open(fileobj=io.BytesIO(Path(base.uri.removeprefix("file://")).read_bytes())) as archive:
        for member in archive.getmembers():
            data = archive.extractfile(member)
            if data is not None:
                s3.put_object(Bucket=f"jumpstart-cache-prod-{REGION}", Key=BASE_PREFIX + member.name, Body=data.read())
    artifacts = [Path(package.build(package.ServedModel(
        weights=str(adapter), kind="adapter", base_model=f"jumpstart:{JUMPSTART_MODEL}", base_model_path=str(base_dir),
        template=template, generation=generation), store, region=REGION).uri.removeprefix("file://")).read_bytes()
        for adapter in adapters]
    calls: list[str] = []

    def answer_hub(params: dict[str, Any], **kwargs: Any) -> Any:
        response, parsed = answer_describe_hub_content(params, **kwargs)
        document = json.loads(parsed["HubContentDocument"])
        parsed["HubContentDocument"] = json.dumps({**document, "HostingArtifactUri": BASE_ARTIFACT})
        return response, parsed

    def train(params: dict[str, Any], **_: Any) -> None:  # the job's output, where SageMaker puts it
        output = params["OutputDataConfig"]["S3OutputPath"].removeprefix("s3://")
        bucket, _, prefix = output.partition("/")
        trained = sum(name == "CreateTrainingJob" for name in calls)  # the jobs before this one
        s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{params['TrainingJobName']}/output/model.tar.gz",
                      Body=artifacts[min(trained, len(artifacts) - 1)])

    def session(settings: Any) -> Any:
        created = boto3.Session(region_name=settings.region)
        events = created._session
        events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
        events.register("before-call.sagemaker.DescribeHubContent", answer_hub)
        events.register("provide-client-params.sagemaker.CreateTrainingJob", train)
        events.register("before-call.service-quotas.*", answer_service_quotas)
        return created

    monkeypatch.setattr("pipelines.backends.boto_session", session)
    return calls


def adapter(base: Path, target: Path, seed: int) -> Path:
    """An (untrained) LoRA adapter on `base`, with its tokenizer, as a fine-tuned artifact carries it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    return target
