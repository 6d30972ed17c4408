"""What a retrain on the aws backend will create and pay for, checked before anything is paid for.

`preflight` reads (never writes) what the run needs: the execution role and its trust, the artifact
bucket, the KMS key, the JumpStart model's spec (trainable, on this instance type), and the SageMaker
service quotas of the training and evaluation instances where the Service Quotas API answers.
`plan` lists the jobs and endpoints the run will create, with instance types, counts and maximum run
times, and the most instance-hours they can cost. `genaiops retrain --plan` prints both and stops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from contracts.names import package_group
from pipelines.settings import PipelineConfig, Settings


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    state: Literal["ok", "failed", "unknown"]
    detail: str


class Planned(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: str
    name: str
    instance_type: str = ""
    instances: int = 0
    max_seconds: int = 0
    detail: str = ""

    @property
    def instance_hours(self) -> float:
        return self.instances * self.max_seconds / 3600


class RetrainPlan(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: str
    region: str
    checks: list[Check]
    creates: list[Planned]

    @property
    def ready(self) -> bool:
        return not [c for c in self.checks if c.state == "failed"]

    @property
    def instance_hours(self) -> float:
        return sum(p.instance_hours for p in self.creates)


READ_PREFIXES = ("Describe", "Get", "List", "Head", "Search")


def refuse_writes(model: Any, **_: Any) -> None:
    """A botocore `before-call` hook for a plan: any call that is not a read fails."""
    if not model.name.startswith(READ_PREFIXES):
        raise RuntimeError(f"a plan made a mutating AWS call: {model.service_model.service_name}.{model.name}")


def _client_error(exc: Exception) -> str:
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', exc)}"


def preflight(settings: Settings, config: PipelineConfig, session: Any,
              hub_document: Callable[[], Any] | None = None) -> list[Check]:
    """Read-only checks of what an aws retrain needs; `session` is a boto3 Session."""
    from botocore.exceptions import BotoCoreError, ClientError

    checks: list[Check] = []
    role = settings.sagemaker_role_arn or ""
    try:
        found = session.client("iam").get_role(RoleName=role.rsplit("/", 1)[-1])["Role"]
        trust = str(found.get("AssumeRolePolicyDocument", ""))
        trusted = "sagemaker.amazonaws.com" in trust
        checks.append(Check(name="execution role", state="ok" if trusted else "failed",
                            detail=f"{role} exists" + ("" if trusted else ", but SageMaker may not assume it "
                                                       "(its trust policy does not name sagemaker.amazonaws.com)")))
    except (ClientError, BotoCoreError) as exc:
        checks.append(Check(name="execution role", state="failed",
                            detail=f"GENAIOPS_SAGEMAKER_ROLE_ARN {role}: {_client_error(exc)}"))
    bucket = settings.artifact_bucket or ""
    try:
        session.client("s3").head_bucket(Bucket=bucket)
        checks.append(Check(name="artifact bucket", state="ok", detail=f"s3://{bucket} is reachable"))
    except (ClientError, BotoCoreError) as exc:
        checks.append(Check(name="artifact bucket", state="failed",
                            detail=f"GENAIOPS_ARTIFACT_BUCKET {bucket}: {_client_error(exc)}"))
    if settings.kms_key_id:
        try:
            key = session.client("kms").describe_key(KeyId=settings.kms_key_id)["KeyMetadata"]
            enabled = key.get("KeyState") == "Enabled"
            checks.append(Check(name="KMS key", state="ok" if enabled else "failed",
                                detail=f"{settings.kms_key_id} is {key.get('KeyState')}"))
        except (ClientError, BotoCoreError) as exc:
            checks.append(Check(name="KMS key", state="failed",
                                detail=f"GENAIOPS_KMS_KEY_ID {settings.kms_key_id}: {_client_error(exc)}"))
    else:
        checks.append(Check(name="KMS key", state="failed", detail="GENAIOPS_KMS_KEY_ID is unset: data, artifacts "
                                                                   "and training volumes are encrypted with it"))
    topic = settings.notify_topic_arn
    if topic:
        try:
            session.client("sns").get_topic_attributes(TopicArn=topic)
            checks.append(Check(name="notification topic", state="ok", detail=f"{topic} exists"))
        except (ClientError, BotoCoreError) as exc:
            checks.append(Check(name="notification topic", state="failed",
                                detail=f"GENAIOPS_NOTIFY_TOPIC_ARN {topic}: {_client_error(exc)}"))
    else:
        checks.append(Check(name="notification topic", state="failed",
                            detail="GENAIOPS_NOTIFY_TOPIC_ARN is unset: alarms, rollbacks and failed runs would notify "
                                   "no one (set it to the monitoring stack's NotifyTopicArn output)"))
    js = config.finetune.jumpstart
    if hub_document is not None:
        from steps.finetune import FinetuneError
        from steps.jumpstart import check_spec

        try:
            check_spec(hub_document(), config.finetune)
            checks.append(Check(name="JumpStart model", state="ok",
                                detail=f"{js.model_id} fine-tunes on {js.instance_type} with these settings"))
        except FinetuneError as exc:
            checks.append(Check(name="JumpStart model", state="failed", detail=str(exc)))
        except Exception as exc:  # the SDK's own errors for a model it cannot find
            checks.append(Check(name="JumpStart model", state="failed", detail=f"{js.model_id}: {exc}"))
    deployment = config.deployment
    needs = {f"{js.instance_type} for training job usage": js.instance_count,
             f"{deployment.instance_type} for endpoint usage": 2 * deployment.instance_count}
    checks.extend(_quotas(session, needs))
    return checks


def _quotas(session: Any, needs: dict[str, int]) -> list[Check]:
    """Applied quotas of SageMaker instance usage, where the Service Quotas API answers."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = session.client("service-quotas").get_paginator("list_service_quotas").paginate(ServiceCode="sagemaker")
        values = {q["QuotaName"]: float(q["Value"]) for page in pages for q in page.get("Quotas", [])}
    except (ClientError, BotoCoreError) as exc:
        return [Check(name=f"quota: {name}", state="unknown", detail=f"Service Quotas did not answer "
                                                                      f"({_client_error(exc)})") for name in needs]
    checks = []
    for name, count in needs.items():
        if name not in values:
            checks.append(Check(name=f"quota: {name}", state="unknown", detail="not listed by Service Quotas"))
        else:
            enough = values[name] >= count
            checks.append(Check(name=f"quota: {name}", state="ok" if enough else "failed",
                                detail=f"{values[name]:g} {'≥' if enough else '<'} {count} needed"))
    return checks


