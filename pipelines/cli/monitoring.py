"""`genaiops monitor`, `alarms` and `dashboard`: watching an endpoint."""

from __future__ import annotations

import json
from pathlib import Path
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
def monitor_run(endpoint: Annotated[str, typer.Argument(help="A local endpoint.")], config: ConfigOption = None) -> None:
    """Publish the drift and quality metrics of new capture; evaluate the endpoint's alarms and run their actions
    (local), or put them and its dashboard to CloudWatch (aws)."""
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
    if result.cloudwatch:  # aws: CloudWatch holds and evaluates the alarms
        out.print(f"CloudWatch: {len(result.cloudwatch['put'])} alarms put, {len(result.cloudwatch['deleted'])} "
                  f"removed; dashboard {result.cloudwatch['dashboard']}")
        return
    _alarm_table(endpoint)


def _alarm_table(endpoint: str | None, as_json: bool = False) -> None:
    from monitoring.alarms import SYMBOLS, AlarmStore, describe
    from monitoring.monitor import alarm_records
    from pipelines.settings import load_settings

    records = alarm_records(AlarmStore(load_settings().root / "alarms"), endpoint)
    if as_json:
        out.print(json.dumps([describe(r) for r in records], indent=2), soft_wrap=True)
        return
    table = Table(title=f"alarms{' of ' + endpoint if endpoint else ''} (the whole reason: genaiops alarms history NAME)")
    for column in ("alarm", "state", "since (UTC)", "rule", "actions"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    table.add_column("reason", overflow="ellipsis", no_wrap=True, max_width=36)
    colours = {"OK": "green", "ALARM": "red", "INSUFFICIENT_DATA": "yellow"}
    for record in records:
        spec = record.spec
        rule = f"{SYMBOLS[spec.comparison]} {spec.threshold:g} ({spec.m}/{spec.evaluation_periods} x {spec.period}s)"
        table.add_row(spec.name, f"[{colours[record.state]}]{record.state}[/]", record.updated[5:16].replace("T", " "),
                      rule, ", ".join(a.kind for a in spec.actions), record.reason.removeprefix("Threshold Crossed: "))
    out.print(table)


@app.command()
def dashboard(
    endpoint: Annotated[str, typer.Argument(help="A local endpoint.")],
    hours: Annotated[float, typer.Option(help="How far back the charts go.", min=0.05, max=24 * 14)] = 3.0,
    period: Annotated[int | None, typer.Option(help="Seconds per point (default: monitoring.period).", min=1)] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder of the page (default: the workspace's).")] = None,
    config: ConfigOption = None,
) -> None:
    """Write the endpoint's dashboard (charts per variant, drift, quality, alarms) as an HTML page; print its path."""
    from pipelines.flows.monitor import local_dashboard
    from serving.local import EndpointError

    settings, pipeline = load(config)
    try:
        page = local_dashboard(settings, pipeline, endpoint, hours=hours, period=period, out_dir=out_dir)
    except EndpointError as exc:
        fail(f"{exc}; `genaiops endpoints list` shows the endpoints", EXIT_USAGE)
    out.print(str(page))


@alarms_app.command("list")
def alarms_list(endpoint: Annotated[str | None, typer.Argument(help="Only this endpoint's alarms.")] = None,
                as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """Every alarm with its state, or those of one endpoint."""
    _alarm_table(endpoint, as_json)


@alarms_app.command("history")
def alarms_history(name: Annotated[str, typer.Argument(help="The alarm's name.")]) -> None:
    """An alarm's state changes: when, old -> new, and why (with the datapoints)."""
    from monitoring.alarms import AlarmStore
    from pipelines.settings import load_settings

    record = AlarmStore(load_settings().root / "alarms").get(name)
    if record is None:
        fail(f"no alarm named {name!r}; `genaiops alarms list` shows them", EXIT_USAGE)
    for change in record.history:
        out.print(f"{change.at}  {change.old} -> {change.new}  {change.reason}")
    if not record.history:
        out.print(f"{name}: {record.state} ({record.reason}); no state change yet")
