"""The `monitor` flow: new capture of an endpoint → drift and quality metrics → its alarms → actions.

Locally it watches a local endpoint: metrics go to the workspace's SQLite series, every alarm is
evaluated with CloudWatch's semantics, and the actions of an alarm that went into ALARM run once per
transition: `notify` logs and appends to `<workspace>/alarms/notifications.jsonl`; `retrain` and
`rollback` file a request (create-only, under `requests/<kind>/` in the artifact store) and emit a
Prefect event (`genaiops.alarm.retrain`, `genaiops.alarm.rollback`); `retrain` also starts a run of the model's
`retrain` deployment (`genaiops serve`) carrying the alarm as its trigger.

On the aws backend it watches a SageMaker endpoint: capture is read from the S3 destination of the
endpoint's data capture, metrics go out with `PutMetricData`, and the endpoint's alarms and dashboard
are put to CloudWatch, which evaluates them and runs their actions (SNS topics).
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
from monitoring.drift import CaptureCursor, Captured, minilm_encoder, read_capture
from monitoring.monitor import Reference, Transition, drift_metrics, endpoint_alarms, evaluate_alarms, run_actions
from pipelines.backends import make_metrics, make_registry, make_store
from pipelines.deployments import start
from pipelines.notify import failed_run_hook
from pipelines.offline import go_offline
from pipelines.orchestration import Trigger, expected, quiet_expected_failures
from pipelines.settings import PipelineConfig, Settings, load_settings, resolve_config
from steps.artifacts import ArtifactNotFoundError, ArtifactStore, LocalStore, S3Store
from steps.prompts import raw_input

VERSION_TAG = "genaiops:model-version"  # on a SageMaker model: the registered version it serves (models:/name/N)


class MonitorResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    endpoint: str
    new_records: int
    metrics: dict[str, float]
    transitions: list[Transition]
    actions_run: int
    cloudwatch: dict[str, Any] = {}


class MonitorError(RuntimeError):
    """The endpoint cannot be monitored as configured (no such endpoint, no capture, no reference data)."""


class NoEndpointError(MonitorError):
    """There is no such endpoint (yet)."""


expected(MonitorError)
quiet_expected_failures()


class Watched(BaseModel):
    """What the flow needs of an endpoint: its variants, the primary one and the model it serves, its capture."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    variants: list[str]
    primary: str
    model: str  # models:/NAME/VERSION when known, else a folder
    capture: Any  # an ArtifactStore over `<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl`


def local_endpoint(settings: Settings, endpoint: str) -> Watched:
    from serving.local import EndpointError, LocalEndpoints

    try:
        state = LocalEndpoints(settings.root).describe(endpoint)
    except EndpointError as exc:
        raise NoEndpointError(f"{exc}; `genaiops endpoints list` shows the endpoints") from exc
    primary = max((v for v in state.variants if not v.shadow), key=lambda v: v.weight)
    root = Path(state.capture).parent if state.capture else settings.root / "capture"
    return Watched(variants=[v.name for v in state.variants], primary=primary.name, model=primary.model,
                   capture=LocalStore(root))


def sagemaker_endpoint(settings: Settings, endpoint: str, client: Any = None) -> Watched:
    """A SageMaker endpoint: its variants (production and shadow), the primary's model, its capture in S3."""
    import boto3

    sagemaker = client or boto3.client("sagemaker", region_name=settings.region)
    try:
        described = sagemaker.describe_endpoint(EndpointName=endpoint)
    except sagemaker.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationException":
            raise NoEndpointError(f"endpoint {endpoint}: {exc}") from exc
        raise
    config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    production = config.get("ProductionVariants", [])
    variants = [v["VariantName"] for v in [*production, *config.get("ShadowProductionVariants", [])]]
    weights = {v["VariantName"]: v.get("CurrentWeight", 0) for v in described.get("ProductionVariants", [])}
    primary = max(production, key=lambda v: weights.get(v["VariantName"], v.get("InitialVariantWeight", 0)))
    arn = sagemaker.describe_model(ModelName=primary["ModelName"])["ModelArn"]
    tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=arn).get("Tags", [])}
    destination = config.get("DataCaptureConfig", {}).get("DestinationS3Uri", "")
    if not destination.startswith("s3://"):
        raise MonitorError(f"endpoint {endpoint} captures no data (its config has no DataCaptureConfig)")
    bucket, _, prefix = destination.removeprefix("s3://").partition("/")
    capture = S3Store(bucket, boto3.client("s3", region_name=settings.region), prefix=prefix.strip("/"))
    return Watched(variants=variants, primary=primary["VariantName"], model=tags.get(VERSION_TAG, primary["ModelName"]),
                   capture=capture)


