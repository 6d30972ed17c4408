"""The release and rollout flows: approved versions go out exactly once (`serving.release`), and a shadow or
A/B test ends in a promotion or a rollback on live evidence (`serving.promotion`), the same on both backends."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from prefect import flow, get_run_logger

from contracts import tags as T
from contracts.names import BASELINE
from model_registry.mlflow_registry import RegisteredVersion
from pipelines.backends import (
    make_alarms,
    make_audit,
    make_deployer,
    make_evidence,
    make_feedback,
    make_notifier,
    make_registry,
    make_store,
    notify_topic,
    shares_host,
)
from pipelines.flows.hooks import failed_run_hook
from pipelines.offline import go_offline
from pipelines.settings import PipelineConfig, Settings, load_settings, resolve_config
from pipelines.trigger import Trigger, current_trigger
from serving import package
from serving.deployer import Version
from serving.promotion import Rollout, RolloutStatus
from serving.release import ReleaseOutcome, Releaser
from steps.artifacts import ArtifactNotFoundError
from steps.base_model import resolve_base_model
from steps.data import load_prepared
from steps.evaluate import rouge_l
from steps.scoring import quality_flags


def make_releaser(settings: Settings, config: PipelineConfig, progress: Callable[[str], None] | None = None) -> Releaser:
    store, registry = make_store(settings), make_registry(settings, config, config.approval.release_account)

    @functools.cache
    def packaged_base(base_uri: str, image: str) -> Version:
        """The base model as its container serves it where the candidate was fine-tuned from a hosted model
        (JumpStart's artifact and image); else its package, built here."""
        if base_uri:
            digest = hashlib.sha256(f"{base_uri}|{image}".encode()).hexdigest()
            return Version(model=config.model_name, version=BASELINE, package_uri=base_uri, digest=digest, image=image)
        base_path = resolve_base_model(config.finetune.base_model, settings.root / "models")
        built = package.of_base(config.finetune.base_model, str(base_path), template=config.data.template,
                                generation=config.evaluate.generation.model_dump(), store=store,
                                region=settings.region, config=config.package)
        return Version(model=config.model_name, version=BASELINE, package_uri=built.uri, digest=built.digest,
                       image=built.image)

    def baseline(candidate: RegisteredVersion) -> Version:
        """What the endpoint serves before any version is champion: the base model `candidate` was fine-tuned from."""
        params = registry.runs.run_params(candidate.run_id) if candidate.run_id else {}
        return packaged_base(params.get("package.base_uri", ""), candidate.tags.get(T.PACKAGE_IMAGE, ""))

    return Releaser(registry, store, make_deployer(settings, config, progress=progress), config=config.release,
                    monitoring=config.monitoring, approval=config.approval, alarms=make_alarms(settings),
                    notify_topic=notify_topic(settings), baseline=baseline, audit=make_audit(settings))


def make_rollout(settings: Settings, config: PipelineConfig, progress: Callable[[str], None] | None = None) -> Rollout:
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

    notifier = make_notifier(settings)
    price = config.deployment.hourly_price

    def count_tokens(texts: Sequence[str]) -> list[int]:
        return _counter(str(config.finetune.base_model), str(settings.root / "models"))(texts)

    return Rollout(make_releaser(settings, config, progress), config.rollout, make_evidence(settings, store),
                   rouge=rouge_l, references=references, shared_host=shares_host(settings),
                   notify=lambda subject, message: notifier.send(subject, message, {}), quality=quality_flags,
                   feedback=make_feedback(settings).entries, cost=(count_tokens, price) if price else None)


@functools.cache
def _counter(base_model: str, models: str) -> Callable[[Sequence[str]], list[int]]:
    """The base model's tokenizer (loaded once per process), for the cost per output token."""
    from steps.base_model import resolve_base_model, token_counter

    return token_counter(resolve_base_model(base_model, Path(models)))


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
def rollout(config: PipelineConfig | str | None = None, trigger: Trigger | None = None) -> RolloutStatus:
    """Decide a running shadow or A/B test on its evidence: promote, roll back, or wait. Started by a rollback alarm
    of the candidate's variant (`trigger` of kind alarm: the EventBridge rule on AWS, the monitor flow locally), it
    rolls the candidate back while that alarm is in ALARM."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    logger = get_run_logger()
    trigger = current_trigger(trigger, settings.triggered_by)
    logger.info("%s: rollout, triggered by %s", config.model_name, trigger.describe())
    status = make_rollout(settings, config, logger.info).act(alarm=trigger.name if trigger.kind == "alarm" else None)
    if status.decision is not None:
        logger.info("%s: %s: %s", status.endpoint, status.decision.action, status.decision.reason)
    return status
