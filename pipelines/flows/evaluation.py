"""Evaluation where candidates are served, not loaded (the aws backend): one temporary endpoint with the
production variants `candidate` (the fine-tuned artifact) and `base` (the JumpStart base model), deployed
through the deployer and deleted when the stage ends; the champion is asked on its live endpoint's champion
variant. The same held-out prompts, template, decoding settings and gates as on the local backend."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict

from contracts import tags as T
from contracts.names import resource_name
from model_registry.mlflow_registry import MlflowRegistry
from pipelines.backends import make_sagemaker
from pipelines.notify import failed_run_hook
from pipelines.offline import go_offline
from pipelines.orchestration import expected, quiet_expected_failures
from pipelines.settings import PipelineConfig, Settings
from serving import package
from serving.deployer import SageMakerDeployer, Version
from serving.evaluation_endpoint import evaluation_endpoint
from steps.data import Example
from steps.endpoint_generation import EndpointGenerator, runtime_client
from steps.evaluate import EvalResult, GateReport, evaluate
from steps.finetune import TrainedModel


class EvaluationSetupError(ValueError):
    """What the served evaluation needs is missing (a configuration or lineage mistake, not a bug)."""


def runtime_for(settings: Settings, endpoint: str) -> Any:
    """A `sagemaker-runtime` client that reaches `endpoint`: SageMaker's, or, when the SageMaker API is a local
    control plane over this workspace, the local endpoint's own URL."""
    if settings.backend == "local" or settings.sagemaker_endpoint_url:
        from serving.local import LocalEndpoints

        return runtime_client(settings.region, LocalEndpoints(settings.root).describe(endpoint).url)
    return runtime_client(settings.region)


def served_versions(config: PipelineConfig, trained: TrainedModel, store: Any, region: str) -> tuple[Version, Version]:
    """The candidate's package (its training job's artifact and inference image) and the base model's."""
    built = package.of_candidate(trained, template=config.data.template,
                                 generation=config.evaluate.generation.model_dump(), store=store, region=region,
                                 config=config.package)
    base_artifact = trained.lineage.get("base_artifact", "")
    if not base_artifact:
        raise EvaluationSetupError(f"{trained.path}: the training job recorded no base-model hosting artifact "
                                   "(HostingArtifactUri in the JumpStart spec) to compare against")
    candidate = Version(model=config.model_name, version="candidate", package_uri=built.uri, digest=built.digest,
                        image=built.image)
    base = Version(model=config.model_name, version="base", package_uri=base_artifact,
                   digest=hashlib.sha256(f"{base_artifact}|{built.image}".encode()).hexdigest(), image=built.image)
    return candidate, base


def evaluation_deployer(settings: Settings, config: PipelineConfig, progress: Any = None) -> SageMakerDeployer:
    """The deployer of temporary evaluation endpoints (no data capture)."""
    deployment = config.deployment
    if deployment.poll_seconds is None and settings.sagemaker_endpoint_url:
        deployment = deployment.model_copy(update={"poll_seconds": 1.0})
    return SageMakerDeployer(make_sagemaker(settings), deployment, role_arn=settings.sagemaker_role_arn,
                             capture_uri=None, progress=progress)


def evaluation_name(config: PipelineConfig, dataset_hash: str) -> str:
    """The temporary evaluation endpoint of a dataset: a rerun of the same inputs finds the one a crash left."""
    return resource_name(f"{config.model_name}-eval-{dataset_hash[:12]}")


