"""The `genaiops` command line. Heavy libraries are imported inside commands so `--help` stays fast."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from pipelines.offline import go_offline

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

# soft_wrap: never break a URL or a path across lines, whatever the terminal width.
# Piped output (CI logs, `| tee`) gets room for the tables instead of the 80 columns rich assumes.
_WIDTH = None if sys.stdout.isatty() else 140
out = Console(soft_wrap=True, highlight=False, width=_WIDTH)
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_WIDTH)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Pipeline config YAML (default: $GENAIOPS_CONFIG, else the embedded defaults)."),
]

EXIT_FAILED = 1  # the run ran and failed: bad data, a failed gate
EXIT_USAGE = 2  # the run could not start: bad config, bad arguments


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _load(config_path: Path | None) -> tuple[Any, Any]:
    from pipelines.settings import ConfigError, load_config, load_settings

    try:
        settings = load_settings()
        return settings, load_config(config_path or settings.config)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print the merged, validated settings and pipeline config."""
    import yaml

    from pipelines.settings import as_document

    settings, pipeline = _load(config)
    document = as_document(settings, pipeline)
    if as_json:
        out.print_json(data=document)
    else:
        out.print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the pipeline config (what a YAML config may contain)."""
    from pipelines.settings import PipelineConfig

    out.print_json(json.dumps(PipelineConfig.model_json_schema()))


@data_app.command("generate")
def data_generate(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSON Lines file.")],
    rows: Annotated[int, typer.Option(min=1, help="How many records.")] = 720,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the shipped sample's).")] = None,
) -> None:
    """Generate dialogue → summary records (the shipped sample is rows=720 with the default seed)."""
    from steps.sample_data import SAMPLE_SEED, generate_records, write_jsonl

    count = write_jsonl(generate_records(rows, SAMPLE_SEED if seed is None else seed), out_path)
    out.print(f"wrote {count} records to {out_path}")


@data_app.command("validate")
def data_validate(
    source: Annotated[str, typer.Argument(help="A .jsonl, .csv or .parquet path, or an s3:// URI (aws backend).")],
    config: ConfigOption = None,
) -> None:
    """Check a file against the configured data contract; exit 0 if it passes, 1 if not."""
    go_offline()
    settings, pipeline = _load(config)
    from pipelines.backends import make_store
    from steps.base_model import BaseModelError, resolve_base_model, token_counter
    from steps.data import DataSourceError, check_records
    from steps.data_sources import read_source

    try:
        base_path = resolve_base_model(pipeline.finetune.base_model, settings.root / "models")
        data, name = read_source(source, make_store(settings))
        _, report = check_records(data, name, pipeline.data, token_counter(base_path))
    except BaseModelError as exc:
        _fail(str(exc), EXIT_USAGE)
    except DataSourceError as exc:
        _fail(str(exc), EXIT_FAILED)
    table = Table(title=f"{name}: {report.summary()}")
    for column in ("check", "expectation", "result", "bad records", "first records"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(check.description, check.expectation, "[green]pass[/]" if check.success else "[red]FAIL[/]",
                      str(check.unexpected_count), ", ".join(map(str, check.rows)) or (check.observed or ""))
    out.print(table)
    if report.dropped_duplicates:
        out.print(f"dropped duplicates (records): {report.dropped_duplicates[:20]}")
    if report.redacted_pii:
        out.print(f"redacted personal data (records): {report.redacted_pii[:20]}")
    if not report.success:
        _fail(f"{name} breaks the data contract: {len(report.failed)} expectation(s) failed", EXIT_FAILED)
    out.print("[green]passed[/]")


@app.command()
def retrain(config: ConfigOption = None) -> None:
    """Run the retrain flow: prepare → fine-tune → evaluate → register for approval."""
    go_offline()
    settings, pipeline = _load(config)
    _prefect_home(settings)
    from pipelines.flows import GateFailedError
    from pipelines.flows import retrain as retrain_flow
    from steps.base_model import BaseModelError
    from steps.data import DataSourceError, DataValidationError
    from steps.finetune import FinetuneError

    err.print(f"workspace: {settings.root}  ·  MLflow store: {settings.tracking_uri}")
    try:
        result = retrain_flow(pipeline)
    except (BaseModelError, FinetuneError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except (DataSourceError, DataValidationError, GateFailedError) as exc:
        _fail(str(exc), EXIT_FAILED)
    _print_result(result, settings, pipeline)


def _print_result(result: Any, settings: Any, pipeline: Any) -> None:
    from model_registry import tags as T

    table = Table(title=f"{result.model_name} version {result.version}: candidate vs base model (held-out data)")
    for column in ("metric", "candidate", "base", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in ("rougeL", "rouge1", "rouge2", "bleu", "general.accuracy", "empty_rate"):
        if name in result.candidate and name in result.base:
            cand, base = result.candidate[name], result.base[name]
            table.add_row(name, f"{cand:.4f}", f"{base:.4f}", f"{cand - base:+.4f}")
    out.print(table)
    note = " (inputs unchanged: the existing version was reused)" if result.reused else ""
    out.print(f"registered: [bold]{result.model_name}[/] version [bold]{result.version}[/], "
              f"status [bold]{result.status}[/], gate {result.gate}{note}")
    out.print(f"gate report:    {result.report_uri}")
    out.print(f"MLflow run:     {result.run_url}")
    out.print(f"model version:  {result.version_url}")
    if result.status == T.PENDING:
        approvers = " or ".join(pipeline.approval.approvers)
        passwords = "GENAIOPS_UI_PASSWORDS" if settings.ui_passwords else settings.root / "auth" / "passwords.json"
        out.print(f"to approve: run [bold]make ui[/], sign in as an approver ([bold]{approvers}[/]; passwords in "
                  f"{passwords}, written by make ui), open the model version above and set the tag "
                  f"[bold]{T.APPROVAL_STATUS}[/] to [bold]{T.APPROVED}[/] (or {T.REJECTED}).")


@app.command()
def evaluate(
    model_uri: Annotated[str, typer.Option("--model-uri", help="models:/NAME/VERSION or models:/NAME@ALIAS")],
    config: ConfigOption = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write the gate report.")] = None,
) -> None:
    """Evaluate a registered version on demand: against its base model and the champion, with the gates."""
    go_offline()
    settings, pipeline = _load(config)
    import re

    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w-]+))", model_uri)
    if match is None:
        _fail(f"--model-uri: {model_uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS", EXIT_USAGE)
    from model_registry import tags as T
    from pipelines.backends import make_registry, make_store
    from steps.artifacts import ArtifactNotFoundError
    from steps.data import load_prepared
    from steps.evaluate import decide
    from steps.evaluate import evaluate as run_evaluation
    from steps.evaluate_report import write_report
    from steps.generation import load_model

    name, number, alias = match.groups()
    registry = make_registry(settings, pipeline.model_copy(update={"model_name": name}))
    try:
        version = number or registry.client.get_model_version_by_alias(name, alias).version
        described = registry.get_version(str(version))
    except Exception as exc:  # MLflow raises RestException / MlflowException subclasses
        _fail(f"--model-uri: {model_uri} not found in {settings.tracking_uri}: {exc}", EXIT_USAGE)
    candidate, model_config = registry.load_version(described.version)
    if not model_config.get("base_model_path"):
        _fail(f"{model_uri} records no local base model to compare against", EXIT_USAGE)
    store = make_store(settings)
    try:
        dataset = load_prepared(store, described.tags[T.DATASET_HASH])
    except (KeyError, ArtifactNotFoundError) as exc:
        _fail(f"{model_uri}: its prepared dataset is not in the artifact store ({exc})", EXIT_FAILED)
    champion = registry.load_alias(T.CHAMPION)
    if champion is not None and champion[1] == described.version:
        champion = None  # a version is not compared with itself
    base = load_model(model_config["base_model_path"], None, name="base")
    result = run_evaluation(candidate, base, dataset.splits["test"], pipeline.evaluate,
                            champion[0] if champion else None, champion[1] if champion else None)
    report = decide(result, pipeline.evaluate.gates, pipeline.evaluate.bootstrap)
    folder = out_dir or settings.root / "reports" / f"evaluate-{name}-v{described.version}"
    page = write_report(result, report, folder, dataset_hash=dataset.hash, bootstrap=pipeline.evaluate.bootstrap)
    table = Table(title=f"{name} version {described.version} on {result.n_samples} held-out samples")
    for column in ("gate", "metric", "rule", "threshold", "value", "95% interval", "result"):
        table.add_column(column)
    for check in report.checks:
        interval = f"[{check.ci_low:+.4f}, {check.ci_high:+.4f}]" if check.ci_low is not None else ""
        verdict = "skipped" if check.skipped else ("[green]pass[/]" if check.passed else "[red]FAIL[/]")
        table.add_row(check.kind, check.metric, check.rule, f"{check.threshold:g}", f"{check.value:+.4f}", interval,
                      verdict)
    out.print(table)
    out.print(f"gate report: {page}")
    if not report.passed:
        _fail(f"{model_uri} fails its gates: {report.summary()}", EXIT_FAILED)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Serve the MLflow UI on 127.0.0.1 with sign-in and the approval rules (what `make ui` runs)."""
    go_offline()
    settings, pipeline = _load(None)
    from model_registry.auth_setup import parse_passwords, prepare, server_command

    mlflow = shutil.which("mlflow", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if mlflow is None:
        _fail("the mlflow command is not installed in this environment", EXIT_USAGE)
    settings.root.mkdir(parents=True, exist_ok=True)
    try:
        given = parse_passwords(settings.ui_passwords.get_secret_value()) if settings.ui_passwords else {}
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    server = prepare(settings.root / "auth", approval=pipeline.approval, audit=_audit_spec(settings),
                     passwords=given)
    command = server_command(mlflow, backend_store_uri=settings.tracking_uri,
                             artifact_root=settings.mlflow_artifact_root, port=port)
    err.print(f"MLflow UI: http://127.0.0.1:{port}  (store {settings.tracking_uri}); Ctrl-C stops it")
    approval = pipeline.approval
    err.print(f"users: {', '.join(server.users)}; approvers: {', '.join(approval.approvers)}; "
              f"pipeline: {approval.pipeline_account}; watcher: {approval.watcher_account}; "
              f"release: {approval.release_account}; admin: {approval.admin_account}")
    err.print(f"passwords in {server.passwords_file}")
    from pipelines.processes import run_foreground

    raise typer.Exit(run_foreground(command, {**os.environ, **server.env}))


def _audit_spec(settings: Any) -> dict[str, Any]:
    """Where the server app appends audit entries: the same artifact store the pipeline uses."""
    if settings.backend == "aws":
        return {"kind": "s3", "bucket": settings.artifact_bucket, "prefix": settings.artifact_prefix,
                "region": settings.region, "kms_key_id": settings.kms_key_id}
    return {"kind": "local", "root": str(settings.root / "artifacts")}


def _registry(config: Path | None, name: str | None = None) -> tuple[Any, Any, Any]:
    settings, pipeline = _load(config)
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
    from model_registry import tags as T

    _, pipeline, registry = _registry(config, name)
    table = Table(title=f"{registry.model_name} ({pipeline.experiment})")
    for column in ("version", "status", "gate", "approved by", "aliases", "release request"):
        table.add_column(column)
    for version in registry.versions():
        aliases = registry.client.get_model_version(registry.model_name, version.version).aliases
        table.add_row(version.version, version.status, version.tags.get(T.GATE, ""),
                      version.tags.get(T.APPROVED_BY, ""), ", ".join(aliases),
                      "yes" if version.tags.get(T.RELEASE_REQUEST) else "")
    out.print(table)


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()],
                config: ConfigOption = None) -> None:
    """One version: its tags and description."""
    _, _, registry = _registry(config, name)
    try:
        described = registry.client.get_model_version(name, version)
    except Exception as exc:  # RestException / MlflowException
        _fail(f"{name} version {version}: {exc}", EXIT_USAGE)
    out.print(f"[bold]{name} version {version}[/]  aliases: {', '.join(described.aliases) or '-'}")
    for key, value in sorted((described.tags or {}).items()):
        out.print(f"  {key} = {value}")
    out.print("")
    out.print(described.description or "")


