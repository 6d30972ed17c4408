"""The `data-watch` flow: new data under the configured source (a new object or a changed content hash) starts a
`retrain` run through its deployment, carrying the source and its hash as the trigger."""

from __future__ import annotations

from collections.abc import Callable

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from pipelines.backends import make_corrections, make_store
from pipelines.deployments import start
from pipelines.flows.hooks import failed_run_hook
from pipelines.offline import go_offline
from pipelines.reliability import reliable
from pipelines.settings import PipelineConfig, load_settings, resolve_config
from pipelines.trigger import SourceSeen, Trigger, source_seen
from steps.feedback import Correction


class DataWatch(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: str
    content_hash: str
    changed: bool
    retrain_run: str | None = None


look = task(name="data-hash", cache_policy=NO_CACHE)(source_seen)
start_run = task(name="start-deployment", cache_policy=NO_CACHE)(start)


@task(name="corrections", cache_policy=NO_CACHE)
def gather(of: Callable[[str], list[Correction]], model: str) -> list[Correction]:
    """The corrections people gave to the model's answers: part of the data the hash covers."""
    return of(model)


@flow(name="data-watch", on_failure=[failed_run_hook])
def data_watch(config: PipelineConfig | str | None = None, trigger: Trigger | None = None) -> DataWatch:
    """Hash the configured data source; if it differs from what the last started retrain saw, start one."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    logger = get_run_logger()
    store = make_store(settings)
    corrections = reliable(gather, config.orchestration)(make_corrections(settings), config.model_name) \
        if config.data.feedback else []
    seen: SourceSeen = reliable(look, config.orchestration)(store, config.model_name, config.data.source, corrections)
    if not seen.changed:
        logger.info("%s: unchanged (sha256 %s)", seen.source, seen.content_hash[:12])
        return DataWatch(source=seen.source, content_hash=seen.content_hash, changed=False)
    logger.info("%s%s: new data (sha256 %s, before: %s)", seen.source,
                f" with {len(corrections)} correction(s) from feedback" if corrections else "", seen.content_hash[:12],
                seen.previous[:12] if seen.previous else "never seen")
    run = reliable(start_run, config.orchestration)(
        "retrain", config.model_name, Trigger(kind="new-data", name=seen.source, detail=seen.content_hash),
        idempotency_key=f"new-data:{config.model_name}:{seen.content_hash}")
    if run is not None:  # remembered only once a retrain is on its way; else the next look tries again
        seen.record(store)
    return DataWatch(source=seen.source, content_hash=seen.content_hash, changed=True, retrain_run=run)
