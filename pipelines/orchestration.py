"""How flow runs survive the world: which errors earn another attempt, the retry and timeout policy of each task,
why a run started, results kept by content hash, runs whose process died, and an expected failure told in one line.

- Retries (exponential backoff with jitter) only on transient AWS and network errors: throttling, 5XX,
  connection resets and timeouts of a call. Never on a validation error, a failed gate or anything unknown:
  another attempt at a deterministic failure only costs money.
- Every task has a timeout (`orchestration.timeouts_s`).
- A result worth keeping (a fine-tuned model) is stored under a key made of content hashes, so a run killed
  after that stage and started again reads it back instead of paying for it twice.
- An MLflow run left RUNNING by a process that died is marked KILLED with the reason, its Prefect flow run is
  marked Crashed, and what it left (a temporary evaluation endpoint) is deleted by the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from steps.artifacts import ArtifactNotFoundError, ArtifactStore

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

# Error codes AWS services answer when another attempt later may succeed.
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "ProvisionedThroughputExceededException", "SlowDown",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalFailure", "InternalError", "InternalServerError",
    "InternalServerException", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
})

TaskName = Literal["prepare", "finetune", "evaluate", "gate-report",
                   "package", "register", "recover", "sync-sagemaker-registry", "watch-approvals", "release",
                   "rollout", "read-capture", "data-hash", "notify", "start-deployment"]


DEFAULT_TIMEOUTS_S: dict[TaskName, float] = {"prepare": 1800, "finetune": 48 * 3600, "evaluate": 6 * 3600,
    "gate-report": 600,
    "package": 3600, "register": 1800, "recover": 900,
    "sync-sagemaker-registry": 900, "watch-approvals": 900, "release": 6 * 3600,
    "rollout": 3600, "read-capture": 1800, "data-hash": 1800, "notify": 120,
    "start-deployment": 300}


class RetryConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    attempts: int = Field(3, ge=0, le=10, description="further attempts after a transient error")
    first_delay_s: float = Field(10.0, ge=0, description="the first backoff; each next one doubles")
    jitter: float = Field(0.5, ge=0, le=1, description="each delay varies by up to this fraction")


class OrchestrationConfig(BaseModel):
    """Retries and timeouts of the flows' tasks."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    retries: RetryConfig = RetryConfig()
    timeouts_s: dict[TaskName, float] = Field(
        default_factory=lambda: dict(DEFAULT_TIMEOUTS_S),
        description="seconds each task may run; a task over its time fails the run")

    @field_validator("timeouts_s")
    @classmethod
    def _over_the_defaults(cls, value: dict[TaskName, float]) -> dict[TaskName, float]:
        """A config names the timeouts it changes; the others keep their defaults."""
        return {**DEFAULT_TIMEOUTS_S, **value}


def is_transient(exc: BaseException | None) -> bool:
    """Whether another attempt may succeed: throttling, a 5XX, a reset or timed-out connection (anywhere in the
    exception's chain). Bad input, failed gates and anything unknown are not."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _transient_here(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _transient_here(exc: BaseException) -> bool:
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in TRANSIENT_CODES or int(status) >= 500 or int(status) == 429
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)):
        return True
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ConnectionRefusedError)):
        return True
    with contextlib.suppress(ImportError):
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return True
        if isinstance(exc, requests.HTTPError) and exc.response is not None:
            return exc.response.status_code >= 500 or exc.response.status_code == 429
    with contextlib.suppress(ImportError):
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            return exc.get_http_status_code() in (429, 502, 503, 504)
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: another attempt only for a transient error."""
    failure = state.result(raise_on_failure=False)
    retry = is_transient(failure) if isinstance(failure, BaseException) else False
    if not retry:
        log.debug("%s: not retried: %r is not transient", getattr(task, "name", task), failure)
    return retry


def reliable(task: Any, config: OrchestrationConfig, *, retry: bool = True) -> Any:
    """`task` with the configured timeout and, unless `retry` is False (a stage that would pay twice), retries
    with exponential backoff and jitter on transient errors only."""
    from prefect.tasks import exponential_backoff

    attempts = config.retries.attempts if retry else 0
    return task.with_options(
        retries=attempts,
        retry_delay_seconds=exponential_backoff(backoff_factor=config.retries.first_delay_s) if attempts else 0,
        retry_jitter_factor=config.retries.jitter if attempts else None,
        retry_condition_fn=retry_transient,
        timeout_seconds=config.timeouts_s.get(task.name),
    )