def _decide(name: str, version: str, status: str, note: str | None, config: Path | None) -> None:
    from mlflow.exceptions import MlflowException

    from model_registry import tags as T

    settings, _, registry = _registry(config, name)
    if not settings.tracking_uri.startswith(("http://", "https://")):
        _fail("approvals go through the MLflow server, which knows who you are: start it with `make ui`, then "
              "set GENAIOPS_MLFLOW_TRACKING_URI=http://127.0.0.1:5000 and MLFLOW_TRACKING_USERNAME/PASSWORD", EXIT_USAGE)
    try:
        if note:
            registry.set_tag(version, T.APPROVAL_NOTE, note)
        registry.set_tag(version, T.APPROVAL_STATUS, status)
    except MlflowException as exc:
        _fail(f"{name} version {version}: {exc.message if hasattr(exc, 'message') else exc}", EXIT_FAILED)
    tags = registry.get_version(version).tags
    out.print(f"{name} version {version}: {tags.get(T.APPROVAL_STATUS)} by {tags.get(T.APPROVED_BY, '?')}")


@app.command()
def approve(name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()],
            note: Annotated[str | None, typer.Option(help="Why; kept with the approval.")] = None,
            config: ConfigOption = None) -> None:
    """Approve a version, as the signed-in user (MLFLOW_TRACKING_USERNAME), under the approval rules."""
    from model_registry import tags as T

    _decide(name, version, T.APPROVED, note, config)


