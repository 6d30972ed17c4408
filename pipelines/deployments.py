"""The Prefect deployments of genaiops, as `prefect.yaml` declares them, and how runs of them are started.

`prefect.yaml` is the one declaration: `prefect deploy --all` sends its deployments to the ECS work pool on AWS,
and `genaiops serve` serves the same ones locally (`serve_all`, run by `python -m pipelines.deployments`). A
deployment's name is the model it runs for, so that a trigger finds `retrain/<model>` from a config alone.

`start` is how a trigger (an alarm's retrain action, new data, an approval that stands) starts a run: through
the Prefect API of the server the caller runs under, with the trigger in the run's parameters and tags. Without
a Prefect server (a run of the CLI on its own) there is no deployment to start: it says so and returns None.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.trigger import Trigger

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"


class PrefectYamlError(ValueError):
    """`prefect.yaml` is wrong: the message names the deployment and the key."""


class Schedule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    cron: str | None = None
    interval: float | None = Field(None, gt=0)
    timezone: str | None = None
    active: bool = True

    def describe(self) -> str:
        if self.cron:
            return f"cron {self.cron}" + (f" ({self.timezone})" if self.timezone else "")
        return f"every {self.interval:g} s"


class Concurrency(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    limit: int = Field(1, ge=1)
    collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"


class DeploymentSpec(BaseModel):
    """One deployment of `prefect.yaml` (the keys `genaiops serve` reads; `prefect deploy` reads the rest)."""

    model_config = ConfigDict(frozen=True, extra="allow")
    name: str
    entrypoint: str
    description: str = ""
    parameters: dict[str, Any] = {}
    schedules: list[Schedule] = []
    concurrency_limit: Concurrency | None = None
    tags: list[str] = []

    @property
    def flow_name(self) -> str:
        return self.entrypoint.rpartition(":")[2].replace("_", "-")

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


def load_deployments(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise PrefectYamlError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise PrefectYamlError(f"{path}: not valid YAML ({exc})") from exc
    specs = []
    for index, raw in enumerate(document.get("deployments") or []):
        try:
            spec = DeploymentSpec.model_validate(raw)
        except ValidationError as exc:
            where = f"{path}: deployments[{index}] ({raw.get('name', '?') if isinstance(raw, dict) else '?'})"
            raise PrefectYamlError("\n".join(f"{where}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                                            for e in exc.errors())) from exc
        specs.append(spec)
    if not specs:
        raise PrefectYamlError(f"{path}: declares no deployments")
    names = [s.full_name for s in specs]
    if len(set(names)) != len(names):
        raise PrefectYamlError(f"{path}: deployment names repeat: {sorted(n for n in names if names.count(n) > 1)}")
    return specs


def _flow_of(entrypoint: str) -> Any:
    """The flow object an entrypoint (`pipelines/flows/release.py:release`) names, imported as a module."""
    import importlib

    file, _, attribute = entrypoint.rpartition(":")
    module = file.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return getattr(importlib.import_module(module), attribute)


def runner_deployments(specs: list[DeploymentSpec]) -> list[Any]:
    """The specs as Prefect runner deployments, for `serve`."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
    from prefect.types.entrypoint import EntrypointType

    deployments = []
    for spec in specs:
        schedules: list[Any] = []
        for s in spec.schedules:
            if s.cron:
                schedules.append(CronSchedule(cron=s.cron, timezone=s.timezone or "UTC"))
            elif s.interval:
                from datetime import timedelta

                schedules.append(IntervalSchedule(interval=timedelta(seconds=s.interval)))
        limit = None
        if spec.concurrency_limit is not None:
            limit = ConcurrencyLimitConfig(
                limit=spec.concurrency_limit.limit,
                collision_strategy=ConcurrencyLimitStrategy(spec.concurrency_limit.collision_strategy))
        deployments.append(_flow_of(spec.entrypoint).to_deployment(
            name=spec.name, schedules=schedules, parameters=spec.parameters, description=spec.description,
            tags=spec.tags, concurrency_limit=limit, entrypoint_type=EntrypointType.MODULE_PATH))
    return deployments


def serve_all(path: Path = PREFECT_YAML) -> None:
    """Serve every deployment of `prefect.yaml` from this process (the Prefect API is PREFECT_API_URL)."""
    from prefect import serve

    serve(*runner_deployments(load_deployments(path)), pause_on_shutdown=False, print_starting_message=False)


def api_url() -> str | None:
    """The Prefect server this process talks to, or None when it would start a temporary one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def start(flow_name: str, model: str, trigger: Trigger, *, idempotency_key: str | None = None,
          parameters: dict[str, Any] | None = None) -> str | None:
    """Start a run of deployment `<flow_name>/<model>` carrying `trigger`; its flow run id, or None when there is
    no Prefect server or no such deployment (logged: the run is not started)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    name = f"{flow_name}/{model}"
    if api_url() is None:
        log.info("no Prefect server (PREFECT_API_URL unset): %s not started for %s; `genaiops serve` serves the "
                 "deployments", name, trigger.describe())
        return None
    try:
        run: Any = run_deployment(name, parameters={**(parameters or {}), "trigger": trigger.model_dump()}, timeout=0,
                             tags=trigger.tags(), idempotency_key=idempotency_key, as_subflow=False)
    except ObjectNotFound:
        log.warning("no deployment %s on %s: not started for %s", name, api_url(), trigger.describe())
        return None
    log.info("started %s (flow run %s) for %s", name, run.id, trigger.describe())
    return str(run.id)


if __name__ == "__main__":  # the runner process of `genaiops serve`: python -m pipelines.deployments [prefect.yaml]
    import sys

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipelines").setLevel(logging.INFO)
    serve_all(Path(sys.argv[1]) if len(sys.argv) > 1 else PREFECT_YAML)