# --- why a run started ----------------------------------------------------------------------------------------

class Trigger(BaseModel):
    """Why a run started: carried in its parameters, its Prefect tags, its MLflow run and the version it makes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["manual", "schedule", "alarm", "new-data", "approval"] = "manual"
    name: str = Field("", description="the alarm, the data source, the approved version; or who started it")
    detail: str = Field("", description="the alarm's reason, the data's content hash")

    def tags(self) -> list[str]:
        """Prefect run tags."""
        return [f"trigger:{self.kind}", *([f"{self.kind}:{self.name}"[:100]] if self.name else [])]

    def mlflow_tags(self) -> dict[str, str]:
        """On the MLflow run and the version it registers (the approval server checks that the two agree)."""
        from contracts import tags as T

        return {T.TRIGGER: self.kind, T.TRIGGER_NAME: self.name[:250], T.TRIGGER_DETAIL: self.detail[:5000]}

    def describe(self) -> str:
        return self.kind + (f" {self.name}" if self.name else "") + (f" ({self.detail})" if self.detail else "")


def current_trigger(given: Trigger | None, user: str) -> Trigger:
    """The trigger a caller passed; else a schedule when Prefect's scheduler made this run, else the user."""
    if given is not None:
        return given
    with contextlib.suppress(Exception):
        from prefect.runtime import deployment, flow_run

        if "auto-scheduled" in (flow_run.tags or []):
            return Trigger(kind="schedule", name=str(deployment.name or ""),
                           detail=str(flow_run.scheduled_start_time or ""))
    return Trigger(kind="manual", name=user)


# --- results kept by content hash --------------------------------------------------------------------------

def remembered(store: ArtifactStore, key: str, kind: type[ModelT], compute: Callable[[], ModelT]) -> ModelT:
    """The result stored under `results/<key>.json`, marked reused; else `compute()` it and store it. The key
    must be made of the content hashes of everything the result depends on."""
    path = f"results/{key}.json"
    try:
        found = kind.model_validate_json(store.get(path))
    except ArtifactNotFoundError:
        value = compute()
        store.put(path, value.model_dump_json().encode("utf-8"))
        return value
    log.info("reusing %s (%s)", key, store.uri(path))
    return found.model_copy(update={"reused": True}) if "reused" in kind.model_fields else found


# --- runs whose process died -----------------------------------------------------------------------------------

HOST_TAG, PID_TAG, FLOW_RUN_TAG = "genaiops.host", "genaiops.pid", "genaiops.prefect.flow_run_id"
CRASHED_TAG = "genaiops.crashed"


def owner_tags() -> dict[str, str]:
    """What lets a later run tell whether this one's process is still alive."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    with contextlib.suppress(Exception):
        from prefect.runtime import flow_run

        if flow_run.id:
            tags[FLOW_RUN_TAG] = str(flow_run.id)
    return tags


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Crashed(BaseModel):
    model_config = ConfigDict(frozen=True)
    run_id: str
    reason: str
    flow_run_id: str = ""
    dataset_hash: str = ""


def dead_runs(client: Any, experiment_id: str, *, flow_run_state: Callable[[str], str | None]) -> list[Crashed]:
    """RUNNING MLflow runs of the experiment whose process is gone: on this host, its pid no longer exists; on any
    host, its Prefect flow run is in a final state (a worker marked it Crashed, or it was cancelled)."""
    found = []
    here = socket.gethostname()
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        tags, params = run.data.tags, run.data.params
        reason = None
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) == here and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            reason = f"its process {pid} on {here} ended without closing it"
        elif tags.get(FLOW_RUN_TAG):
            state = flow_run_state(tags[FLOW_RUN_TAG])
            if state in ("CRASHED", "CANCELLED", "FAILED", "COMPLETED"):
                reason = f"its Prefect flow run {tags[FLOW_RUN_TAG]} is {state.lower()}"
        if reason:
            found.append(Crashed(run_id=run.info.run_id, reason=reason, flow_run_id=tags.get(FLOW_RUN_TAG, ""),
                                 dataset_hash=params.get("dataset.hash", "")))
    return found


def prefect_state(flow_run_id: str) -> str | None:
    """The state type of a Prefect flow run, or None when the API cannot say."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state_type
            return None if state is None else str(state.value)
    except Exception:
        return None