@app.command()
def reject(name: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()],
           note: Annotated[str | None, typer.Option(help="Why; kept with the rejection.")] = None,
           config: ConfigOption = None) -> None:
    """Reject a version, as the signed-in user, under the approval rules."""
    from model_registry import tags as T

    _decide(name, version, T.REJECTED, note, config)


@app.command()
def audit(name: Annotated[str, typer.Argument()], config: ConfigOption = None,
          as_json: Annotated[bool, typer.Option("--json", help="JSON Lines, one entry a line.")] = False) -> None:
    """The append-only audit log of a model: every registry write, accepted or refused, and the watcher's decisions."""
    settings, _ = _load(config)
    from model_registry.audit import AuditLog
    from pipelines.backends import make_store

    if as_json:
        for entry in AuditLog(make_store(settings)).entries(name):
            out.print(entry.model_dump_json(), soft_wrap=True)
        return
    table = Table(title=f"audit log: {name}")
    for column in ("time (UTC)", "version", "user", "write", "tag or alias", "old → new", "outcome", "route"):
        table.add_column(column)
    for entry in AuditLog(make_store(settings)).entries(name):
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
    settings, pipeline = _load(config)
    _prefect_home(settings)
    from pipelines.flows import approval_watch

    while not STOPPING.is_set():
        for decision in approval_watch(pipeline):
            out.print(f"v{decision['version']}: {decision['action']} ({decision['detail']})")
        if once:
            return
        STOPPING.wait(interval)  # a signal ends the wait at once, even if a flow run swallowed its interrupt
    raise typer.Exit(130)


