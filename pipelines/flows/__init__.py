"""Prefect flows. They wire steps together, declare retries and read settings once; no business logic."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from contracts import tags as T
from model_registry.approval import ApprovalConfig
from model_registry.audit import AuditLog
from model_registry.candidates import (
    candidate_description,
    candidate_tags,
    model_config,
    publish_report,
)
from model_registry.evidence import build_params
from model_registry.mlflow_registry import MlflowRegistry, RegisteredVersion
from model_registry.sagemaker_mirror import MirrorDecision, ModelPackageMirror
from model_registry.watcher import watch_approvals
from pipelines.backends import (
    make_audit,
    make_corrections,
    make_evaluation,
    make_mirror,
    make_notifier,
    make_registry,
    make_store,
    make_trainer,
    retrain_plan,
)
from pipelines.deployments import start
from pipelines.flows.hooks import failed_run_hook
from pipelines.notify import waiting_for_approval
from pipelines.offline import go_offline
from pipelines.recovery import owner_tags, recover
from pipelines.reliability import expected, quiet_expected_failures, reliable, remembered
from pipelines.settings import PipelineConfig, Settings, load_settings, resolve_config
from pipelines.trigger import Trigger, current_trigger
from serving import package
from serving.evaluation import CandidateEvaluation, EvaluationSetupError
from steps.artifacts import ArtifactStore
from steps.base_model import BaseModelError, resolve_base_model, token_counter
from steps.data import DataSourceError, DataValidationError, Example, PreparedDataset, prepare_dataset
from steps.evaluate import EvalResult, decide, with_cost
from steps.feedback import Correction
from steps.finetune import FinetuneError, TrainedModel, run_training
from steps.optimize import OptimizeReport, not_optimizable, optimize_candidate, report_tags


class GateFailedError(RuntimeError):
    """The candidate failed its evaluation gates; it is registered as Rejected and goes no further."""


class PreflightError(ValueError):
    """The aws backend cannot start this run (a role, bucket, key, model or quota check failed): nothing was paid."""


class RetrainResult(BaseModel):
    """What a retrain run produced, for the CLI and for callers of the flow."""

    model_config = ConfigDict(frozen=True)
    model_name: str
    version: str
    status: str
    gate: str
    gate_summary: str
    run_id: str
    run_url: str
    version_url: str
    dataset_hash: str
    candidate: dict[str, float] = {}
    base: dict[str, float] = {}
    report_uri: str = ""
    reused: bool = False
    reused_stages: list[str] = []  # stages whose earlier result this run read back instead of redoing
    build: str = ""  # the serving build its package loads (`optimize`), or unoptimized; empty without a package
    build_speedup: str = ""  # that build's output tokens/s over the unoptimized weights' at its re-gate
    builds: str = ""  # every build's re-gate, one line each


# Ports and clients cannot be hashed: no input caching; idempotency comes from explicit keys (`run_key`,
# `remembered`). Each flow applies the configured retries and timeouts (`reliable`) when it runs.
prepare = task(name="prepare", cache_policy=NO_CACHE)(prepare_dataset)
resolve_model = task(name="resolve-base-model", cache_policy=NO_CACHE)(resolve_base_model)
train = task(name="finetune", cache_policy=NO_CACHE)(run_training)


@task(name="corrections", cache_policy=NO_CACHE)
def gather_corrections(of: Callable[[str], list[Correction]], model: str) -> list[Correction]:
    """The corrections people gave to the model's answers (`genaiops feedback`): records of the next dataset."""
    return of(model)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(evaluation: CandidateEvaluation, trained: TrainedModel, samples: list[Example], dataset_hash: str,
             progress: Callable[[str], None]) -> EvalResult:
    """Candidate, base model and champion on the held-out split: loaded here, or served (aws)."""
    return evaluation(trained, samples, dataset_hash, progress)


write_report = task(name="gate-report", cache_policy=NO_CACHE)(publish_report)


