"""Runs whose process died: an MLflow run left RUNNING by a process that is gone is marked KILLED with the reason,
its Prefect flow run is marked Crashed, and what it left (a temporary evaluation endpoint, and every expired one)
is deleted by the next run."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

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


def dead_runs(running: Sequence[Any], *, flow_run_state: Callable[[str], str | None]) -> list[Crashed]:
    """Of the RUNNING MLflow runs (`MlflowRegistry.running_runs`), those whose process is gone: on this host, its pid
    no longer exists; on any host, its Prefect flow run is in a final state (a worker marked it Crashed, or it was
    cancelled)."""
    found = []
    here = socket.gethostname()
    for run in running:
        tags, params = run.tags, run.params
        reason = None
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) == here and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            reason = f"its process {pid} on {here} ended without closing it"
        elif tags.get(FLOW_RUN_TAG):
            state = flow_run_state(tags[FLOW_RUN_TAG])
            if state in ("CRASHED", "CANCELLED", "FAILED", "COMPLETED"):
                reason = f"its Prefect flow run {tags[FLOW_RUN_TAG]} is {state.lower()}"
        if reason:
            found.append(Crashed(run_id=run.run_id, reason=reason, flow_run_id=tags.get(FLOW_RUN_TAG, ""),
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
    crashed = dead_runs(registry.runs.running_runs(), flow_run_state=flow_run_state)
    removed: list[str] = []
    for run in crashed:
        log.warning("run %s crashed: %s; marking it KILLED", run.run_id, run.reason)
        registry.runs.mark_killed(run.run_id, CRASHED_TAG, run.reason)
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
