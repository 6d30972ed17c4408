"""Prefect hooks of the deployable flows."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("genaiops.notify")


def failed_run_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect's on_failure hook of the deployable flows: the run, its reason, and a link to it."""
    from prefect.settings import get_current_settings

    from pipelines.backends import make_notifier
    from pipelines.settings import load_settings, resolve_config

    try:
        settings = load_settings()
        config = resolve_config(flow_run.parameters.get("config"), settings)
        ui = get_current_settings().ui_url
        links = {"prefect run": f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run.id}"} if ui else {}
        make_notifier(settings).send(
            f"genaiops: {flow.name} failed for {config.model_name}",
            f"flow run {flow_run.name} ({flow.name}) ended {state.name}: {state.message}", links)
    except Exception:  # a notification must never hide the run's own failure
        log.exception("could not send the failure notification of flow run %s", flow_run.id)