@task(name="optimize", cache_policy=NO_CACHE)
def optimize(result: EvalResult, trained: TrainedModel, config: PipelineConfig, root: Path,
             progress: Callable[[str], None]) -> OptimizeReport | None:
    """Faster serving builds of a candidate that passed, each re-gated against it (None: none are made)."""
    why_not = not_optimizable(trained)
    if not config.optimize.enabled or not config.optimize.builds or why_not:
        progress(f"optimize: no builds ({why_not or 'none configured'}); the unoptimized weights serve")
        return None
    adapter = trained.path if trained.kind == "adapter" else None
    base = trained.base_model_path if trained.kind == "adapter" else trained.path
    return optimize_candidate(result, base, adapter, config.evaluate, config.optimize, root,
                              token_counter(Path(trained.base_model_path)), progress)
build_package = task(name="package", cache_policy=NO_CACHE)(package.of_candidate)
recover_crashed = task(name="recover", cache_policy=NO_CACHE)(recover)
notify = task(name="notify", cache_policy=NO_CACHE)(waiting_for_approval)
start_run = task(name="start-deployment", cache_policy=NO_CACHE)(start)


@task(name="sync-sagemaker-registry", cache_policy=NO_CACHE)
def sync_sagemaker(mirror: ModelPackageMirror, registry: MlflowRegistry, audit: AuditLog,
                   approval: ApprovalConfig) -> list[MirrorDecision]:
    """Mirror versions into the SageMaker Model Registry and bring back changes made there."""
    logger = get_run_logger()
    changes = mirror.sync(registry, audit, approval)
    for change in changes:
        if change.action == "skipped":
            logger.warning("v%s: not mirrored to SageMaker: %s", change.version, change.detail)
        elif change.action != "in sync":
            logger.info("v%s: SageMaker model package %s (%s)", change.version, change.action, change.status)
    return changes


watch = task(name="watch-approvals", cache_policy=NO_CACHE)(watch_approvals)


@task(name="register", cache_policy=NO_CACHE)
def register(registry: MlflowRegistry, run_id: str, **kwargs: object) -> RegisteredVersion:
    return registry.register(run_id, **kwargs)  # type: ignore[arg-type]


expected(GateFailedError, PreflightError, DataValidationError, DataSourceError, BaseModelError, FinetuneError,
         EvaluationSetupError)
quiet_expected_failures()


def run_key(dataset: PreparedDataset, config: PipelineConfig) -> str:
    """One version per distinct input: dataset content, fine-tuning and evaluation settings."""
    material = "|".join([config.model_name, dataset.hash, config.finetune.model_dump_json(),
                         config.evaluate.model_dump_json(), config.data.template, config.optimize.model_dump_json()])
    return hashlib.sha256(material.encode()).hexdigest()[:24]