def evaluate_served(settings: Settings, config: PipelineConfig, trained: TrainedModel, samples: list[Example],
                    registry: MlflowRegistry, store: Any, dataset_hash: str,
                    progress: Any = None) -> EvalResult:
    """Candidate, base model and (if any) champion, each answered by an endpoint variant."""
    from serving.release import ReleaseConfig

    deployer = evaluation_deployer(settings, config, progress)
    candidate, base = served_versions(config, trained, store, settings.region)
    name = evaluation_name(config, dataset_hash)
    template = config.data.template
    with evaluation_endpoint(deployer, name, candidate, base, ttl_s=config.evaluate.endpoint_ttl_s):
        runtime = runtime_for(settings, name)
        champion, champion_version = None, None
        found = registry.alias_version(T.CHAMPION)
        live = config.release.endpoint_of(config.model_name) if isinstance(config.release, ReleaseConfig) else None
        if found is not None and live is not None:
            described = deployer.describe(live) or {}
            if f"v{found.version}" in {v["VariantName"] for v in described.get("ProductionVariants", [])}:
                champion = EndpointGenerator(runtime_for(settings, live), live, f"v{found.version}",
                                             template=template, name="champion")
                champion_version = found.version
        return evaluate(EndpointGenerator(runtime, name, "candidate", template=template, name="candidate"),
                        EndpointGenerator(runtime, name, "base", template=template, name="base"),
                        samples, config.evaluate, champion, champion_version)


class ModelUriError(ValueError):
    """A --model-uri that names no registered version, or one that cannot be evaluated here."""


expected(EvaluationSetupError, ModelUriError)
quiet_expected_failures()


class Assessment(BaseModel):
    """A registered version evaluated on demand: its numbers, its gates, and where the report is."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    version: str
    result: EvalResult
    report: GateReport
    page: str


@flow(name="evaluate", on_failure=[failed_run_hook])
def evaluate_version(model_uri: str, config: PipelineConfig | str | None = None,
                     out_dir: str | None = None) -> Assessment:
    """Evaluate `models:/NAME/VERSION` or `models:/NAME@ALIAS` against its base model and the champion, on the
    held-out split of the dataset it was trained on, with the configured gates; write the gate report."""
    import re

    from pipelines.backends import make_registry, make_store
    from pipelines.settings import load_settings, resolve_config
    from steps.artifacts import ArtifactNotFoundError
    from steps.data import load_prepared
    from steps.evaluate import decide
    from steps.evaluate_report import write_report
    from steps.generation import load_model

    go_offline()
    settings = load_settings()
    config = resolve_config(config, settings)
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w-]+))", model_uri)
    if match is None:
        raise ModelUriError(f"--model-uri: {model_uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS")
    name, number, alias = match.groups()
    registry = make_registry(settings, config.model_copy(update={"model_name": name}))
    try:
        version = number or registry.client.get_model_version_by_alias(name, alias).version
        described = registry.get_version(str(version))
    except Exception as exc:  # MLflow raises RestException / MlflowException subclasses
        raise ModelUriError(f"--model-uri: {model_uri} not found in {settings.tracking_uri}: {exc}") from exc
    if described.source.startswith("s3://"):
        raise ModelUriError(f"{model_uri} is a training job's artifact ({described.source}); it is evaluated on a "
                            "temporary endpoint by the aws retrain, not loaded here")
    candidate, model_config = registry.load_version(described.version)
    if not model_config.get("base_model_path"):
        raise ModelUriError(f"{model_uri} records no local base model to compare against")
    try:
        dataset = load_prepared(make_store(settings), described.tags[T.DATASET_HASH])
    except (KeyError, ArtifactNotFoundError) as exc:
        raise ModelUriError(f"{model_uri}: its prepared dataset is not in the artifact store ({exc})") from exc
    champion = registry.load_alias(T.CHAMPION)
    if champion is not None and champion[1] == described.version:
        champion = None  # a version is not compared with itself
    base = load_model(model_config["base_model_path"], None, name="base")
    result = evaluate(candidate, base, dataset.splits["test"], config.evaluate,
                      champion[0] if champion else None, champion[1] if champion else None)
    report = decide(result, config.evaluate.gates, config.evaluate.bootstrap)
    folder = Path(out_dir) if out_dir else settings.root / "reports" / f"evaluate-{name}-v{described.version}"
    page = write_report(result, report, folder, dataset_hash=dataset.hash, bootstrap=config.evaluate.bootstrap)
    return Assessment(name=name, version=described.version, result=result, report=report, page=str(page))