# --- endpoints -----------------------------------------------------------------------------------

def _endpoints() -> Any:
    from serving.local import LocalEndpoints

    settings, _ = _load(None)
    if settings.backend != "local":
        _fail("`genaiops endpoints` manages local endpoints; on the aws backend endpoints are SageMaker's", EXIT_USAGE)
    # Variants given as models:/ URIs load from the workspace's registry.
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
    return LocalEndpoints(settings.root)


def _variant_option(text: str, *, shadow: bool) -> dict[str, Any]:
    """NAME=MODEL[:WEIGHT] (production) or NAME=MODEL[:PERCENT] (shadow)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        _fail(f"{'--shadow' if shadow else '--variant'} {text!r}: expected NAME=MODEL[:{'PERCENT' if shadow else 'WEIGHT'}]",
              EXIT_USAGE)
    model, number = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and head and not tail.startswith("/"):
        try:
            number = float(tail)
            model = head
        except ValueError:
            pass
    variant: dict[str, Any] = {"name": name, "model": model, "shadow": shadow}
    if number is not None:
        variant["sampling_percentage" if shadow else "weight"] = number
    return variant


def _state_table(states: list[Any]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("endpoint", "status", "url", "variant", "kind", "weight/%", "variant status", "restarts"):
        table.add_column(column)
    for state in states:
        rows = state.variants or [None]
        for index, variant in enumerate(rows):
            head = [state.name, state.status, state.url] if index == 0 else ["", "", ""]
            if variant is None:
                table.add_row(*head, "", "", "", "", "")
                continue
            share = f"{variant.weight:g}" if not variant.shadow else "shadow"
            table.add_row(*head, variant.name, "shadow" if variant.shadow else "production", share,
                          variant.status, str(variant.restarts))
    return table


@endpoints_app.command("create")
def endpoints_create(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    variant: Annotated[list[str], typer.Option("--variant", "-v",
                                               help="Production variant NAME=MODEL[:WEIGHT]; repeat for more. MODEL is "
                                                    "an MLflow URI (models:/name/3, models:/name@champion) or folder, "
                                                    "or a Hugging Face folder.")],
    shadow: Annotated[list[str] | None, typer.Option("--shadow", "-s",
                                                     help="Shadow variant NAME=MODEL[:PERCENT mirrored].")] = None,
    shadow_share: Annotated[float, typer.Option(help="Share of the time a shadow may compute while production has "
                                                     "requests in flight (0: only when production is idle).",
                                                min=0, max=1)] = 0.1,
    capture: Annotated[float, typer.Option(help="Percentage of requests captured (0 turns capture off).",
                                           min=0, max=100)] = 100.0,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.", min=0.001)] = 60.0,
    port: Annotated[int, typer.Option(help="Router port on 127.0.0.1 (0: a free one).")] = 0,
    max_batch_size: Annotated[int, typer.Option(help="Requests batched into one generate call.", min=1)] = 8,
) -> None:
    """Start a local endpoint and wait until it is InService."""
    from pydantic import ValidationError

    from serving.endpoint import EndpointConfig
    from serving.local import EndpointError

    go_offline()
    endpoints = _endpoints()
    variants = [_variant_option(v, shadow=False) for v in variant] + [_variant_option(v, shadow=True)
                                                                      for v in shadow or []]
    for item in variants:
        item["max_batch_size"] = max_batch_size
        if item["shadow"]:
            item["share_while_busy"] = shadow_share
    try:
        config = EndpointConfig.model_validate({
            "name": name, "variants": variants, "timeout_s": timeout, "port": port,
            "capture": {"enabled": capture > 0, "sampling_percentage": capture}})
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"endpoint {name}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}".replace(": : ", ": "),
              EXIT_USAGE)

    def progress(state: Any) -> None:
        parts = ", ".join(f"{v.name} {v.status}" for v in state.variants)
        err.print(f"{state.name}: {state.status}" + (f" ({parts})" if parts else ""))

    try:
        state = endpoints.create(config, progress=progress)
    except EndpointError as exc:
        _fail(str(exc), EXIT_FAILED)
    out.print(f"endpoint {state.name} InService at {state.url}")
    out.print(f"  invoke:  genaiops invoke {state.name} --data '{{\"inputs\": \"...\"}}'")
    out.print(f"  boto3:   boto3.client('sagemaker-runtime', endpoint_url='{state.url}').invoke_endpoint("
              f"EndpointName='{state.name}', ...)")
    out.print(f"  capture: {state.capture}   metrics: {state.metrics}")


@endpoints_app.command("list")
def endpoints_list(as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """Every local endpoint of the workspace, with its variants."""
    states = _endpoints().list()
    if as_json:
        out.print_json(data=[s.model_dump() for s in states])
    elif not states:
        out.print("no endpoints; create one with `genaiops endpoints create NAME --variant NAME=MODEL`")
    else:
        out.print(_state_table(states))


@endpoints_app.command("describe")
def endpoints_describe(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """One endpoint: status, URL, variants with weights, restarts and recent events."""
    from serving.local import EndpointError

    try:
        state = _endpoints().describe(name)
    except EndpointError as exc:
        _fail(str(exc), EXIT_FAILED)
    if as_json:
        out.print_json(data=state.model_dump())
        return
    out.print(_state_table([state]))
    if state.failure_reason:
        out.print(f"failure: {state.failure_reason}")
    for event in state.events[-10:]:
        out.print(f"  {event}")


@endpoints_app.command("update-weights")
def endpoints_update_weights(
    name: str,
    weights: Annotated[list[str], typer.Argument(help="VARIANT=WEIGHT for each production variant to change.")],
) -> None:
    """Change traffic weights while serving (UpdateEndpointWeightsAndCapacities)."""
    from serving.local import EndpointError

    parsed: dict[str, float] = {}
    for item in weights:
        variant, _, value = item.partition("=")
        try:
            parsed[variant] = float(value)
        except ValueError:
            _fail(f"{item!r}: expected VARIANT=WEIGHT with a number", EXIT_USAGE)
        if parsed[variant] < 0:
            _fail(f"{item!r}: a weight cannot be negative", EXIT_USAGE)
    try:
        state = _endpoints().update_weights(name, parsed)
    except EndpointError as exc:
        _fail(str(exc), EXIT_FAILED)
    out.print(_state_table([state]))


@endpoints_app.command("delete")
def endpoints_delete(name: str) -> None:
    """Stop the endpoint's processes and remove it (capture files and metrics stay)."""
    from serving.local import EndpointError

    try:
        _endpoints().delete(name)
    except EndpointError as exc:
        _fail(str(exc), EXIT_FAILED)
    out.print(f"endpoint {name} deleted")


