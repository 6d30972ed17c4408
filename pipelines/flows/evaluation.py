"""Evaluation where candidates are served, not loaded (the aws backend): one temporary endpoint with the
production variants `candidate` (the fine-tuned artifact) and `base` (the JumpStart base model), deployed
through the deployer and deleted when the stage ends; the champion is asked on its live endpoint's champion
variant. The same held-out prompts, template, decoding settings and gates as on the local backend."""

from __future__ import annotations

import hashlib
from typing import Any

from model_registry import tags as T
from model_registry.mlflow_registry import MlflowRegistry
from pipelines.backends import make_sagemaker
from pipelines.settings import PipelineConfig, Settings
from serving import package
from serving.deployer import SageMakerDeployer, Version, _name
from serving.evaluation_endpoint import evaluation_endpoint
from steps.data import Example
from steps.endpoint_generation import EndpointGenerator, runtime_client
from steps.evaluate import EvalResult, evaluate
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
    return _name(f"{config.model_name}-eval-{dataset_hash[:12]}")


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
