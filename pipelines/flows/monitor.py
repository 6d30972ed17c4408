"""The `monitor` flow: new capture of an endpoint → drift and quality metrics → every alarm evaluated → actions.

Runs on the local backend over a local endpoint (`genaiops monitor run ENDPOINT`); the orchestration
schedules it. Actions of an alarm that went into ALARM run once per transition: `notify` logs and
appends to `<workspace>/alarms/notifications.jsonl`; `retrain` and `rollback` file a request
(create-only, under `requests/<kind>/` in the artifact store) and emit a Prefect event
(`genaiops.alarm.retrain`, `genaiops.alarm.rollback`) that deployments trigger on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from monitoring.alarms import AlarmAction, AlarmStore
from monitoring.drift import Captured, minilm_encoder, raw_input, read_capture
from monitoring.metrics import SqliteMetricSink
from monitoring.monitor import Reference, Transition, drift_metrics, endpoint_alarms, evaluate_alarms, run_actions
from pipelines.backends import make_registry, make_store
from pipelines.offline import go_offline
from pipelines.settings import PipelineConfig, Settings, load_settings
from steps.artifacts import ArtifactStore, LocalStore


class MonitorResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    endpoint: str
    new_records: int
    metrics: dict[str, float]
    transitions: list[Transition]
    actions_run: int


class MonitorError(RuntimeError):
    """The endpoint cannot be monitored as configured (no such endpoint, no reference data)."""


def primary_variant(state: Any) -> Any:
    production = [v for v in state.variants if not v.shadow]
    return max(production, key=lambda v: v.weight)


def reference_of(settings: Settings, config: PipelineConfig, store: ArtifactStore, model: str) -> Reference:
    """The training split the served model learnt from: the dataset its version's lineage names (or the one the
    config names), raw inputs recovered from the templated prompts."""
    from model_registry import tags as T
    from steps.data import load_prepared

    dataset_hash, template = config.monitoring.drift.reference_dataset, config.data.template
    if dataset_hash is None:
        if not model.startswith("models:/"):
            raise MonitorError(f"{model} is not a registered version, so its training data is unknown: set "
                               "monitoring.drift.reference_dataset to a prepared dataset's hash")
        registry = make_registry(settings, config)
        name, _, selector = model.removeprefix("models:/").partition("/")
        name, _, alias = name.partition("@")
        version = registry.client.get_model_version_by_alias(name, alias) if alias else \
            registry.client.get_model_version(name, selector)
        dataset_hash = dict(version.tags or {}).get(T.DATASET_HASH)
        if not dataset_hash:
            raise MonitorError(f"{model} has no {T.DATASET_HASH} tag")
        template = str(registry.logged_config(model).get("template", template))
    train = load_prepared(store, dataset_hash).splits["train"][: config.monitoring.drift.reference_size]
    return Reference(inputs=[raw_input(template, e.prompt) for e in train], outputs=[e.target for e in train])


def _token_counter(settings: Settings, config: PipelineConfig) -> Any:
    from steps.base_model import resolve_base_model, token_counter

    return token_counter(resolve_base_model(config.finetune.base_model, settings.root / "models"))


def _runners(settings: Settings, store: ArtifactStore) -> dict[str, Any]:
    logger = get_run_logger()

    def notify(action: AlarmAction, alarm: str, reason: str) -> None:
        logger.warning("ALARM %s: %s", alarm, reason)
        with (settings.root / "alarms" / "notifications.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps({"at": datetime.now(UTC).isoformat(), "alarm": alarm, "reason": reason,
                                  "topic": action.target}) + "\n")

    def request(kind: str) -> Any:
        def file(action: AlarmAction, alarm: str, reason: str) -> None:
            from prefect.events import emit_event

            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            key = f"requests/{kind}/{action.target}/{alarm}-{stamp}.json"
            body = {"kind": kind, "target": action.target, "alarm": alarm, "reason": reason, "at": stamp}
            store.put_new(key, json.dumps(body, indent=2).encode())
            emit_event(event=f"genaiops.alarm.{kind}", resource={"prefect.resource.id": f"genaiops.{kind}.{action.target}"},
                       payload=body)
            logger.warning("ALARM %s: %s requested for %s (%s)", alarm, kind, action.target, store.uri(key))
        return file

    return {"notify": notify, "retrain": request("retrain"), "rollback": request("rollback")}


@task(name="read-capture", cache_policy=NO_CACHE)
def new_capture(capture_root: Path, endpoint: str, cursor: Path) -> list[Captured]:
    since = datetime.fromisoformat(json.loads(cursor.read_text())["until"]) if cursor.exists() else None
    return read_capture(LocalStore(capture_root), endpoint, since)


@flow(name="monitor")
def monitor(endpoint: str, config: PipelineConfig | None = None, now: datetime | None = None) -> MonitorResult:
    """Publish the drift and quality metrics of the endpoint's new capture, evaluate its alarms, run their actions."""
    from serving.local import EndpointError, LocalEndpoints

    go_offline()
    config = config or PipelineConfig()
    settings = load_settings()
    logger = get_run_logger()
    now = now or datetime.now(UTC)
    if settings.backend == "aws":  # there CloudWatch evaluates the alarms that the release puts (monitoring.cloudwatch)
        raise MonitorError("the monitor flow watches local endpoints; on the aws backend CloudWatch evaluates the "
                           "endpoint's alarms, put with the release")
    try:
        state = LocalEndpoints(settings.root).describe(endpoint)
    except EndpointError as exc:
        raise MonitorError(str(exc)) from exc
    store, sink, alarms = make_store(settings), SqliteMetricSink(settings.root / "metrics.db"), \
        AlarmStore(settings.root / "alarms")
    specs = endpoint_alarms(endpoint, [v.name for v in state.variants], config.model_name, config.monitoring)
    for spec in specs:  # create or update: re-running keeps one alarm per name, with its state and history
        alarms.put(spec)
    for stale in alarms.list():
        if stale.spec.name.startswith(f"{endpoint}/") and stale.spec.name not in {s.name for s in specs}:
            alarms.delete(stale.spec.name)

    cursor = settings.root / "monitor" / f"{endpoint}.json"
    cursor.parent.mkdir(parents=True, exist_ok=True)
    records = new_capture(Path(state.capture).parent if state.capture else settings.root / "capture", endpoint, cursor)
    primary = primary_variant(state)
    datums = []
    if records:
        reference = reference_of(settings, config, store, primary.model)
        encode = minilm_encoder() if config.monitoring.drift.embedding else None
        datums = drift_metrics(endpoint, records, reference, primary.name, count_tokens=_token_counter(settings, config),
                               encode=encode, config=config.monitoring.drift, when=now)
        sink.put(datums)
        cursor.write_text(json.dumps({"until": max(r.at for r in records).isoformat()}))
    logger.info("%s: %d new captured invocations, %d metrics published", endpoint, len(records), len(datums))
    transitions = evaluate_alarms(alarms, sink, [s.name for s in specs], now)
    ran = run_actions(transitions, _runners(settings, store))
    return MonitorResult(endpoint=endpoint, new_records=len(records), transitions=transitions, actions_run=ran,
                         metrics={f"{d.name}{'/' + d.dimensions['VariantName'] if 'VariantName' in d.dimensions else ''}":
                                  d.value for d in datums})
