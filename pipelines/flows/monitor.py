"""The `monitor` flow: new capture of an endpoint → drift and quality metrics → its alarms → actions; the same
calls on both backends.

The endpoint is what SageMaker's API says (`DescribeEndpoint`: its variants, the primary one, the registered
version each serves from its model's tags, where it captures); capture is read from that destination past a cursor
kept in the artifact store; metrics go to the metric sink; the endpoint's alarms are synced through the one alarm
port and its dashboard refreshed. Where the alarms are evaluated here (the local backend), the actions of an alarm
that went into ALARM run once per transition: `notify` through the run's notifier; `retrain` and `rollback` file a
request (create-only, under `requests/<kind>/` in the artifact store), emit a Prefect event
(`genaiops.alarm.retrain`, `genaiops.alarm.rollback`) and start the model's `retrain` or `rollout` deployment
(`genaiops serve`) with the alarm as its trigger. On AWS CloudWatch evaluates them: notify is the alarm's SNS
action, and EventBridge rules start those deployments.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from contracts import tags as T
from contracts.names import BASELINE
from monitoring.alarms import AlarmAction
from monitoring.drift import CaptureCursor, Captured, read_capture
from monitoring.monitor import AlarmSync, Reference, Transition, drift_metrics, endpoint_alarms, run_actions
from pipelines.backends import (
    make_alarms,
    make_metrics,
    make_notifier,
    make_registry,
    make_sagemaker,
    make_store,
    notify_topic,
    store_at,
)
from pipelines.deployments import start
from pipelines.flows.hooks import failed_run_hook
from pipelines.offline import go_offline
from pipelines.reliability import expected, quiet_expected_failures
from pipelines.settings import PipelineConfig, Settings, load_settings, resolve_config
from pipelines.trigger import Trigger
from serving.endpoints import EndpointNotFoundError, Served, served
from steps.artifacts import ArtifactNotFoundError, ArtifactStore
from steps.prompts import raw_input
from steps.scoring import minilm_encoder


class MonitorResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    endpoint: str
    new_records: int
    metrics: dict[str, float]
    transitions: list[Transition]
    actions_run: int
    alarms: AlarmSync = AlarmSync()
    dashboard: str = ""
    unreadable: int = 0  # captured records that could not be read, skipped (since the cursor began)


class MonitorError(RuntimeError):
    """The endpoint cannot be monitored as configured (no such endpoint, no capture, no reference data)."""


class NoEndpointError(MonitorError):
    """There is no such endpoint (yet)."""


expected(MonitorError)
quiet_expected_failures()


def watched(settings: Settings, endpoint: str) -> Served:
    """The endpoint as SageMaker's API shows it (the local control plane answers the same)."""
    try:
        found = served(make_sagemaker(settings), endpoint)
    except EndpointNotFoundError as exc:
        raise NoEndpointError(f"{exc}; `genaiops endpoints list` shows the endpoints") from None
    if not found.capture:
        raise MonitorError(f"endpoint {endpoint} captures no data (its config has no DataCaptureConfig)")
    return found


def reference_of(settings: Settings, config: PipelineConfig, store: ArtifactStore, tags: dict[str, str]) -> Reference:
    """The training split the served model learnt from: the dataset its version's lineage names (the challenger's
    when the base model serves: its traffic is the task's), or the one the config names; raw inputs recovered from
    the templated prompts."""
    from steps.data import load_prepared

    dataset_hash, template = config.monitoring.drift.reference_dataset, config.data.template
    if dataset_hash is None:
        version = tags.get(T.VERSION, "")
        if not (version.isdigit() or version == BASELINE) or tags.get(T.MODEL) != config.model_name:
            raise MonitorError(f"the primary variant serves no registered version of {config.model_name}, so its "
                               "training data is unknown: set monitoring.drift.reference_dataset to a prepared "
                               "dataset's hash")
        registry = make_registry(settings, config, config.approval.release_account)
        found = registry.get_version(version) if version.isdigit() else registry.alias_version(T.CHALLENGER)
        dataset_hash = found.tags.get(T.DATASET_HASH) if found is not None else None
        if not dataset_hash:
            raise MonitorError(f"{config.model_name} v{version}: no {T.DATASET_HASH} to compare live traffic with")
        template = str(registry.logged_config(f"models:/{config.model_name}/{found.version}")  # type: ignore[union-attr]
                       .get("template", template))
    train = load_prepared(store, dataset_hash).splits["train"][: config.monitoring.drift.reference_size]
    return Reference(inputs=[raw_input(template, e.prompt) for e in train], outputs=[e.target for e in train])


def _token_counter(settings: Settings, config: PipelineConfig) -> Any:
    from steps.base_model import resolve_base_model, token_counter

    return token_counter(resolve_base_model(config.finetune.base_model, settings.root / "models"))


