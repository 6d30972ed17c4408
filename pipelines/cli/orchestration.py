"""`genaiops serve` and `genaiops runs`: the Prefect deployments served locally, and what their runs did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipelines.cli.common import EXIT_FAILED, EXIT_USAGE, ConfigOption, app, err, fail, load, out
from pipelines.offline import go_offline

runs_app = typer.Typer(help="Recent flow runs: trigger, stages with durations, outcome, links.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@app.command()
def serve(
    config: ConfigOption = None,
    port: Annotated[int, typer.Option(help="Port of the Prefect server and UI on 127.0.0.1.")] = 4200,
    prefect_yaml: Annotated[Path | None, typer.Option("--prefect-yaml", help="The deployments (default: the "
                                                      "repository's prefect.yaml).")] = None,
) -> None:
    """Serve the deployments of prefect.yaml locally: a Prefect server on 127.0.0.1 with its database in the
    workspace, their schedules, and the runs triggers start. Ctrl-C or SIGTERM stops all of it."""
    go_offline()
    settings, pipeline = load(config)
    from pipelines.deployments import PREFECT_YAML, PrefectYamlError, load_deployments
    from pipelines.serve import ServeError, serving
    from pipelines.settings import ConfigError, load_config

    path = prefect_yaml or PREFECT_YAML
    try:
        specs = load_deployments(path)
        for spec in specs:  # a trigger finds `retrain/<model>`: each deployment is named after its config's model
            given = spec.parameters.get("config")
            model = load_config(Path(given)).model_name if given else pipeline.model_name
            if spec.name != model:
                raise PrefectYamlError(f"{path}: deployment {spec.full_name} runs model {model!r}; name it {model!r}"
                                      " (triggers start deployments by model name)")
    except (PrefectYamlError, ConfigError) as exc:
        fail(str(exc), EXIT_USAGE)
    chosen = config or settings.config
    extra = {"GENAIOPS_CONFIG": str(chosen.resolve())} if chosen else {}
    home = settings.root / "prefect"
    err.print(f"starting the Prefect server on 127.0.0.1:{port} (database {home / 'prefect.db'}) ...")
    try:
        with serving(home, port, path, specs, extra_env=extra) as (url, _, processes):
            table = Table(title=f"deployments of {path.name}, served for {pipeline.model_name}")
            for column in ("deployment", "schedule", "concurrency"):
                table.add_column(column)
            for spec in specs:
                limit = spec.concurrency_limit
                table.add_row(spec.full_name, ", ".join(s.describe() for s in spec.schedules) or "-",
                              f"{limit.limit} ({limit.collision_strategy.lower().replace('_', ' ')})" if limit else "-")
            out.print(table)
            out.print(f"Prefect UI: {url}  ·  API: {url}/api  ·  workspace: {settings.root}")
            out.print(f"start a run: PREFECT_API_URL={url}/api prefect deployment run 'retrain/{pipeline.model_name}'")
            out.print("serving; Ctrl-C stops the server and every run it started", markup=False)
            code = _wait(processes)
    except ServeError as exc:
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the `with` block stopped everything on the way out
        err.print("stopped")
        return
    fail(f"a process of the Prefect stack exited with {code}", EXIT_FAILED)


def _wait(processes: list[Any]) -> int:
    """Until one of the processes exits (its code) or a signal interrupts the wait."""
    import time

    while True:
        for process in processes:
            if process.poll() is not None:
                return int(process.returncode)
        time.sleep(0.5)


@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 20,
    flow: Annotated[str | None, typer.Option(help="Only runs of this flow (retrain, release, ...).")] = None,
    upcoming: Annotated[bool, typer.Option("--upcoming", help="The scheduled runs still to come, soonest first.")] = False,
) -> None:
    """Recent flow runs with their trigger, state and duration (the Prefect server of `genaiops serve` when
    PREFECT_API_URL names it, else the workspace's own history)."""
    go_offline()
    settings, _ = load(None)
    _prefect(settings)
    from pipelines.runs import recent

    rows = recent(limit, flow, upcoming=upcoming)
    table = Table(title="scheduled flow runs, soonest first" if upcoming else "flow runs, newest first")
    for column in ("started", "flow/deployment", "run", "trigger", "state", "duration"):
        table.add_column(column)
    for run in rows:
        table.add_row(run.started, run.flow + (f"/{run.deployment}" if run.deployment else ""), run.name, run.trigger,
                      run.state, run.duration)
    out.print(table)
    if not rows:
        out.print("no scheduled runs to come" if upcoming else "no flow runs yet")


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="A flow run's name or id (`genaiops runs list`).")],
    config: ConfigOption = None,
) -> None:
    """One run: its trigger, stages with durations and attempts, outcome, and links to Prefect and MLflow."""
    go_offline()
    settings, pipeline = load(config)
    _prefect(settings)
    from pipelines.backends import make_registry
    from pipelines.runs import RunNotFoundError, detail

    try:
        shown = detail(run, mlflow_ui=settings.mlflow_ui_url, registry=make_registry(settings, pipeline))
    except RunNotFoundError as exc:
        fail(str(exc), EXIT_USAGE)
    out.print(f"[bold]{shown.flow}[/] run {shown.name} ({shown.id})")
    out.print(f"  trigger   {shown.trigger}", markup=False)
    out.print(f"  state     {shown.state}: {shown.message}", markup=False)
    out.print(f"  started   {shown.started}  ·  duration {shown.duration}")
    table = Table(title="stages")
    for column in ("stage", "state", "duration", "attempts"):
        table.add_column(column)
    for stage in shown.stages:
        table.add_row(stage.name, stage.state, stage.duration, str(stage.attempts))
    out.print(table)
    for label, link in shown.links.items():
        out.print(f"  {label:<10}{link}", markup=False)


def _prefect(settings: Any) -> None:
    from pipelines.cli.common import prefect_home

    prefect_home(settings)

