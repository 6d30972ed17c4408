"""`genaiops ui`, `models`, `approve`, `reject`, `audit` and `approvals watch`: the registry and approval."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipelines.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    STOPPING,
    ConfigOption,
    app,
    approvals_app,
    err,
    fail,
    load,
    models_app,
    out,
    prefect_home,
)
from pipelines.offline import go_offline


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Serve the MLflow UI on 127.0.0.1 with sign-in and the approval rules (what `make ui` runs)."""
    go_offline()
    settings, pipeline = load(None)
    from model_registry.auth_setup import parse_passwords, prepare, redacted, server_command, server_env
    from pipelines.backends import audit_spec

    mlflow = shutil.which("mlflow", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if mlflow is None:
        fail("the mlflow command is not installed in this environment", EXIT_USAGE)
    settings.root.mkdir(parents=True, exist_ok=True)
    try:
        given = parse_passwords(settings.ui_passwords.get_secret_value()) if settings.ui_passwords else {}
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    server = prepare(settings.root / "auth", approval=pipeline.approval, audit=audit_spec(settings),
                     passwords=given, backend_store_uri=settings.tracking_uri)
    command = server_command(mlflow, artifact_root=settings.mlflow_artifact_root, port=port)
    err.print(f"MLflow UI: http://127.0.0.1:{port}  (store {redacted(settings.tracking_uri)}); Ctrl-C stops it")
    approval = pipeline.approval
    err.print(f"users: {', '.join(server.users)}; approvers: {', '.join(approval.approvers)}; "
              f"pipeline: {approval.pipeline_account}; watcher: {approval.watcher_account}; "
              f"release: {approval.release_account}; admin: {approval.admin_account}; "
              f"feedback: {', '.join(approval.feedback_accounts)}")
    err.print(f"passwords in {server.passwords_file}")
    from pipelines.processes import run_foreground

    raise typer.Exit(run_foreground(command, {**os.environ, **server_env(server, settings.tracking_uri)}))


@app.command("approval-server")
def approval_server() -> None:
    """The approval server as the approval stack runs it (the container's command): MLflow with the approval rules,
    its stores on GENAIOPS_SERVER_DATABASE_URI (or the DB_* fields of the RDS secret), people signed in by the
    load balancer named by GENAIOPS_SERVER_SIGNER_ARN, service accounts with the passwords of their secrets.
    SIGTERM stops it and every worker, after the requests in flight."""
    go_offline()
    settings, pipeline = load(None)
    from model_registry.alb_identity import AlbIdentityConfig
    from model_registry.auth_setup import prepare, redacted, server_command, server_env
    from pipelines.backends import audit_spec
    from pipelines.processes import run_foreground
    from pipelines.settings import ConfigError, load_server_settings

    try:
        server = load_server_settings()
        uri = server.store_uri(settings)
    except (ConfigError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    approval = pipeline.approval
    identity = None
    if server.signer_arn:
        identity = AlbIdentityConfig.for_region(server.signer_arn, settings.region, claim=server.claim) \
            if server.keys_url is None else AlbIdentityConfig(signer=server.signer_arn, keys=server.keys_url,
                                                              claim=server.claim)
    given = {account: secret.get_secret_value() for account, secret in (
        (approval.admin_account, server.admin_password), (approval.pipeline_account, server.pipeline_password),
        (approval.watcher_account, server.watcher_password), (approval.release_account, server.release_password))
        if secret is not None}
    missing = [a for a in (approval.admin_account, approval.pipeline_account, approval.watcher_account,
                           approval.release_account) if a not in given]
    if settings.backend == "aws" and missing:
        fail(f"the approval server on aws needs every service account's password: none for {', '.join(missing)} "
             "(GENAIOPS_SERVER_ADMIN_PASSWORD, _PIPELINE_PASSWORD, _WATCHER_PASSWORD, _RELEASE_PASSWORD)", EXIT_USAGE)
    mlflow = shutil.which("mlflow", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if mlflow is None:
        fail("the mlflow command is not installed in this environment", EXIT_USAGE)
    settings.root.mkdir(parents=True, exist_ok=True)
    try:
        prepared = prepare(settings.root / "auth", approval=approval, audit=audit_spec(settings), passwords=given,
                           backend_store_uri=uri, identity=identity)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    command = server_command(mlflow, artifact_root=settings.mlflow_artifact_root, port=server.port, host=server.host,
                             workers=server.workers)
    if server.allowed_hosts:
        command += ["--allowed-hosts", server.allowed_hosts]
    err.print(f"approval server: http://{server.host}:{server.port}  (store {redacted(uri)}; people sign in "
              f"{'through ' + identity.signer if identity else 'with passwords'}); SIGTERM or Ctrl-C stops it")
    raise typer.Exit(run_foreground(command, {**os.environ, **server_env(prepared, uri)}))


def _registry(config: Path | None, name: str | None = None) -> tuple[Any, Any, Any]:
    settings, pipeline = load(config)
    from pipelines.backends import make_registry

    if name:
        pipeline = pipeline.model_copy(update={"model_name": name})
    return settings, pipeline, make_registry(settings, pipeline)


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Registered model (default: the config's model_name).")] = None,
    config: ConfigOption = None,
) -> None:
    """Every version with its approval status, gate and approver."""
    from contracts import tags as T

    _, pipeline, registry = _registry(config, name)
    table = Table(title=f"{registry.model_name} ({pipeline.experiment})")
    for column in ("version", "status", "gate", "approved by", "aliases", "release request"):
        table.add_column(column)
    for version in registry.versions():
        table.add_row(version.version, version.status, version.tags.get(T.GATE, ""),
                      version.tags.get(T.APPROVED_BY, ""), ", ".join(version.aliases),
                      "yes" if version.tags.get(T.RELEASE_REQUEST) else "")
    out.print(table)


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()],
                config: ConfigOption = None) -> None:
    """One version: its tags and description."""
    _, _, registry = _registry(config, name)
    described = registry.find(version)
    if described is None:
        fail(f"{name} version {version}: no such version in {registry.tracking_uri}", EXIT_USAGE)
    out.print(f"[bold]{name} version {version}[/]  aliases: {', '.join(described.aliases) or '-'}")
    for key, value in sorted(described.tags.items()):
        out.print(f"  {key} = {value}")
    out.print("")
    out.print(described.description or "")


def _decide(name: str, version: str, status: str, note: str | None, config: Path | None) -> None:
    from mlflow.exceptions import MlflowException

    from contracts import tags as T

    settings, _, registry = _registry(config, name)
    if not settings.tracking_uri.startswith(("http://", "https://")):
        fail("approvals go through the MLflow server, which knows who you are: start it with `make ui`, then "
              "set GENAIOPS_MLFLOW_TRACKING_URI=http://127.0.0.1:5000 and MLFLOW_TRACKING_USERNAME/PASSWORD", EXIT_USAGE)
    try:
        if note:
            registry.set_tag(version, T.APPROVAL_NOTE, note)
        registry.set_tag(version, T.APPROVAL_STATUS, status)
    except MlflowException as exc:
        fail(f"{name} version {version}: {exc.message if hasattr(exc, 'message') else exc}", EXIT_FAILED)
    tags = registry.get_version(version).tags
    out.print(f"{name} version {version}: {tags.get(T.APPROVAL_STATUS)} by {tags.get(T.APPROVED_BY, '?')}")


@app.command()
def approve(name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()],
            note: Annotated[str | None, typer.Option(help="Why; kept with the approval.")] = None,
            config: ConfigOption = None) -> None:
    """Approve a version, as the signed-in user (MLFLOW_TRACKING_USERNAME), under the approval rules."""
    from contracts import tags as T

    _decide(name, version, T.APPROVED, note, config)