@app.command("invoke")
def invoke(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Request body (JSON), or @FILE.")],
    target_variant: Annotated[str | None, typer.Option(help="Send to this production variant.")] = None,
    inference_id: Annotated[str | None, typer.Option(help="Recorded with the captured request.")] = None,
) -> None:
    """Invoke a local endpoint through its SageMaker Runtime route; prints the answer."""
    import urllib.error
    import urllib.request

    from serving.local import EndpointError
    from serving.protocol import INFERENCE_ID, INVOKED_VARIANT, TARGET_VARIANT

    try:
        state = _endpoints().describe(endpoint)
    except EndpointError as exc:
        _fail(str(exc), EXIT_FAILED)
    if state.status not in ("InService", "Updating"):
        _fail(f"endpoint {endpoint} is {state.status}", EXIT_FAILED)
    body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target_variant:
        headers[TARGET_VARIANT] = target_variant
    if inference_id:
        headers[INFERENCE_ID] = inference_id
    request = urllib.request.Request(f"{state.url}/endpoints/{endpoint}/invocations", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            err.print(f"variant: {response.headers.get(INVOKED_VARIANT)}")
            out.print(response.read().decode(), markup=False)
    except urllib.error.HTTPError as exc:
        answer = exc.read()
        try:
            message = json.loads(answer).get("message", answer.decode())
        except ValueError:
            message = answer.decode(errors="replace")
        _fail(f"{exc.code} {exc.headers.get('x-amzn-ErrorType', '')}: {message}", EXIT_FAILED)


# --- monitoring ---------------------------------------------------------------------------------------

def _prefect_home(settings: Any) -> None:
    """Flow-run history stays in the workspace unless the user points Prefect elsewhere."""
    if "PREFECT_HOME" not in os.environ:
        (settings.root / "prefect").mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(settings.root / "prefect")


@monitor_app.command("run")
def monitor_run(endpoint: Annotated[str, typer.Argument(help="A local endpoint.")], config: ConfigOption = None) -> None:
    """Publish the drift and quality metrics of new capture; evaluate the endpoint's alarms and run their actions
    (local), or put them and its dashboard to CloudWatch (aws)."""
    go_offline()
    settings, pipeline = _load(config)
    _prefect_home(settings)
    from pipelines.flows.monitor import MonitorError, monitor

    try:
        result = monitor(endpoint, pipeline)
    except MonitorError as exc:
        _fail(str(exc), EXIT_USAGE)
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
    from monitoring.alarms import AlarmStore, describe
    from monitoring.monitor import alarm_records
    from pipelines.settings import load_settings

    records = alarm_records(AlarmStore(load_settings().root / "alarms"), endpoint)
    if as_json:
        out.print(json.dumps([describe(r) for r in records], indent=2), soft_wrap=True)
        return
    table = Table(title=f"alarms{' of ' + endpoint if endpoint else ''}")
    for column in ("alarm", "state", "since", "threshold", "actions", "reason"):
        table.add_column(column)
    colours = {"OK": "green", "ALARM": "red", "INSUFFICIENT_DATA": "yellow"}
    for record in records:
        spec = record.spec
        table.add_row(spec.name, f"[{colours[record.state]}]{record.state}[/]", record.updated[:19],
                      f"{spec.comparison} {spec.threshold:g}", ", ".join(a.kind for a in spec.actions),
                      record.reason[:120])
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
    from datetime import UTC, datetime

    from monitoring.alarms import AlarmStore
    from monitoring.dashboards import panels, render_local
    from monitoring.metrics import SqliteMetricSink
    from monitoring.monitor import alarm_records
    from serving.local import EndpointError, LocalEndpoints

    settings, pipeline = _load(config)
    try:
        state = LocalEndpoints(settings.root).describe(endpoint)
    except EndpointError as exc:
        _fail(f"{exc}; `genaiops endpoints list` shows the endpoints", EXIT_USAGE)
    page = render_local(endpoint, panels(endpoint, [v.name for v in state.variants]),
                        SqliteMetricSink(settings.root / "metrics.db"),
                        alarm_records(AlarmStore(settings.root / "alarms"), endpoint),
                        out_dir or settings.root / "dashboards" / endpoint, end=datetime.now(UTC), hours=hours,
                        period=period or pipeline.monitoring.period)
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
        _fail(f"no alarm named {name!r}; `genaiops alarms list` shows them", EXIT_USAGE)
    for change in record.history:
        out.print(f"{change.at}  {change.old} -> {change.new}  {change.reason}")
    if not record.history:
        out.print(f"{name}: {record.state} ({record.reason}); no state change yet")


STOPPING = threading.Event()  # set by SIGTERM or SIGINT: loops end after what they are doing


def _stop(signum: int, frame: object) -> None:
    STOPPING.set()
    raise KeyboardInterrupt  # unwind as Ctrl-C does, so that what the command started is stopped on the way out


def main() -> None:
    import signal

    # SIGTERM ends a command as Ctrl-C does: Prefect's temporary API server, which a flow run starts as a
    # child process, is stopped at exit, and nothing the command started is left running. SIGINT is set too:
    # a command started in the background by a script inherits it ignored.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    app()


if __name__ == "__main__":
    main()
