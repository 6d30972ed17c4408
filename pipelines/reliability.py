"""How flow runs survive the world: which errors earn another attempt, the retry and timeout policy of each task,
results kept by content hash, and an expected failure told in one line.

- Retries (exponential backoff with jitter) only on transient AWS and network errors: throttling, 5XX,
  connection resets and timeouts of a call. Never on a validation error, a failed gate or anything unknown:
  another attempt at a deterministic failure only costs money.
- Every task has a timeout (`orchestration.timeouts_s`).
- A result worth keeping (a fine-tuned model) is stored under a key made of content hashes, so a run killed
  after that stage and started again reads it back instead of paying for it twice.
- A failure a run ends with on purpose (a failed gate, a broken contract) is logged in one line; tracebacks are
  for bugs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

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
