"""The release flow: approved versions' release requests become deployments, exactly once (`serving.release`)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from pipelines.backends import capture_uri, make_alarm_sync, make_registry, make_sagemaker, make_store
from pipelines.offline import go_offline
from pipelines.settings import PipelineConfig, load_settings
from serving.deployer import SageMakerDeployer
from serving.release import ReleaseOutcome, Releaser


@flow(name="release")
def release(config: PipelineConfig | None = None) -> list[ReleaseOutcome]:
    """Deploy every approved version whose release request is not finished; resume one that stopped half-way."""
    go_offline()
    config = config or PipelineConfig()
    settings = load_settings()
    logger = get_run_logger()
    store, registry = make_store(settings), make_registry(settings, config)
    deployment = config.deployment
    if deployment.poll_seconds is None and settings.backend == "local":  # the local control plane answers at once
        deployment = deployment.model_copy(update={"poll_seconds": 1.0})
    deployer = SageMakerDeployer(make_sagemaker(settings), deployment, role_arn=settings.sagemaker_role_arn,
                                 capture_uri=capture_uri(settings, store), progress=logger.info)
    releaser = Releaser(registry, store, deployer, config=config.release, monitoring=config.monitoring,
                        approval=config.approval, sync_alarms=make_alarm_sync(settings))
    outcomes = releaser.run()
    if not outcomes:
        logger.info("%s: no release request waiting", config.model_name)
    return outcomes
