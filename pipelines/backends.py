"""Factories that pick each port's implementation from Settings, once, in the flow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from steps.artifacts import ArtifactStore, LocalStore, S3Store
from steps.finetune import LocalLoraTrainer, Trainer

if TYPE_CHECKING:
    from model_registry.mlflow_registry import MlflowRegistry
    from model_registry.sagemaker_mirror import ModelPackageMirror
    from monitoring.alarms import AlarmSpec
    from monitoring.metrics import MetricSink, MetricSource
    from pipelines.settings import PipelineConfig, Settings


def make_store(settings: Settings) -> ArtifactStore:
    if settings.backend == "aws":
        import boto3

        assert settings.artifact_bucket is not None  # Settings validates this for the aws backend
        return S3Store(settings.artifact_bucket, boto3.client("s3", region_name=settings.region),
                       prefix=settings.artifact_prefix, kms_key_id=settings.kms_key_id)
    return LocalStore(settings.root / "artifacts")


def make_registry(settings: Settings, config: PipelineConfig) -> MlflowRegistry:
    from model_registry.mlflow_registry import MlflowRegistry

    return MlflowRegistry(settings.tracking_uri, experiment=config.experiment, model_name=config.model_name,
                          artifact_root=settings.mlflow_artifact_root)


def make_mirror(settings: Settings, config: PipelineConfig) -> ModelPackageMirror | None:
    """The SageMaker Model Registry mirror on the aws backend (None locally, or when turned off)."""
    if settings.backend != "aws" or not config.model_packages.enabled:
        return None
    import boto3

    from model_registry.sagemaker_mirror import ModelPackageMirror

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
    if settings.backend == "aws":
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

    if settings.backend == "aws":
        client = cloudwatch_client(settings.region)
        return CloudWatchSink(client), CloudWatchSource(client)
    sqlite = SqliteMetricSink(settings.root / "metrics.db")
    return sqlite, sqlite


def make_sagemaker(settings: Settings) -> object:
    """The boto3 `sagemaker` client of the deployer: SageMaker's, or the workspace's local control plane
    (`GENAIOPS_SAGEMAKER_ENDPOINT_URL` points either at another one)."""
    if settings.backend == "aws":
        import boto3

        return boto3.client("sagemaker", region_name=settings.region, endpoint_url=settings.sagemaker_endpoint_url)
    from serving.control_plane import local_client

    return local_client(settings.root, region=settings.region, endpoint_url=settings.sagemaker_endpoint_url)


def make_alarm_sync(settings: Settings) -> Callable[[str, Sequence[AlarmSpec]], object]:
    """Keeps an endpoint's alarms equal to its specs: the local alarm store, or CloudWatch."""
    if settings.backend == "aws":
        from monitoring.cloudwatch import sync_alarms
        from monitoring.metrics import cloudwatch_client

        client = cloudwatch_client(settings.region)
        return lambda endpoint, specs: sync_alarms(client, endpoint, specs)
    from monitoring.alarms import AlarmStore

    store = AlarmStore(settings.root / "alarms")
    return store.sync


def capture_uri(settings: Settings, store: ArtifactStore) -> str:
    """Where endpoints capture requests: the workspace's capture folder; on aws the capture bucket, else the artifact
    bucket's capture prefix."""
    if settings.backend == "aws":
        return f"s3://{settings.capture_bucket}/capture" if settings.capture_bucket else store.uri("capture")
    return (settings.root / "capture").as_uri()


def audit_spec(settings: Settings) -> dict[str, object]:
    """Where the approval server appends audit entries: the same artifact store the pipeline uses."""
    if settings.backend == "aws":
        return {"kind": "s3", "bucket": settings.artifact_bucket, "prefix": settings.artifact_prefix,
                "region": settings.region, "kms_key_id": settings.kms_key_id}
    return {"kind": "local", "root": str(settings.root / "artifacts")}


def retrain_plan(settings: Settings, config: PipelineConfig) -> Any:
    """Preflight and plan of an aws retrain, with read calls only (any other call fails the plan)."""
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


def make_notifier(settings: Settings, config: PipelineConfig) -> Any:
    """SNS on the aws backend when a topic is configured; else the console and `<workspace>/notifications.jsonl`."""
    from pipelines.notify import LocalNotifier, SnsNotifier

    if settings.backend == "aws" and config.monitoring.notify_topic_arn:
        import boto3

        return SnsNotifier(boto3.client("sns", region_name=settings.region), config.monitoring.notify_topic_arn)
    return LocalNotifier(settings.root / "notifications.jsonl")
