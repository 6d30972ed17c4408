"""Recent flow runs as `genaiops runs` shows them: why each started, its stages with durations, its outcome, and
links to the Prefect run and the MLflow run and version it made."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from pipelines.recovery import FLOW_RUN_TAG


class RunNotFoundError(LookupError):
    """No flow run has that name or id."""


class RunSummary(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    name: str
    flow: str
    deployment: str
    trigger: str
    state: str
    message: str
    started: str
    duration: str


class Stage(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    state: str
    duration: str
    attempts: int


class RunDetail(RunSummary):
    stages: list[Stage]
    links: dict[str, str]


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def trigger_of(parameters: dict[str, Any], tags: list[str]) -> str:
    """Why a run started, from its `trigger` parameter, else its tags."""
    given = parameters.get("trigger")
    if isinstance(given, dict) and given.get("kind"):
        return " ".join(str(given[k]) for k in ("kind", "name") if given.get(k)) + \
            (f" ({str(given['detail'])[:40]})" if given.get("detail") else "")
    if "auto-scheduled" in tags:
        return "schedule"
    kinds = [t.removeprefix("trigger:") for t in tags if t.startswith("trigger:")]
    return kinds[0] if kinds else "manual"


def _summary(run: Any, flows: dict[Any, str], deployments: dict[Any, str]) -> dict[str, Any]:
    state = run.state
    return {
        "id": str(run.id), "name": run.name, "flow": flows.get(run.flow_id, "?"),
        "deployment": deployments.get(run.deployment_id, "") if run.deployment_id else "",
        "trigger": trigger_of(run.parameters or {}, list(run.tags or [])),
        "state": state.name if state else "-", "message": (state.message or "") if state else "",
        "started": _when(run.start_time or run.expected_start_time),
        "duration": _duration(run.total_run_time.total_seconds() if run.total_run_time else run.estimated_run_time
                              and run.estimated_run_time.total_seconds()),
    }


def _names(client: Any, runs: list[Any]) -> tuple[dict[Any, str], dict[Any, str]]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowFilter, FlowFilterId

    flow_ids = list({r.flow_id for r in runs})
    deployment_ids = list({r.deployment_id for r in runs if r.deployment_id})
    flows = {f.id: f.name for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=flow_ids)))} \
        if flow_ids else {}
    deployments = {d.id: d.name for d in client.read_deployments(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)))} if deployment_ids else {}
    return flows, deployments


def recent(limit: int = 20, flow: str | None = None, *, upcoming: bool = False) -> list[RunSummary]:
    """The newest flow runs that are due, first (parent runs only: a subflow shows as a stage of its parent); with
    `upcoming`, the scheduled runs still to come, soonest first. A schedule keeps up to a hundred future runs, which
    would otherwise crowd out the runs that happened."""
    from datetime import UTC

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterParentTaskRunId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    now = datetime.now(UTC)
    when = FlowRunFilterExpectedStartTime(after_=now) if upcoming else FlowRunFilterExpectedStartTime(before_=now)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])) if flow else None,
            flow_run_filter=FlowRunFilter(parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True),
                                          expected_start_time=when),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC if upcoming else FlowRunSort.START_TIME_DESC, limit=limit)
        flows, deployments = _names(client, runs)
    return [RunSummary(**_summary(run, flows, deployments)) for run in runs]


def detail(run: str, *, mlflow_ui: str, registry: Any = None) -> RunDetail:
    """One run by id or name: its stages (task runs and subflows, in order) and links."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort
    from prefect.settings import get_current_settings

    with get_client(sync_client=True) as client:
        try:
            found = [client.read_flow_run(UUID(run))]
        except ValueError:  # not a UUID: a name
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run])), limit=1)
        except Exception:
            found = []
        if not found:
            raise RunNotFoundError(f"no flow run named or numbered {run!r}; `genaiops runs list` shows them")
        flow_run = found[0]
        flows, deployments = _names(client, [flow_run])
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                                      sort=TaskRunSort.EXPECTED_START_TIME_ASC)
    stages = [Stage(name=t.name.rsplit("-", 1)[0], state=t.state.name if t.state else "-",
                    duration=_duration(t.total_run_time.total_seconds() if t.total_run_time else None),
                    attempts=max(t.run_count, 1)) for t in tasks]
    links: dict[str, str] = {}
    api = get_current_settings().api.url
    if api:
        links["prefect"] = f"{str(api).removesuffix('/api')}/runs/flow-run/{flow_run.id}"
    if registry is not None:
        links.update(_mlflow_links(registry, mlflow_ui, str(flow_run.id)))
    return RunDetail(**_summary(flow_run, flows, deployments), stages=stages, links=links)


def _mlflow_links(registry: Any, mlflow_ui: str, flow_run_id: str) -> dict[str, str]:
    """The MLflow run a retrain run made, and the version it registered."""
    run_id = registry.runs.run_tagged(FLOW_RUN_TAG, flow_run_id)
    if run_id is None:
        return {}
    links = {"mlflow run": registry.runs.run_url(mlflow_ui, run_id)}
    versions = registry.versions_of_run(run_id)
    if versions:
        links["version"] = registry.version_url(mlflow_ui, versions[0].version)
    return links
