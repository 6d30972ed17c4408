"""`genaiops config`, `data`, `retrain` and `evaluate`: the lifecycle up to a registered version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from model_registry.auth_setup import redacted
from pipelines.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConfigOption,
    app,
    config_app,
    data_app,
    err,
    fail,
    load,
    out,
    prefect_home,
)
from pipelines.offline import go_offline


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print the merged, validated settings and pipeline config."""
    import yaml

    from pipelines.settings import as_document

    settings, pipeline = load(config)
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
    perturb: Annotated[str | None, typer.Option(
        help="Make every summary unfaithful the same way (invented_name, wrong_number, wrong_day, wrong_place, "
             "negation, reversal) where it can be: data to show the gate refusing what a model learns from it.")] = None,
) -> None:
    """Generate dialogue → summary records (the shipped sample is rows=720 with the default seed)."""
    import random

    from steps.perturb import PERTURBATIONS
    from steps.sample_data import SAMPLE_SEED, generate_records, write_jsonl

    if perturb is not None and perturb not in PERTURBATIONS:
        fail(f"--perturb: unknown {perturb!r}; choose from {', '.join(PERTURBATIONS)}", EXIT_USAGE)
    records = list(generate_records(rows, SAMPLE_SEED if seed is None else seed))
    changed = 0
    if perturb is not None:
        rng = random.Random(seed or 0)
        for record in records:
            wrong = PERTURBATIONS[perturb](rng, record["dialogue"], record["summary"])
            if wrong and wrong != record["summary"]:
                record["summary"], changed = wrong, changed + 1
    count = write_jsonl(records, out_path)
    out.print(f"wrote {count} records to {out_path}" + (f" ({changed} made unfaithful: {perturb})" if perturb else ""))


@data_app.command("validate")
def data_validate(
    source: Annotated[str, typer.Argument(help="A .jsonl, .csv or .parquet path, or an s3:// URI (aws backend).")],
    config: ConfigOption = None,
) -> None:
    """Check a file against the configured data contract; exit 0 if it passes, 1 if not."""
    go_offline()
    settings, pipeline = load(config)
    from pipelines.backends import make_store
    from steps.base_model import BaseModelError, resolve_base_model, token_counter
    from steps.data import DataSourceError, check_records
    from steps.data_sources import read_source

    try:
        base_path = resolve_base_model(pipeline.finetune.base_model, settings.root / "models")
        data, name = read_source(source, make_store(settings))
        _, report = check_records(data, name, pipeline.data, token_counter(base_path))
    except BaseModelError as exc:
        fail(str(exc), EXIT_USAGE)
    except DataSourceError as exc:
        fail(str(exc), EXIT_FAILED)
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
        fail(f"{name} breaks the data contract: {len(report.failed)} expectation(s) failed", EXIT_FAILED)
    out.print("[green]passed[/]")


def _flow(run: Any, pipeline: Any, **options: Any) -> Any:
    """Run a flow that retrains first; a configuration mistake or an expected failure is one line, not a traceback."""
    from pipelines.flows import GateFailedError, PreflightError
    from pipelines.flows.evaluation import EvaluationSetupError
    from pipelines.flows.lifecycle import DemoApprovalError
    from steps.base_model import BaseModelError
    from steps.data import DataSourceError, DataValidationError
    from steps.finetune import FinetuneError

    try:
        return run(pipeline, **options)
    except (BaseModelError, FinetuneError, PreflightError, EvaluationSetupError, DemoApprovalError) as exc:
        fail(str(exc), EXIT_USAGE)
    except (DataSourceError, DataValidationError, GateFailedError) as exc:
        fail(str(exc), EXIT_FAILED)


