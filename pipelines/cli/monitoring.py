"""`genaiops monitor`, `alarms` and `dashboard`: watching an endpoint."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import (
    EXIT_USAGE,
    ConfigOption,
    alarms_app,
    app,
    fail,
    load,
    monitor_app,
    out,
    prefect_home,
)
from pipelines.offline import go_offline


@monitor_app.command("run")
def monitor_run(endpoint: Annotated[str, typer.Argument(help="An endpoint.")], config: ConfigOption = None) -> None:
    """Publish the drift and quality metrics of new capture; sync the endpoint's alarms and dashboard; evaluate the
    alarms and run their actions (local), where CloudWatch does not (aws)."""
    go_offline()
    settings, pipeline = load(config)
    prefect_home(settings)
    from pipelines.flows.monitor import MonitorError, monitor

    try:
        result = monitor(endpoint, pipeline)
    except MonitorError as exc:
        fail(str(exc), EXIT_USAGE)
    out.print(f"{endpoint}: {result.new_records} new captured invocations")
    for name, value in sorted(result.metrics.items()):
        out.print(f"  {name} = {value:g}")
    for transition in result.transitions:
        out.print(f"[bold]{transition.alarm}[/]: {transition.change.old} -> {transition.change.new}: "
                  f"{transition.change.reason}")
    if result.unreadable:
        out.print(f"{result.unreadable} captured records could not be read and were skipped")
    alarms = result.alarms
    out.print(f"alarms: {len(alarms.put)} in place, {len(alarms.deleted)} removed" if alarms.owner == "flows"
              else "alarms: the stack's (an endpoint kept as code), left as it made them")
    out.print(f"dashboard: {result.dashboard}")
    _alarm_table(endpoint)


def _alarm_table(endpoint: str | None, as_json: bool = False) -> None:
    from pipelines.backends import make_alarms
    from pipelines.settings import load_settings

    views = make_alarms(load_settings()).views(endpoint)
    if as_json:
        out.print(json.dumps([v.model_dump() for v in views], indent=2), soft_wrap=True)
        return
    table = Table(title=f"alarms{' of ' + endpoint if endpoint else ''} (the whole reason: genaiops alarms history NAME)")
    for column in ("alarm", "state", "since (UTC)", "rule", "actions"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    table.add_column("reason", overflow="ellipsis", no_wrap=True, max_width=36)
    colours = {"OK": "green", "ALARM": "red", "INSUFFICIENT_DATA": "yellow"}
    for view in views:
        table.add_row(view.name, f"[{colours.get(view.state, 'white')}]{view.state}[/]",
                      view.since[5:16].replace("T", " "), view.rule, ", ".join(view.actions),
                      view.reason.removeprefix("Threshold Crossed: "))
    out.print(table)


@app.command()
def dashboard(
    endpoint: Annotated[str, typer.Argument(help="An endpoint.")],
    hours: Annotated[float, typer.Option(help="How far back the charts go.", min=0.05, max=24 * 14)] = 3.0,
    period: Annotated[int | None, typer.Option(help="Seconds per point (default: monitoring.period).", min=1)] = None,
    config: ConfigOption = None,
) -> None:
    """Refresh the endpoint's dashboard (charts per variant, drift, quality, alarms): an HTML page in the workspace,
    or CloudWatch's on aws; print where it is."""
    from pipelines.flows.monitor import NoEndpointError, dashboard

    settings, pipeline = load(config)
    try:
        page = dashboard(settings, pipeline, endpoint, hours=hours, period=period)
    except NoEndpointError as exc:
        fail(str(exc), EXIT_USAGE)
    out.print(page)


@alarms_app.command("list")
def alarms_list(endpoint: Annotated[str | None, typer.Argument(help="Only this endpoint's alarms.")] = None,
                as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """Every alarm with its state, or those of one endpoint."""
    _alarm_table(endpoint, as_json)


@alarms_app.command("history")
def alarms_history(name: Annotated[str, typer.Argument(help="The alarm's name.")]) -> None:
    """An alarm's state changes: when, old -> new, and why (with the datapoints)."""
    from pipelines.backends import make_alarms
    from pipelines.settings import load_settings

    alarms = make_alarms(load_settings())
    history = alarms.history(name)
    if history is None:
        fail(f"no alarm named {name!r}; `genaiops alarms list` shows them", EXIT_USAGE)
    for change in history:
        out.print(f"{change.at}  {change.old} -> {change.new}  {change.reason}")
    if not history:
        state, reason = alarms.states([name]).get(name, ("?", ""))
        out.print(f"{name}: {state} ({reason}); no state change yet")
