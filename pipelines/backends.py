"""The backend factory: where the question "local or aws?" is asked, once, and nowhere else.

Every flow and command gets its ports here: stores, the registry, the trainer, boto3 clients of SageMaker and
SageMaker Runtime, the deployer, metrics, alarms, notifications, the rollout's evidence. On the local backend the
SageMaker and SageMaker Runtime clients reach the local twin (`local_aws`, started on demand), so the code above
them is the same boto3 code on both backends; this module is the only one that knows the twin exists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.artifacts import ArtifactStore, LocalStore, S3Store
from steps.finetune import LocalLoraTrainer, Trainer

if TYPE_CHECKING:
    from model_registry.audit import AuditLog
    from model_registry.mlflow_registry import MlflowRegistry
    from model_registry.sagemaker_mirror import ModelPackageMirror
    from monitoring.metrics import MetricSink, MetricSource
    from monitoring.monitor import Alarms
    from pipelines.notify import Notifier
    from pipelines.settings import PipelineConfig, Settings
    from serving.deployer import SageMakerDeployer
    from serving.evaluation import CandidateEvaluation
    from serving.evidence import EvidenceReader
    from serving.feedback import Answer
    from steps.feedback import Correction, FeedbackStore
    from steps.judge import Judge, JudgeConfig


class BackendError(ValueError):
    """What was asked cannot be done on this backend; the message says what to do instead."""


def _aws(settings: Settings) -> bool:
    return settings.backend == "aws"


def _twin(settings: Settings) -> bool:
    """Whether the SageMaker API is the local twin: the local backend, unless it names another endpoint."""
    return not _aws(settings)


def make_store(settings: Settings) -> ArtifactStore:
    if _aws(settings):
        import boto3

        assert settings.artifact_bucket is not None  # Settings validates this for the aws backend
        return S3Store(settings.artifact_bucket, boto3.client("s3", region_name=settings.region),
                       prefix=settings.artifact_prefix, kms_key_id=settings.kms_key_id)
    return LocalStore(settings.root / "artifacts")


def store_at(settings: Settings, uri: str) -> ArtifactStore:
    """A store over the objects under `uri` (`s3://bucket/prefix`, `file://` or a folder): where an endpoint
    captures, read with the credentials of the run."""
    if uri.startswith("s3://"):
        import boto3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        return S3Store(bucket, boto3.client("s3", region_name=settings.region), prefix=prefix.strip("/"))
    if uri.startswith("file://"):
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return LocalStore(Path(url2pathname(urlparse(uri).path)))
    return LocalStore(Path(uri))


def make_registry(settings: Settings, config: PipelineConfig, account: str | None = None) -> MlflowRegistry:
    """The registry, signed in as `account` (the flow's own approval-server account) when its password comes from
    Secrets Manager (GENAIOPS_MLFLOW_SECRETS_PREFIX, on aws); otherwise as MLFLOW_TRACKING_USERNAME says."""
    from model_registry.mlflow_registry import MlflowRegistry

    if account is not None and settings.mlflow_secrets_prefix:
        sign_in_as(settings, account)
    return MlflowRegistry(settings.tracking_uri, experiment=config.experiment, model_name=config.model_name,
                          artifact_root=settings.mlflow_artifact_root)


def sign_in_as(settings: Settings, account: str) -> None:
    """Set the MLflow client's credentials from the account's secret (`<prefix><account>`: username, password).
    Each flow's task role may read its own account's secret and no other, so a flow cannot act as another."""
    import json
    import os

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    secret_id = f"{settings.mlflow_secrets_prefix}{account}"
    try:
        value = boto3.client("secretsmanager", region_name=settings.region).get_secret_value(SecretId=secret_id)
        document = json.loads(value["SecretString"])
        username, password = str(document["username"]), str(document["password"])
    except (BotoCoreError, ClientError, KeyError, ValueError, TypeError) as exc:
        raise BackendError(f"GENAIOPS_MLFLOW_SECRETS_PREFIX: the {account} account's secret {secret_id} could not be "
                           f"read ({type(exc).__name__}: {exc}); it must hold username and password, and this flow's "
                           "task role must be the one that may read it") from None
    if username != account:
        raise BackendError(f"GENAIOPS_MLFLOW_SECRETS_PREFIX: the secret {secret_id} is the {username!r} account's, "
                           f"not {account!r}")
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = username, password


def make_mirror(settings: Settings, config: PipelineConfig) -> ModelPackageMirror | None:
    """The SageMaker Model Registry mirror on the aws backend (None locally, or when turned off)."""
    if not _aws(settings) or not config.model_packages.enabled:
        return None
    import boto3

    from model_registry.sagemaker_mirror import ModelPackageMirror

    # The model registry is SageMaker's own (the twin hosts endpoints only).
    return ModelPackageMirror(boto3.client("sagemaker", region_name=settings.region), config.model_packages,
                              config.model_name)


def boto_session(settings: Settings) -> Any:
    """The boto3 Session every aws-backend client of a run comes from (one place to configure or observe them)."""
    import boto3

    return boto3.Session(region_name=settings.region)


def sagemaker_session(settings: Settings, boto: Any = None) -> Any:
    """The sagemaker SDK's Session over `boto` (default: `boto_session`)."""
    from sagemaker.core.helper.session_helper import Session

    return Session(boto_session=boto or boto_session(settings), default_bucket=settings.artifact_bucket)


def make_trainer(settings: Settings, store: ArtifactStore) -> Trainer:
    if _aws(settings):
        from steps.jumpstart import JumpStartTrainer

        assert settings.sagemaker_role_arn is not None  # Settings validates this for the aws backend
        session = sagemaker_session(settings)
        return JumpStartTrainer(store=store, sagemaker_session=session, role_arn=settings.sagemaker_role_arn,
                                output_s3_uri=f"s3://{settings.artifact_bucket}/{settings.artifact_prefix}",
                                kms_key_id=settings.kms_key_id, subnets=settings.subnet_list,
                                security_group_ids=settings.security_group_list)
    return LocalLoraTrainer(settings.root / "models", settings.root / "runs")


def make_metrics(settings: Settings) -> tuple[MetricSink, MetricSource]:
    """Where metrics go and are read back: the workspace's SQLite series, or CloudWatch (throttling retried)."""
    from monitoring.metrics import CloudWatchSink, CloudWatchSource, SqliteMetricSink, cloudwatch_client

    if _aws(settings):
        client = cloudwatch_client(settings.region)
        return CloudWatchSink(client), CloudWatchSource(client)
    sqlite = SqliteMetricSink(settings.root / "metrics.db")
    return sqlite, sqlite


def make_judge(settings: Settings, config: JudgeConfig) -> Judge:
    """The LLM judge: the configured small model in process, or Amazon Bedrock's Converse API on aws."""
    if _aws(settings):
        import boto3
        from botocore.config import Config

        from steps.judge import BedrockJudge

        client = boto3.client("bedrock-runtime", region_name=settings.region,
                              config=Config(retries={"max_attempts": 6, "mode": "adaptive"}))
        return BedrockJudge(client, config.bedrock_model_id, config)
    from steps.base_model import resolve_base_model
    from steps.generation import load_model
    from steps.judge import LocalJudge

    loaded = load_model(resolve_base_model(config.model, settings.root / "models"), None, name="judge")
    return LocalJudge(loaded.model, loaded.tokenizer, config, name=config.model)


# --- SageMaker: the API, the runtime, the deployer ---------------------------------------------------

def sagemaker_url(settings: Settings) -> str | None:
    """The SageMaker API's URL: the one set, else the local twin's (started on demand), else SageMaker's (None)."""
    if settings.sagemaker_endpoint_url or not _twin(settings):
        return settings.sagemaker_endpoint_url
    from local_aws.server import ensure

    return ensure(settings.root, region=settings.region)


def _client(settings: Settings, service: str, url: str | None, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    local = {"aws_access_key_id": "local", "aws_secret_access_key": "local"} if _twin(settings) else {}
    return boto3.client(service, region_name=settings.region, endpoint_url=url, config=Config(**config), **local)


def make_sagemaker(settings: Settings) -> Any:
    """The boto3 `sagemaker` client every flow and command uses: SageMaker's, or the local twin's."""
    return _client(settings, "sagemaker", sagemaker_url(settings), retries={"max_attempts": 4, "mode": "standard"},
                   read_timeout=900)


def runtime_url(settings: Settings) -> str:
    """Where `sagemaker-runtime` requests go: the URL set, else the SageMaker API's when it is set or the twin's
    (the twin answers both), else SageMaker Runtime's regional URL."""
    url = settings.sagemaker_runtime_url or sagemaker_url(settings)
    return url or f"https://runtime.sagemaker.{settings.region}.amazonaws.com"


def make_runtime(settings: Settings) -> Any:
    """A `sagemaker-runtime` client that reaches every endpoint by name; throttling retried with backoff."""
    return _client(settings, "sagemaker-runtime", runtime_url(settings), read_timeout=900, connect_timeout=10,
                   retries={"max_attempts": 8, "mode": "adaptive"})


def make_deployer(settings: Settings, config: PipelineConfig, *, capture: bool = True,
                  progress: Callable[[str], None] | None = None) -> SageMakerDeployer:
    """The one deployer, asking the SageMaker API every second where it is the twin (it answers at once), and
    capturing to `capture_uri` (not for temporary evaluation endpoints: `capture=False`)."""
    from serving.deployer import SageMakerDeployer

    deployment = config.deployment
    if deployment.poll_seconds is None and (_twin(settings) or settings.sagemaker_endpoint_url):
        deployment = deployment.model_copy(update={"poll_seconds": 1.0})
    autoscaling = _client(settings, "application-autoscaling", None) if _aws(settings) and deployment.autoscaling \
        else None
    return SageMakerDeployer(make_sagemaker(settings), deployment, role_arn=settings.sagemaker_role_arn,
                             capture_uri=capture_uri(settings) if capture else None, autoscaling_client=autoscaling,
                             progress=progress)


def capture_uri(settings: Settings) -> str:
    """Where endpoints capture requests: the workspace's capture folder; on aws the capture bucket, else the artifact
    bucket's capture prefix."""
    if _aws(settings):
        bucket = settings.capture_bucket or settings.artifact_bucket
        prefix = "capture" if settings.capture_bucket else f"{settings.artifact_prefix}/capture"
        return f"s3://{bucket}/{prefix}"
    return (settings.root / "capture").as_uri()


def make_evaluation(settings: Settings, config: PipelineConfig, registry: MlflowRegistry, store: ArtifactStore,
                    progress: Callable[[str], None] | None = None) -> CandidateEvaluation:
    """How a retrain evaluates its candidate: loaded here, or, on aws where the candidate is a training job's
    artifact, served on a temporary endpoint."""
    from serving.evaluation import InProcessEvaluation, ServedEvaluation

    if not _aws(settings):
        return InProcessEvaluation(registry, config.evaluate)
    return ServedEvaluation(make_deployer(settings, config, capture=False, progress=progress), make_runtime(settings),
                            registry, store, model=config.model_name, template=config.data.template,
                            evaluate_config=config.evaluate, package_config=config.package, region=settings.region,
                            live_endpoint=config.release.endpoint_of(config.model_name))


# --- monitoring, notifications, the rollout's evidence -----------------------------------------------

def make_alarms(settings: Settings) -> Alarms:
    """Where alarms live: the workspace (evaluated here with CloudWatch's semantics) or CloudWatch."""
    if _aws(settings):
        import boto3

        from monitoring.cloudwatch import CloudWatchAlarms
        from monitoring.metrics import cloudwatch_client

        account = functools.cache(lambda: boto3.client("sts", region_name=settings.region)
                                  .get_caller_identity()["Account"])
        return CloudWatchAlarms(cloudwatch_client(settings.region), region=settings.region, account=account)
    from monitoring.alarms import AlarmStore
    from monitoring.metrics import SqliteMetricSink
    from monitoring.monitor import LocalAlarms

    return LocalAlarms(AlarmStore(settings.root / "alarms"), SqliteMetricSink(settings.root / "metrics.db"),
                       settings.root / "dashboards")


def notify_topic(settings: Settings) -> str:
    """The SNS topic of alarms' notify actions (aws); locally none: the run's notifier speaks for them."""
    return (settings.notify_topic_arn or "") if _aws(settings) else ""


def make_notifier(settings: Settings) -> Notifier:
    """SNS on the aws backend (`GENAIOPS_NOTIFY_TOPIC_ARN`, which the aws preflight requires); else the console and
    `<workspace>/notifications.jsonl`."""
    from pipelines.notify import LocalNotifier, SnsNotifier

    if _aws(settings) and settings.notify_topic_arn:
        import boto3

        return SnsNotifier(boto3.client("sns", region_name=settings.region), settings.notify_topic_arn)
    return LocalNotifier(settings.root / "notifications.jsonl")


def make_evidence(settings: Settings, store: ArtifactStore) -> EvidenceReader:
    """The rollout's evidence: capture at each endpoint's capture destination, and the per-request series locally or
    CloudWatch's metrics on aws."""
    from monitoring.metrics import SqliteMetricSink, cloudwatch_client
    from serving.endpoints import served
    from serving.evidence import CaptureLog, CloudWatchEvidence, WorkspaceEvidence

    sagemaker = make_sagemaker(settings)

    @functools.cache
    def capture(endpoint: str) -> ArtifactStore:
        return store_at(settings, served(sagemaker, endpoint, registered=False).capture or capture_uri(settings))

    log = CaptureLog(capture, store)
    if _aws(settings):
        return CloudWatchEvidence(log, cloudwatch_client(settings.region))
    return WorkspaceEvidence(log, SqliteMetricSink(settings.root / "metrics.db"))


def shares_host(settings: Settings) -> bool:
    """Whether every variant runs on this one machine (a shadow's latency is then not comparable)."""
    return _twin(settings) and not settings.sagemaker_endpoint_url


# --- registry, preflight, the twin ---------------------------------------------------------------------

def audit_spec(settings: Settings) -> dict[str, object]:
    """Where the approval server appends audit entries: on aws the approval stack's audit bucket (Object Lock,
    written by the server's role alone) when it is set, else the artifact store; locally the workspace's."""
    if _aws(settings):
        if settings.audit_bucket:
            return {"kind": "s3", "bucket": settings.audit_bucket, "prefix": "", "region": settings.region,
                    "kms_key_id": settings.kms_key_id}
        return {"kind": "s3", "bucket": settings.artifact_bucket, "prefix": settings.artifact_prefix,
                "region": settings.region, "kms_key_id": settings.kms_key_id}
    return {"kind": "local", "root": str(settings.root / "artifacts")}


def make_feedback(settings: Settings) -> FeedbackStore:
    """The feedback store as a flow reads it: the approval server writes it beside its audit log."""
    from steps.feedback import FeedbackStore

    audit = make_audit(settings)
    return FeedbackStore(audit.server or audit.store)


def make_answers(settings: Settings) -> Callable[[str, set[str]], dict[str, Answer]]:
    """(endpoint, inference ids) -> the answers its capture holds for them (the SageMaker API asked on first use)."""
    from serving.feedback import find_answers

    def answers(endpoint: str, inference_ids: set[str]) -> dict[str, Answer]:
        return find_answers(make_sagemaker(settings), lambda uri: store_at(settings, uri), endpoint, inference_ids)

    return answers


def make_corrections(settings: Settings) -> Callable[[str], list[Correction]]:
    """model -> the corrections people gave to its release endpoint's answers (none asked of SageMaker when the
    feedback store holds no correction)."""
    from serving.feedback import corrections

    def of(model: str) -> list[Correction]:
        return corrections(make_feedback(settings), make_answers(settings), model)

    return of


def make_audit(settings: Settings) -> AuditLog:
    """The audit log as a flow sees it: it appends its decisions to the artifact store and judges approvals by the
    approval server's entries alone (the audit bucket on aws, read-only to the flows)."""
    from model_registry.audit import AuditLog

    store = make_store(settings)
    if _aws(settings) and settings.audit_bucket:
        import boto3

        return AuditLog(store, server=S3Store(settings.audit_bucket, boto3.client("s3", region_name=settings.region)))
    return AuditLog(store)


def retrain_plan(settings: Settings, config: PipelineConfig) -> Any:
    """Preflight and plan of an aws retrain, with read calls only (any other call fails the plan); None on the
    local backend, which creates nothing on AWS and pays for nothing."""
    if not _aws(settings):
        return None
    from pipelines.plan import plan, preflight, refuse_writes

    boto = boto_session(settings)
    boto._session.register("before-call.*.*", refuse_writes)  # the botocore session behind it

    def hub_document() -> Any:
        from sagemaker.core.jumpstart import JumpStartConfig
        from sagemaker.core.jumpstart.document import get_hub_content_and_document

        js = config.finetune.jumpstart
        _, spec = get_hub_content_and_document(
            jumpstart_config=JumpStartConfig(model_id=js.model_id, model_version=js.model_version,
                                             accept_eula=js.accept_eula),
            sagemaker_session=sagemaker_session(settings, boto))
        return spec

    return plan(settings, config, preflight(settings, config, boto, hub_document))


def serve_twin(settings: Settings, *, port: int, ready: Callable[[str], None]) -> int:
    """`genaiops sagemaker-api`: the workspace's twin in the foreground until SIGTERM or Ctrl-C."""
    if _aws(settings):
        raise BackendError("the local SageMaker control plane is the local backend's; on aws, SageMaker answers")
    from local_aws.server import serve

    return serve(settings.root, port=port, region=settings.region, ready=ready)


def stop_twin(settings: Settings) -> list[str]:
    """Stop the workspace's twin and every endpoint process it started; what was stopped."""
    from local_aws.server import stop

    return stop(settings.root)