@app.command()
def retrain(
    config: ConfigOption = None,
    plan_only: Annotated[bool, typer.Option("--plan", help="aws backend: check what the run needs, print what it "
                                                           "creates and costs at most, and stop.")] = False,
) -> None:
    """Run the retrain flow: prepare → fine-tune → evaluate → register for approval. On the aws backend the run
    first checks, with read calls only, what it needs (`--plan` prints those checks and what it creates, and stops)."""
    go_offline()
    settings, pipeline = load(config)
    prefect_home(settings)
    from pipelines.flows import retrain as retrain_flow

    if plan_only:
        from pipelines.backends import retrain_plan

        planned = retrain_plan(settings, pipeline)
        if planned is None:
            fail("--plan: the local backend creates nothing on AWS and pays for nothing; set GENAIOPS_BACKEND=aws",
                 EXIT_USAGE)
        _print_plan(planned)
        if not planned.ready:
            fail("cannot start: " + "; ".join(f"{c.name}: {c.detail}" for c in planned.checks if c.state == "failed"),
                 EXIT_USAGE)
        return
    err.print(f"workspace: {settings.root}  ·  MLflow store: {redacted(settings.tracking_uri)}")
    _print_result(_flow(retrain_flow, pipeline), settings, pipeline)


def _print_plan(planned: Any) -> None:
    colours = {"ok": "green", "failed": "red", "unknown": "yellow"}
    out.print(f"[bold]plan: retrain {planned.model} on aws ({planned.region})[/]")
    out.print("checks (read-only):")
    for check in planned.checks:
        mark = "FAILED" if check.state == "failed" else check.state
        out.print(f"  [{colours[check.state]}]{mark:<8}[/] {check.name}: {escape(check.detail)}", soft_wrap=True)
    out.print("creates:")
    for item in planned.creates:
        hardware = f" on {item.instances} x {item.instance_type}, at most {item.max_seconds} s" if item.instances else ""
        out.print(f"  {item.kind}: {item.name}{hardware} ({item.detail})", soft_wrap=True, markup=False)
    out.print(f"at most {planned.instance_hours:.2f} instance-hours: "
              + ", ".join(f"{p.instance_hours:.2f} {p.instance_type} ({p.kind})" for p in planned.creates if p.instances))


@app.command("run")
def run_lifecycle(config: ConfigOption = None) -> None:
    """The whole lifecycle (what `make run` runs on the local backend): retrain → gate → register → approval →
    shadow release → held-out traffic → rollout decision → promote; a second run with nothing new reuses
    everything."""
    go_offline()
    settings, pipeline = load(config)
    prefect_home(settings)
    from contracts import tags as T
    from pipelines.flows.lifecycle import lifecycle

    err.print(f"workspace: {settings.root}  ·  MLflow store: {redacted(settings.tracking_uri)}")
    result = _flow(lifecycle, pipeline)
    _print_result(result.retrain, settings, pipeline, approval_hint=False)
    out.print(f"[bold]{pipeline.model_name}: the lifecycle[/]" + (" (nothing new: every stage reused)"
                                                                 if result.reused and not result.stopped else ""))
    for stage in result.stages:
        out.print(f"  {stage.name:<16}{stage.outcome}" + ("  [reused]" if stage.reused else ""), soft_wrap=True,
                  markup=False)
    approvers = ", ".join(a for a in pipeline.approval.approvers if a != pipeline.approval.demo_account)
    passwords = "GENAIOPS_UI_PASSWORDS" if settings.ui_passwords else settings.root / "auth" / "passwords.json"
    ui = f"{settings.mlflow_ui_url}/#/models/{pipeline.model_name}/versions/{result.retrain.version}"
    out.print("where to look:")
    out.print(f"  MLflow UI   make ui, then {ui}  (approver: {approvers}; passwords in {passwords})")
    if result.stopped:
        pending = result.retrain.status == T.PENDING or "PendingManualApproval" in result.stopped
        out.print(f"stopped: {result.stopped}")
        if pending:
            out.print(f"to approve: sign in as {approvers}, open the model version above and set the tag "
                      f"[bold]{T.APPROVAL_STATUS}[/] to [bold]{T.APPROVED}[/]; then [bold]make run[/] carries on")
            return
        raise typer.Exit(EXIT_FAILED)
    champion = f"v{result.champion}" if result.champion else "no version yet"
    out.print(f"  endpoint    {result.endpoint_url or '-'}  ({result.endpoint}; champion {champion})")
    if result.endpoint_url:
        out.print(f"  invoke      genaiops invoke {result.endpoint} -d '{{\"inputs\": \"Ana: Is the parcel here? "
                  f"Ben: Yes, it came at noon.\"}}'", markup=False)
        out.print(f"  boto3       boto3.client('sagemaker-runtime', endpoint_url='{result.endpoint_url}')"
                  f".invoke_endpoint(EndpointName='{result.endpoint}', ContentType='application/json', Body=...)",
                  markup=False)
    if result.dashboard:
        out.print(f"  dashboard   {result.dashboard}  (genaiops dashboard {result.endpoint} refreshes it)")
    out.print(f"  audit log   genaiops audit {pipeline.model_name}")
    out.print("  rollout     genaiops rollout status")