def reference_of(settings: Settings, config: PipelineConfig, store: ArtifactStore, model: str) -> Reference:
    """The training split the served model learnt from: the dataset its version's lineage names (or the one the
    config names), raw inputs recovered from the templated prompts."""
    from contracts import tags as T
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
            if kind == "retrain":  # the model's retrain deployment, when a Prefect server serves it
                start("retrain", action.target, Trigger(kind="alarm", name=alarm, detail=reason),
                      idempotency_key=f"alarm:{alarm}:{stamp}")
        return file

    return {"notify": notify, "retrain": request("retrain"), "rollback": request("rollback")}


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
    """Publish the drift and quality metrics of the endpoint's new capture; evaluate its alarms (locally) or put
    them to CloudWatch (aws); run the actions of those that went into ALARM. The endpoint defaults to the one the
    model is released to."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    released = endpoint is None  # the scheduled deployment watches the model's release endpoint
    endpoint = endpoint or config.release.endpoint_of(config.model_name)
    logger = get_run_logger()
    now = now or datetime.now(UTC)
    aws = settings.backend == "aws"
    try:
        watched = sagemaker_endpoint(settings, endpoint) if aws else local_endpoint(settings, endpoint)
    except NoEndpointError:
        if not released:
            raise
        logger.info("%s: no endpoint %s yet (nothing released): nothing to monitor", config.model_name, endpoint)
        return MonitorResult(endpoint=endpoint, new_records=0, metrics={}, transitions=[], actions_run=0)
    store = make_store(settings)
    sink, source = make_metrics(settings)
    specs = endpoint_alarms(endpoint, watched.variants, config.model_name, config.monitoring)

    records, after, cursor = new_capture(watched.capture, endpoint, store)
    datums = []
    primary = sum(len(r.inputs) for r in records if r.variant == watched.primary)
    if primary >= config.monitoring.drift.min_requests:
        reference = reference_of(settings, config, store, watched.model)
        encode = minilm_encoder() if config.monitoring.drift.embedding else None
        datums = drift_metrics(endpoint, records, reference, watched.primary,
                               count_tokens=_token_counter(settings, config), encode=encode,
                               config=config.monitoring.drift, when=now)
        sink.put(datums)
        store.put(cursor, after.model_dump_json().encode())  # only capture that went into statistics is done
    elif records:
        logger.info("%s: %d new requests to the primary variant; the monitors wait for %d", endpoint, primary,
                    config.monitoring.drift.min_requests)
    logger.info("%s: %d new captured invocations, %d metrics published", endpoint, len(records), len(datums))
    metrics = {f"{d.name}{'/' + d.dimensions['VariantName'] if 'VariantName' in d.dimensions else ''}": d.value
               for d in datums}
    if aws:  # CloudWatch evaluates them and runs their actions
        return MonitorResult(endpoint=endpoint, new_records=len(records), metrics=metrics, transitions=[],
                             actions_run=0, cloudwatch=_put_to_cloudwatch(settings, endpoint, watched, specs, config))

    alarms = AlarmStore(settings.root / "alarms")
    alarms.sync(endpoint, specs)  # re-running keeps one alarm per name, with its state and history
    transitions = evaluate_alarms(alarms, source, [s.name for s in specs], now)
    ran = run_actions(transitions, _runners(settings, store))
    return MonitorResult(endpoint=endpoint, new_records=len(records), transitions=transitions, actions_run=ran,
                         metrics=metrics)


def _put_to_cloudwatch(settings: Settings, endpoint: str, watched: Watched, specs: Any,
                       config: PipelineConfig) -> dict[str, Any]:
    import boto3

    from monitoring.cloudwatch import put_dashboard, sync_alarms
    from monitoring.metrics import cloudwatch_client

    client = cloudwatch_client(settings.region)
    changed = sync_alarms(client, endpoint, specs)
    account = boto3.client("sts", region_name=settings.region).get_caller_identity()["Account"]
    dashboard = put_dashboard(client, endpoint, watched.variants, region=settings.region, account=account,
                              period=config.monitoring.period)
    return {**changed, "dashboard": dashboard}


def local_dashboard(settings: Settings, config: PipelineConfig, endpoint: str, *, hours: float = 3.0,
                    period: int | None = None, out_dir: Path | None = None) -> Path:
    """Write a local endpoint's dashboard page (charts per variant, drift, quality, alarms); returns its path."""
    from monitoring.dashboards import panels, render_local
    from monitoring.metrics import SqliteMetricSink
    from monitoring.monitor import alarm_records
    from serving.local import LocalEndpoints

    state = LocalEndpoints(settings.root).describe(endpoint)
    return render_local(endpoint, panels(endpoint, [v.name for v in state.variants]),
                        SqliteMetricSink(settings.root / "metrics.db"),
                        alarm_records(AlarmStore(settings.root / "alarms"), endpoint),
                        out_dir or settings.root / "dashboards" / endpoint, end=datetime.now(UTC), hours=hours,
                        period=period or config.monitoring.period)
