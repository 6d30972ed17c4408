"""What every `genaiops` command shares: the app and its groups, the consoles, config loading, exits, signals."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    name="genaiops",
    help="Fine-tune a foundation model from new data to an approved, safely deployed version; locally or on AWS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show the merged configuration and its schema.", no_args_is_help=True)
models_app = typer.Typer(help="Registered versions: list and show.", no_args_is_help=True)
approvals_app = typer.Typer(help="The approval watcher.", no_args_is_help=True)
data_app = typer.Typer(help="Sample data and the data contract.", no_args_is_help=True)
endpoints_app = typer.Typer(help="Local endpoints: production and shadow variants behind a SageMaker-compatible router.",
                            no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(approvals_app, name="approvals")
app.add_typer(endpoints_app, name="endpoints")
monitor_app = typer.Typer(help="Drift and quality monitors of an endpoint, and its alarms.", no_args_is_help=True)
alarms_app = typer.Typer(help="Alarms: their state and history.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")
app.add_typer(alarms_app, name="alarms")
rollout_app = typer.Typer(help="A running shadow or A/B test: its evidence, and a person's promote or rollback.",
                          no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

# soft_wrap: never break a URL or a path across lines, whatever the terminal width.
# Piped output (CI logs, `| tee`) gets room for the tables instead of the 80 columns rich assumes: $COLUMNS, else 140.
_WIDTH = None if sys.stdout.isatty() else int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 140
out = Console(soft_wrap=True, highlight=False, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_WIDTH)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Pipeline config YAML (default: $GENAIOPS_CONFIG, else the embedded defaults)."),
]

EXIT_FAILED = 1  # the run ran and failed: bad data, a failed gate
EXIT_USAGE = 2  # the run could not start: bad config, bad arguments


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load(config_path: Path | None) -> tuple[Any, Any]:
    from pipelines.settings import ConfigError, load_config, load_settings

    try:
        settings = load_settings()
        return settings, load_config(config_path or settings.config)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def prefect_home(settings: Any) -> None:
    """Flow-run history stays in the workspace unless the user points Prefect elsewhere."""
    if "PREFECT_HOME" not in os.environ:
        (settings.root / "prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(settings.root / "prefect")


STOPPING = threading.Event()  # set by SIGTERM or SIGINT: loops end after what they are doing


def stop(signum: int, frame: object) -> None:
    STOPPING.set()
    raise KeyboardInterrupt  # unwind as Ctrl-C does, so that what the command started is stopped on the way out


