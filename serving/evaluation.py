"""How a retrain evaluates its candidate against the base model and the champion: loaded in this process (the local
backend), or served (the aws backend, where the candidate is a training job's artifact): one temporary endpoint
with the production variants `candidate` and `base`, deployed through the deployer and deleted when the stage
ends, and the champion asked on its live endpoint's champion variant. The same held-out prompts, template,
decoding settings and gates either way."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from contracts import tags as T
from contracts.names import resource_name
from model_registry.candidates import load_champion
from model_registry.mlflow_registry import MlflowRegistry
from serving import package
from serving.deployer import SageMakerDeployer, Version
from serving.evaluation_endpoint import evaluation_endpoint
from steps.base_model import token_counter
from steps.data import Example
from steps.endpoint_generation import EndpointGenerator
from steps.evaluate import EvalResult, EvaluateConfig, evaluate, evaluate_trained
from steps.finetune import TrainedModel


class EvaluationSetupError(ValueError):
    """What the served evaluation needs is missing (a configuration or lineage mistake, not a bug)."""


class CandidateEvaluation(Protocol):
    @property
    def retryable(self) -> bool:
        """Whether a failed attempt may simply be made again (served: yes; loaded here: it failed for good)."""

    @property
    def deployer(self) -> SageMakerDeployer | None:
        """What serves candidates, for cleaning up after a crashed run (None: nothing is served)."""

    def endpoint(self, dataset_hash: str) -> str | None:
        """The temporary endpoint a run of this dataset uses (None: none)."""

    def __call__(self, trained: TrainedModel, samples: Sequence[Example], dataset_hash: str,
                 progress: Callable[[str], None] | None = None) -> EvalResult:
        """Candidate, base model and (if any) champion on the same samples."""


class InProcessEvaluation:
    """The local backend's: candidate and base loaded here, the champion loaded from the registry."""

    retryable = False
    deployer = None

    def __init__(self, registry: MlflowRegistry, config: EvaluateConfig) -> None:
        self.registry, self.config = registry, config

    def endpoint(self, dataset_hash: str) -> str | None:
        return None

    def __call__(self, trained: TrainedModel, samples: Sequence[Example], dataset_hash: str,
                 progress: Callable[[str], None] | None = None) -> EvalResult:
        champion, version = load_champion(self.registry)
        return evaluate_trained(trained, samples, self.config, champion, version)


class ServedEvaluation:
    """The aws backend's: candidate and base on a temporary endpoint, the champion on its live endpoint."""

    retryable = True

    def __init__(self, deployer: SageMakerDeployer, runtime: Any, registry: MlflowRegistry, store: Any, *,
                 model: str, template: str, evaluate_config: EvaluateConfig, package_config: Any, region: str,
                 live_endpoint: str) -> None:
        self.deployer, self.runtime, self.registry, self.store = deployer, runtime, registry, store
        self.model, self.template, self.config = model, template, evaluate_config
        self.package_config, self.region, self.live_endpoint = package_config, region, live_endpoint

    def endpoint(self, dataset_hash: str) -> str:
        """The temporary evaluation endpoint of a dataset: a rerun of the same inputs finds the one a crash left."""
        return resource_name(f"{self.model}-eval-{dataset_hash[:12]}")

    def versions(self, trained: TrainedModel) -> tuple[Version, Version]:
        """The candidate's package (its training job's artifact and inference image) and the base model's."""
        built = package.of_candidate(trained, template=self.template, generation=self.config.generation.model_dump(),
                                     store=self.store, region=self.region, config=self.package_config)
        base_artifact = trained.lineage.get("base_artifact", "")
        if not base_artifact:
            raise EvaluationSetupError(f"{trained.path}: the training job recorded no base-model hosting artifact "
                                       "(HostingArtifactUri in the JumpStart spec) to compare against")
        candidate = Version(model=self.model, version="candidate", package_uri=built.uri, digest=built.digest,
                            image=built.image)
        base = Version(model=self.model, version="base", package_uri=base_artifact,
                       digest=hashlib.sha256(f"{base_artifact}|{built.image}".encode()).hexdigest(), image=built.image)
        return candidate, base

    def __call__(self, trained: TrainedModel, samples: Sequence[Example], dataset_hash: str,
                 progress: Callable[[str], None] | None = None) -> EvalResult:
        candidate, base = self.versions(trained)
        name = self.endpoint(dataset_hash)
        with evaluation_endpoint(self.deployer, name, candidate, base, ttl_s=self.config.endpoint_ttl_s):
            champion, champion_version = None, None
            found = self.registry.alias_version(T.CHAMPION)
            if found is not None:
                described = self.deployer.describe(self.live_endpoint) or {}
                if f"v{found.version}" in {v["VariantName"] for v in described.get("ProductionVariants", [])}:
                    champion = EndpointGenerator(self.runtime, self.live_endpoint, f"v{found.version}",
                                                 template=self.template, name="champion")
                    champion_version = found.version
            return evaluate(EndpointGenerator(self.runtime, name, "candidate", template=self.template, name="candidate"),
                            EndpointGenerator(self.runtime, name, "base", template=self.template, name="base"),
                            samples, self.config, champion, champion_version,
                            count_tokens=token_counter(Path(trained.base_model_path)) if trained.base_model_path
                            else None)