def mark_crashed(flow_run_id: str, reason: str) -> bool:
    """Set a Prefect flow run that is still Running to Crashed; True if it was."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed as CrashedState

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is None or run.state.is_final():
                return False
            client.set_flow_run_state(UUID(flow_run_id), CrashedState(message=reason), force=True)
            return True
    except Exception as exc:  # the API this run talks to may not know that run (another ephemeral server)
        log.info("could not mark flow run %s crashed: %s", flow_run_id, exc)
        return False


# --- expected failures in one line --------------------------------------------------------------------------

_EXPECTED: list[type[BaseException]] = []


def expected(*kinds: type[BaseException]) -> None:
    """Declare exception types that end a run on purpose (a failed gate, a broken data contract): Prefect logs
    them in one line, without a traceback. Tracebacks are for bugs."""
    _EXPECTED.extend(k for k in kinds if k not in _EXPECTED)


class _OneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], tuple(_EXPECTED)):
            exc = record.exc_info[1]
            record.msg, record.args = "%s: %s", (type(exc).__name__, exc)
            record.exc_info, record.exc_text = None, None
        return True


_FILTER = _OneLine()


def quiet_expected_failures() -> None:
    """Install the one-line filter on Prefect's run loggers (idempotent)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class Recovered(BaseModel):
    model_config = ConfigDict(frozen=True)
    crashed: list[Crashed] = []
    endpoints_removed: list[str] = []


def recover(registry: Any, deployer: Any = None, *, evaluation_endpoint: Callable[[str], str] | None = None,
            flow_run_state: Callable[[str], str | None] = prefect_state,
            crash: Callable[[str, str], bool] = mark_crashed) -> Recovered:
    """Close what runs whose process died left behind: their MLflow runs are marked KILLED with the reason, their
    Prefect flow runs Crashed, and, where endpoints are served (`deployer`), their temporary evaluation endpoint
    (`evaluation_endpoint(dataset_hash)` names it) and every expired one are deleted."""
    crashed = dead_runs(registry.client, registry.experiment_id, flow_run_state=flow_run_state)
    removed: list[str] = []
    for run in crashed:
        log.warning("run %s crashed: %s; marking it KILLED", run.run_id, run.reason)
        registry.client.set_tag(run.run_id, CRASHED_TAG, run.reason)
        registry.client.set_terminated(run.run_id, status="KILLED")
        if run.flow_run_id and crash(run.flow_run_id, run.reason):
            log.warning("flow run %s marked Crashed", run.flow_run_id)
        if deployer is not None and evaluation_endpoint is not None and run.dataset_hash:
            name = evaluation_endpoint(run.dataset_hash)
            if deployer.describe(name) is not None:
                log.warning("deleting %s, the evaluation endpoint crashed run %s left", name, run.run_id)
                removed.extend(deployer.remove(name))
    if deployer is not None:
        from serving.evaluation_endpoint import collect

        removed.extend(collect(deployer))
    return Recovered(crashed=crashed, endpoints_removed=removed)


# --- new data -----------------------------------------------------------------------------------------------

class SourceSeen(BaseModel):
    """A data source's content hash now, and the one the last started retrain saw."""

    model_config = ConfigDict(frozen=True)
    model: str
    source: str
    content_hash: str
    previous: str | None

    @property
    def changed(self) -> bool:
        return self.content_hash != self.previous

    @property
    def key(self) -> str:
        return f"triggers/data/{self.model}.json"

    def record(self, store: ArtifactStore) -> None:
        import json
        from datetime import UTC, datetime

        store.put(self.key, json.dumps({"source": self.source, "content_hash": self.content_hash,
                                        "at": datetime.now(UTC).isoformat()}).encode("utf-8"))


def source_seen(store: ArtifactStore, model: str, source: str) -> SourceSeen:
    """Hash the source's bytes (the hash `prepare` records as the dataset's source hash)."""
    import hashlib
    import json

    from steps.data_sources import read_source

    data, name = read_source(source, store)
    seen = SourceSeen(model=model, source=name, content_hash=hashlib.sha256(data).hexdigest(), previous=None)
    try:
        previous = json.loads(store.get(seen.key)).get("content_hash")
    except ArtifactNotFoundError:
        previous = None
    return seen.model_copy(update={"previous": previous})
