"""The release and rollout flows: approved versions go out exactly once (`serving.release`), and a shadow or
A/B test ends in a promotion or a rollback on live evidence (`serving.rollout`)."""

from __future__ import annotations

import functools

from prefect import flow, get_run_logger

from contracts import tags as T
from contracts.names import BASELINE
from model_registry.mlflow_registry import RegisteredVersion
from pipelines.backends import capture_uri, make_alarm_sync, make_registry, make_sagemaker, make_store
from pipelines.notify import failed_run_hook
from pipelines.offline import go_offline
from pipelines.orchestration import Trigger, current_trigger
from pipelines.settings import PipelineConfig, Settings, load_settings, resolve_config
from serving import package
from serving.deployer import SageMakerDeployer, Version
from serving.release import ReleaseOutcome, Releaser, Rollout, RolloutStatus
from steps.artifacts import ArtifactNotFoundError
from steps.base_model import resolve_base_model
from steps.data import load_prepared
from steps.evaluate import rouge_l


def make_releaser(settings: Settings, config: PipelineConfig, progress: object = None) -> Releaser:
    store, registry = make_store(settings), make_registry(settings, config)

    @functools.cache
    def baseline() -> Version:
        """The base model's package: what the endpoint serves before any version is champion."""
        base_path = resolve_base_model(config.finetune.base_model, settings.root / "models")
        built = package.of_base(config.finetune.base_model, str(base_path), template=config.data.template,
                                generation=config.evaluate.generation.model_dump(), store=store,
                                region=settings.region, config=config.package)
        return Version(model=config.model_name, version=BASELINE, package_uri=built.uri, digest=built.digest,
                       image=built.image)

    deployment = config.deployment
    if deployment.poll_seconds is None and settings.backend == "local":  # the local control plane answers at once
        deployment = deployment.model_copy(update={"poll_seconds": 1.0})
    deployer = SageMakerDeployer(make_sagemaker(settings), deployment, role_arn=settings.sagemaker_role_arn,
                                 capture_uri=capture_uri(settings, store), progress=progress)  # type: ignore[arg-type]
    return Releaser(registry, store, deployer, config=config.release, monitoring=config.monitoring,
                    approval=config.approval, sync_alarms=make_alarm_sync(settings), baseline=baseline)


def make_rollout(settings: Settings, config: PipelineConfig, progress: object = None) -> Rollout:
    if settings.backend != "local":
        raise NotImplementedError("the rollout decision reads the local endpoint's capture and metrics; on aws it "
                                  "needs the S3 capture and CloudWatch readers")
    from monitoring.metrics import SqliteMetricSink
    from serving.rollout import local_evidence
    from steps.artifacts import LocalStore

    capture, metrics = LocalStore(settings.root / "capture"), SqliteMetricSink(settings.root / "metrics.db")
    store = make_store(settings)

    @functools.cache
    def held_out(dataset_hash: str) -> dict[str, str]:
        try:
            dataset = load_prepared(store, dataset_hash)
        except ArtifactNotFoundError:
            return {}
        return {example.id: example.target for example in dataset.splits.get("test", [])}

    def references(challenger: RegisteredVersion) -> dict[str, str]:
        """The challenger's held-out split by record id: requests that name a record (their inference id) are
        scored against its reference."""
        return held_out(challenger.tags[T.DATASET_HASH]) if T.DATASET_HASH in challenger.tags else {}

    return Rollout(make_releaser(settings, config, progress), config.rollout,
                   lambda endpoint, variant, since: local_evidence(capture, metrics, endpoint, variant, since),
                   rouge=rouge_l, references=references, shared_host=True)


@flow(name="release", on_failure=[failed_run_hook])
def release(config: PipelineConfig | str | None = None, trigger: Trigger | None = None) -> list[ReleaseOutcome]:
    """Deploy every approved version whose release request is not finished; resume one that stopped half-way."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    logger = get_run_logger()
    logger.info("%s: release, triggered by %s", config.model_name,
                current_trigger(trigger, settings.triggered_by).describe())
    outcomes = make_releaser(settings, config, logger.info).run()
    if not outcomes:
        logger.info("%s: no release request waiting", config.model_name)
    return outcomes


@flow(name="rollout", on_failure=[failed_run_hook])
def rollout(config: PipelineConfig | str | None = None) -> RolloutStatus:
    """Decide a running shadow or A/B test on its evidence: promote, roll back, or wait."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    logger = get_run_logger()
    status = make_rollout(settings, config, logger.info).act()
    if status.decision is not None:
        logger.info("%s: %s: %s", status.endpoint, status.decision.action, status.decision.reason)
    return status
