"""`genaiops release` and `genaiops rollout`: approved versions onto endpoints, and the end of their tests."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.table import Table

from pipelines.cli.common import EXIT_FAILED, ConfigOption, app, err, fail, load, out, prefect_home, rollout_app
from pipelines.offline import go_offline


@app.command("release")
def release_command(config: ConfigOption = None) -> None:
    """Deploy approved versions whose release requests wait (`approvals watch` writes them), exactly once."""
    go_offline()
    settings, pipeline = load(config)
    prefect_home(settings)
    from pipelines.flows.release import release

    outcomes = release(pipeline)
    for outcome in outcomes:
        out.print(f"v{outcome.version}: {outcome.state} ({outcome.strategy} on {outcome.endpoint}): {outcome.detail}"
                  + (" [resumed]" if outcome.resumed else ""))
    if not outcomes:
        out.print("no release request waits")
    if any(o.state == "failed" for o in outcomes):
        raise typer.Exit(EXIT_FAILED)


def _rollout(config: Any) -> Any:
    go_offline()
    settings, pipeline = load(config)
    from pipelines.flows.release import make_rollout

    return make_rollout(settings, pipeline, lambda text: err.print(text))


def _who() -> str:
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or os.environ.get("USER") or "unknown"


@rollout_app.command("status")
def rollout_status(config: ConfigOption = None) -> None:
    """The champion, the challenger, and what the evidence says so far."""
    status = _rollout(config).status()
    out.print(f"endpoint {status.endpoint}: champion {status.champion or '-'}, challenger {status.challenger or '-'}"
              + (f" ({status.strategy} since {status.started})" if status.strategy else ""))
    if status.decision is None:
        out.print("no rollout under way")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("evidence", "champion", "candidate", "verdict", "test"):
        table.add_column(column)
    for item in status.decision.evidence:
        table.add_row(item.name, "-" if item.champion is None else f"{item.champion:.4g}",
                      "-" if item.candidate is None else f"{item.candidate:.4g}", item.verdict, item.test)
    out.print(table)
    out.print(f"decision: {status.decision.action}: {status.decision.reason}")
    if status.unreadable:
        out.print(f"{status.unreadable} captured records could not be read and were skipped")


@rollout_app.command("promote")
def rollout_promote(
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log (a person overriding the decision).")],
    config: ConfigOption = None,
) -> None:
    """Send all traffic to the challenger and make it champion (audited with who and why)."""
    _act(config, "promote", reason)


@rollout_app.command("rollback")
def rollout_rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log and the version's tags.")],
    config: ConfigOption = None,
) -> None:
    """Send all traffic back to the champion and remove the challenger (audited with who and why)."""
    _act(config, "rollback", reason)


def _act(config: Any, action: str, reason: str) -> None:
    """A person's promote or rollback, as the user running the command."""
    from serving.deployer import DeploymentError

    try:
        out.print(getattr(_rollout(config), action)(_who(), reason))
    except DeploymentError as exc:
        fail(str(exc), EXIT_FAILED)