def _print_result(result: Any, settings: Any, pipeline: Any, approval_hint: bool = True) -> None:
    from contracts import tags as T

    table = Table(title=f"{result.model_name} version {result.version}: candidate vs base model (held-out data)")
    for column in ("metric", "candidate", "base", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name in ("rougeL", "rouge1", "rouge2", "bleu", "general.accuracy", "empty_rate", "unfaithful_rate", "toxic_rate",
                 "output_tokens_per_s", "cost_per_1k_output_tokens"):
        if name in result.candidate and name in result.base:
            cand, base = result.candidate[name], result.base[name]
            shown = "{:.5f}" if name.startswith("cost") else "{:.4f}"
            table.add_row(name + (" (USD)" if name.startswith("cost") else ""), shown.format(cand), shown.format(base),
                          f"{cand - base:+.5f}" if name.startswith("cost") else f"{cand - base:+.4f}")
    out.print(table)
    note = " (inputs unchanged: the existing version was reused)" if result.reused else ""
    out.print(f"registered: [bold]{result.model_name}[/] version [bold]{result.version}[/], "
              f"status [bold]{result.status}[/], gate {result.gate}{note}")
    if result.build:
        speed = f" ({result.build_speedup}x the unoptimized output tokens/s at its re-gate)" \
            if result.build != "unoptimized" and result.build_speedup else ""
        out.print(f"serving build:  [bold]{result.build}[/]{speed}")
        for line in result.builds.splitlines():
            out.print(f"  {line}", markup=False, soft_wrap=True)
    out.print(f"gate report:    {result.report_uri}")
    out.print(f"MLflow run:     {result.run_url}")
    out.print(f"model version:  {result.version_url}")
    if result.status == T.PENDING and approval_hint:
        approvers = " or ".join(a for a in pipeline.approval.approvers if a != pipeline.approval.demo_account)
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
    settings, pipeline = load(config)
    prefect_home(settings)
    from pipelines.flows.evaluation import ModelUriError, evaluate_version

    try:
        assessment = evaluate_version(model_uri, pipeline, str(out_dir) if out_dir else None)
    except ModelUriError as exc:
        fail(str(exc), EXIT_USAGE)
    report = assessment.report
    table = Table(title=f"{assessment.name} version {assessment.version} on {assessment.result.n_samples} "
                        "held-out samples")
    for column in ("gate", "metric", "rule", "threshold", "value", "95% interval", "result"):
        table.add_column(column)
    for check in report.checks:
        interval = f"[{check.ci_low:+.4f}, {check.ci_high:+.4f}]" if check.ci_low is not None else ""
        verdict = "skipped" if check.skipped else ("[green]pass[/]" if check.passed else "[red]FAIL[/]")
        table.add_row(check.kind, check.metric, check.rule, f"{check.threshold:g}", f"{check.value:+.4f}", interval,
                      verdict)
    out.print(table)
    out.print(f"gate report: {assessment.page}")
    if not report.passed:
        fail(f"{model_uri} fails its gates: {report.summary()}", EXIT_FAILED)