def plan(settings: Settings, config: PipelineConfig, checks: list[Check]) -> RetrainPlan:
    """What the run creates: S3 objects, the training job, the temporary evaluation endpoint, the registrations."""
    js, deployment = config.finetune.jumpstart, config.deployment
    prefix = f"s3://{settings.artifact_bucket}/{settings.artifact_prefix}"
    encryption = f"SSE-KMS {settings.kms_key_id}" if settings.kms_key_id else "bucket default encryption"
    run = (js.max_wait_seconds or 2 * js.max_run_seconds) if js.spot else js.max_run_seconds
    creates = [
        Planned(kind="S3 objects", name=f"{prefix}/datasets/<dataset hash>/, {prefix}/jumpstart/<dataset hash>/",
                detail=f"the prepared splits and the training channels ({encryption})"),
        Planned(kind="training job", name=f"{js.model_id[:40]}-<dataset hash>", instance_type=js.instance_type,
                instances=js.instance_count, max_seconds=run,
                detail=f"JumpStart {js.model_id}, {'managed spot' if js.spot else 'on demand'}, "
                       f"output {prefix}/training-jobs/"),
        Planned(kind="endpoint (temporary)", name=f"{config.model_name}-eval-<dataset hash>",
                instance_type=deployment.instance_type, instances=2 * deployment.instance_count,
                max_seconds=config.evaluate.endpoint_ttl_s,
                detail="variants candidate and base for the evaluation; deleted when it ends, tagged to expire "
                       f"after {config.evaluate.endpoint_ttl_s} s (`genaiops endpoints gc` deletes it then)"),
        Planned(kind="registrations", name=f"MLflow {config.model_name} version, SageMaker model package",
                detail="the version with its gate report; mirrored into the model package group "
                       f"{config.model_packages.group or package_group(config.model_name)}"
                       if config.model_packages.enabled else "the version with its gate report"),
    ]
    return RetrainPlan(model=config.model_name, region=settings.region, checks=checks, creates=creates)