@app.command()
def reject(name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()],
           note: Annotated[str | None, typer.Option(help="Why; kept with the rejection.")] = None,
           config: ConfigOption = None) -> None:
    """Reject a version, as the signed-in user, under the approval rules."""
    from contracts import tags as T

    _decide(name, version, T.REJECTED, note, config)


@app.command()
def audit(name: Annotated[str, typer.Argument()], config: ConfigOption = None,
          as_json: Annotated[bool, typer.Option("--json", help="JSON Lines, one entry a line.")] = False) -> None:
    """The append-only audit log of a model: every registry write, accepted or refused, and the watcher's decisions."""
    settings, _ = load(config)
    from pipelines.backends import make_audit

    if as_json:
        for entry in make_audit(settings).entries(name):
            out.print(entry.model_dump_json(), soft_wrap=True)
        return
    table = Table(title=f"audit log: {name}")
    for column in ("time (UTC)", "version", "user", "write", "tag or alias", "old → new", "outcome", "route"):
        table.add_column(column)
    for entry in make_audit(settings).entries(name):
        table.add_row(entry.at[:19], entry.version, entry.user, entry.action, entry.key, f"{entry.old} → {entry.new}",
                      entry.outcome, entry.route)
    out.print(table)


@approvals_app.command("watch")
def approvals_watch(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[int, typer.Option(help="Seconds between passes.", min=1)] = 30,
) -> None:
    """Turn approvals that stand into release requests; send the others back to pending."""
    go_offline()
    settings, pipeline = load(config)
    prefect_home(settings)
    from pipelines.flows import approval_watch

    while not STOPPING.is_set():
        for decision in approval_watch(pipeline):
            out.print(f"v{decision['version']}: {decision['action']} ({decision['detail']})")
        if once:
            return
        STOPPING.wait(interval)  # a signal ends the wait at once, even if a flow run swallowed its interrupt
    raise typer.Exit(130)