@flow(name="retrain", on_failure=[failed_run_hook])
def retrain(config: PipelineConfig | str | None = None, trigger: Trigger | None = None) -> RetrainResult:
    """Prepare data, fine-tune, evaluate against the base model, gate and register the candidate.

    `config` is a PipelineConfig or the path of its YAML (a deployment's parameter; else $GENAIOPS_CONFIG).
    `trigger` says why the run started; it is recorded on the MLflow run and on the version. Runs that crashed
    are closed first. On the aws backend the run first checks, with read calls only, that it can start
    (`pipelines.plan`), and logs what it will create."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    trigger = current_trigger(trigger, settings.triggered_by)
    logger = get_run_logger()
    logger.info("%s: retrain, triggered by %s", config.model_name, trigger.describe())
    planned = retrain_plan(settings, config)  # None where nothing is paid for (the local backend)
    if planned is not None:
        for item in planned.checks:
            logger.info("preflight %s: %s: %s", item.state, item.name, item.detail)
        if not planned.ready:
            raise PreflightError("cannot start: " + "; ".join(f"{c.name}: {c.detail}" for c in planned.checks
                                                                if c.state == "failed"))
        logger.info("plan: at most %.2f instance-hours (%s)", planned.instance_hours,
                    ", ".join(f"{p.kind} {p.instances} x {p.instance_type}" for p in planned.creates if p.instances))
    policy = config.orchestration
    store, registry = make_store(settings), make_registry(settings, config, config.approval.pipeline_account)
    trainer = make_trainer(settings, store)
    evaluation = make_evaluation(settings, config, registry, store, logger.info)
    reliable(recover_crashed, policy)(registry, evaluation.deployer, evaluation_endpoint=evaluation.endpoint)

    base_path = resolve_model(config.finetune.base_model, settings.root / "models")
    corrections = reliable(gather_corrections, policy)(make_corrections(settings), config.model_name) \
        if config.data.feedback else []
    if corrections:
        logger.info("%d correction(s) from feedback join the data: %s", len(corrections),
                    ", ".join(c.feedback_id for c in corrections))
    dataset = reliable(prepare, policy)(config.data, store, token_counter(base_path), corrections)
    key = run_key(dataset, config)
    existing = registry.find_version(key)
    if existing is not None:
        logger.info("inputs unchanged: %s version %s already exists (%s)", existing.name, existing.version,
                    existing.status)
        return _finish(_result(settings, registry, store, existing, dataset.hash, None, ["prepare", "register"]))

    with registry.runs.run(f"retrain-{dataset.hash[:8]}", {T.RUN_KEY: key, T.TRIGGERED_BY: settings.triggered_by,
                                                       **trigger.mlflow_tags(), **owner_tags()}) as run_id:
        registry.runs.log_params(run_id, {"pipeline": config.model_dump(mode="json"), "dataset": {
            "hash": dataset.hash, "source": dataset.source, "source_hash": dataset.source_hash,
            "feedback": dataset.feedback,
            "validation": dataset.validation.summary(), **{f"rows_{k}": v for k, v in dataset.counts.items()}}})
        registry.runs.log_text(run_id, dataset.validation.to_markdown(), "data_validation.md")
        registry.runs.log_text(run_id, dataset.validation.to_html(), "data_validation.html")
        # Kept by content hash: a run killed after this stage and started again does not pay for it twice.
        # Never retried as a whole: a second attempt would start a second (paid) training job.
        trained = remembered(store, f"finetune/{dataset.hash[:16]}-{config.finetune.digest()}", TrainedModel,
                             lambda: reliable(train, policy, retry=False)(
                                 trainer, dataset, config.finetune,
                                 on_metrics=lambda step, metrics: registry.runs.log_metrics(run_id, metrics, step)))
        registry.runs.log_metrics(run_id, {f"train.{k}": v for k, v in trained.metrics.items()})
        registry.runs.log_params(run_id, {"base_model": trained.base_model})
        if trained.loss_curve and Path(trained.loss_curve).exists():
            registry.runs.log_artifact(run_id, trained.loss_curve)
        result = reliable(evaluate, policy, retry=evaluation.retryable)(evaluation, trained, dataset.splits["test"],
                                                                       dataset.hash, logger.info)
        result = with_cost(result, config.deployment.hourly_price)  # at the serving instance's price
        report = decide(result, config.evaluate.gates, config.evaluate.bootstrap)
        registry.runs.log_metrics(run_id, {f"{model.name}.{k}": v for model in (result.candidate, result.base, result.champion)
                                      if model is not None for k, v in model.metrics.items()})
        reliable(write_report, policy)(registry, store, run_id, result, report, dataset_hash=dataset.hash,
                                       bootstrap=config.evaluate.bootstrap)
        built, optimized, builds = None, None, {}
        if report.passed:  # faster builds, each re-gated; then what a deployment of this version serves
            optimized = reliable(optimize, policy)(result, trained, config, settings.root / "builds", logger.info)
            if optimized is not None:
                registry.runs.log_text(run_id, optimized.model_dump_json(indent=2), "optimize_report.json")
                registry.runs.log_metrics(run_id, {f"build.{b.name}.{k}": v for b in optimized.builds
                                                   for k, v in b.metrics.items()})
            built = reliable(build_package, policy)(trained, template=config.data.template,
                                                    generation=config.evaluate.generation.model_dump(), store=store,
                                                    region=settings.region, config=config.package, optimized=optimized)
            builds = report_tags(optimized) if optimized is not None else {}
            registry.runs.log_params(run_id, {"package": {"uri": built.uri, "digest": built.digest, "image": built.image,
                                                     # the base model as its container serves it (JumpStart's)
                                                     "base_uri": trained.lineage.get("base_artifact", ""),
                                                     **build_params(builds)}})
            logger.info("packaged the candidate: %s (%s); it serves the %s build%s", built.uri,
                        "reused" if built.reused else "new", built.build,
                        f", {optimized.speedup:.2f}x the unoptimized tokens/s" if optimized and optimized.served else "")
        version = reliable(register, policy)(
            registry, run_id,
            weights_path=trained.path,
            model_config=model_config(trained, config.data.template, config.evaluate.generation.model_dump()),
            tags={**candidate_tags(report=report, dataset=dataset, base_model=trained.base_model,
                                   run_key=key, triggered_by=settings.triggered_by, result=result,
                                   package=None if built is None else {"uri": built.uri, "digest": built.digest,
                                                                       "image": built.image}),
                  **builds, **trigger.mlflow_tags()},
            description=candidate_description(result, report, run_url=registry.runs.run_url(settings.mlflow_ui_url, run_id)),
        )
    reused = [stage for stage, was in (("prepare", dataset.reused), ("finetune", trained.reused)) if was]
    outcome = _result(settings, registry, store, version, dataset.hash, result, reused)
    if outcome.status == T.PENDING and not outcome.reused:
        reliable(notify, policy)(make_notifier(settings), outcome, config.approval)
    return _finish(outcome)


def _result(settings: Settings, registry: MlflowRegistry, store: ArtifactStore, version: RegisteredVersion,
            dataset_hash: str, result: EvalResult | None, reused: list[str]) -> RetrainResult:
    if result is None:  # an earlier run made this version: read its numbers back
        metrics = registry.runs.run_metrics(version.run_id)
        candidate = {k.removeprefix("candidate."): v for k, v in metrics.items() if k.startswith("candidate.")}
        base = {k.removeprefix("base."): v for k, v in metrics.items() if k.startswith("base.")}
    else:
        candidate, base = result.candidate.metrics, result.base.metrics
    return RetrainResult(
        model_name=version.name, version=version.version, status=version.status,
        gate=version.tags.get(T.GATE, "unknown"), gate_summary=version.tags.get(T.GATE_SUMMARY, ""),
        run_id=version.run_id,
        run_url=registry.runs.run_url(settings.mlflow_ui_url, version.run_id),
        version_url=registry.version_url(settings.mlflow_ui_url, version.version),
        dataset_hash=dataset_hash, candidate=candidate, base=base, reused=version.reused, reused_stages=reused,
        report_uri=store.uri(f"reports/{version.run_id}/gate_report.html"),
        build=version.tags.get(T.BUILD_SERVED, "unoptimized" if T.PACKAGE_URI in version.tags else ""),
        build_speedup=version.tags.get(T.BUILD_SPEEDUP, ""), builds=version.tags.get(T.BUILDS, ""),
    )


def _finish(result: RetrainResult) -> RetrainResult:
    """Fail the flow run loudly when the gate failed; the Rejected version stays for the audit trail."""
    if result.gate == "failed":
        raise GateFailedError(
            f"{result.model_name} version {result.version} is {T.REJECTED}: {result.gate_summary}; "
            f"gate report: {result.run_url}"
        )
    return result


@flow(name="approval-watch", on_failure=[failed_run_hook])
def approval_watch(config: PipelineConfig | str | None = None) -> list[dict[str, str]]:
    """Turn approvals that stand into release requests (exactly once) and start the `release` deployment for
    each; send the others back to pending."""
    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    policy = config.orchestration
    store, registry = make_store(settings), make_registry(settings, config, config.approval.watcher_account)
    mirror, audit = make_mirror(settings, config), make_audit(settings)
    sync = reliable(sync_sagemaker, policy)
    if mirror is not None:  # SageMaker first: a rejection made there must stop a release made here
        sync(mirror, registry, audit, config.approval)
    decisions = reliable(watch, policy)(registry, audit, store, config.approval)
    if mirror is not None:  # and again: approvals and reverts of this pass reach SageMaker now
        sync(mirror, registry, audit, config.approval)
    for decision in decisions:
        if decision.action == "release requested":
            reliable(start_run, policy)("release", config.model_name,
                                        Trigger(kind="approval", name=f"v{decision.version}", detail=decision.detail),
                                        idempotency_key=f"approval:{config.model_name}:{decision.version}")
    return [d.model_dump() for d in decisions]