def _runners(settings: Settings, config: PipelineConfig, store: ArtifactStore) -> dict[str, Any]:
    logger = get_run_logger()
    notifier = make_notifier(settings)

    def notify(action: AlarmAction, alarm: str, reason: str) -> None:
        notifier.send(f"genaiops: ALARM {alarm}", reason, {})

    def request(kind: str, deployment: str) -> Any:
        def file(action: AlarmAction, alarm: str, reason: str) -> None:
            from prefect.events import emit_event

            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            key = f"requests/{kind}/{action.target}/{alarm}-{stamp}.json"
            body = {"kind": kind, "target": action.target, "alarm": alarm, "reason": reason, "at": stamp}
            store.put_new(key, json.dumps(body, indent=2).encode())
            emit_event(event=f"genaiops.alarm.{kind}", resource={"prefect.resource.id": f"genaiops.{kind}.{action.target}"},
                       payload=body)
            logger.warning("ALARM %s: %s requested for %s (%s)", alarm, kind, action.target, store.uri(key))
            # the model's deployment, when a Prefect server serves it (as EventBridge rules start it on AWS)
            start(deployment, config.model_name, Trigger(kind="alarm", name=alarm, detail=reason),
                  idempotency_key=f"alarm:{alarm}:{stamp}")
        return file

    return {"notify": notify, "retrain": request("retrain", "retrain"), "rollback": request("rollback", "rollout")}


@task(name="read-capture", cache_policy=NO_CACHE)
def new_capture(capture: ArtifactStore, endpoint: str, store: ArtifactStore) -> tuple[list[Captured], CaptureCursor, str]:
    """Capture not read yet, per the endpoint's cursor (kept in the artifact store, so any runner continues it)."""
    key = f"monitor/cursors/{endpoint}.json"
    try:
        cursor: CaptureCursor | None = CaptureCursor.model_validate_json(store.get(key))
    except ArtifactNotFoundError:
        cursor = None
    records, after = read_capture(capture, endpoint, cursor)
    return records, after, key


@flow(name="monitor", on_failure=[failed_run_hook])
def monitor(endpoint: str | None = None, config: PipelineConfig | str | None = None,
            now: datetime | None = None) -> MonitorResult:
    """Publish the drift and quality metrics of the endpoint's new capture; sync its alarms and dashboard; run the
    actions of those that went into ALARM where they are evaluated here. The endpoint defaults to the one the model
    is released to."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    released = endpoint is None  # the scheduled deployment watches the model's release endpoint
    endpoint = endpoint or config.release.endpoint_of(config.model_name)
    logger = get_run_logger()
    now = now or datetime.now(UTC)
    try:
        found = watched(settings, endpoint)
    except NoEndpointError:
        if not released:
            raise
        logger.info("%s: no endpoint %s yet (nothing released): nothing to monitor", config.model_name, endpoint)
        return MonitorResult(endpoint=endpoint, new_records=0, metrics={}, transitions=[], actions_run=0)
    store = make_store(settings)
    sink, _ = make_metrics(settings)
    variants = [v.name for v in found.variants]
    specs = endpoint_alarms(endpoint, variants, config.model_name, config.monitoring, notify_topic=notify_topic(settings))

    records, after, cursor = new_capture(store_at(settings, found.capture), endpoint, store)
    datums = []
    primary = found.primary
    requests = sum(len(r.inputs) for r in records if r.variant == primary.name)
    if requests >= config.monitoring.drift.min_requests:
        reference = reference_of(settings, config, store, primary.tags)
        encode = minilm_encoder() if config.monitoring.drift.embedding else None
        datums = drift_metrics(endpoint, records, reference, primary.name,
                               count_tokens=_token_counter(settings, config), encode=encode,
                               config=config.monitoring.drift, when=now)
        sink.put(datums)
        store.put(cursor, after.model_dump_json().encode())  # only capture that went into statistics is done
    elif records:
        logger.info("%s: %d new requests to the primary variant; the monitors wait for %d", endpoint, requests,
                    config.monitoring.drift.min_requests)
    if after.skipped:
        logger.warning("%s: %d captured records could not be read and were skipped", endpoint, after.skipped)
    logger.info("%s: %d new captured invocations, %d metrics published", endpoint, len(records), len(datums))
    metrics = {f"{d.name}{'/' + d.dimensions['VariantName'] if 'VariantName' in d.dimensions else ''}": d.value
               for d in datums}
    alarms = make_alarms(settings)
    synced = alarms.sync(endpoint, specs)  # re-running keeps one alarm per name, with its state and history
    transitions = alarms.evaluate(specs, now)
    ran = run_actions(transitions, _runners(settings, config, store))
    page = alarms.dashboard(endpoint, variants, period=config.monitoring.period, hours=3)
    return MonitorResult(endpoint=endpoint, new_records=len(records), transitions=transitions, actions_run=ran,
                         metrics=metrics, alarms=synced, dashboard=page, unreadable=after.skipped)


def dashboard(settings: Settings, config: PipelineConfig, endpoint: str, *, hours: float = 3.0,
              period: int | None = None) -> str:
    """Refresh the endpoint's dashboard (charts per variant, drift, quality, alarms); where to look at it."""
    try:
        found = served(make_sagemaker(settings), endpoint, registered=False)
    except EndpointNotFoundError as exc:
        raise NoEndpointError(f"{exc}; `genaiops endpoints list` shows the endpoints") from None
    return make_alarms(settings).dashboard(endpoint, [v.name for v in found.variants],
                                           period=period or config.monitoring.period, hours=hours)
