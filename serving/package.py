"""The servable package of a model version: a `model.tar.gz` that SageMaker's Hugging Face PyTorch
inference container serves, and that the local control plane serves the same way.

    genaiops-model.json   what to load: kind (adapter | full | base), base-model reference, template, decoding
    weights/              the LoRA adapter, or the full weights (none for the base model served as it is)
    builds/<name>/        the serving builds that passed their re-gate (steps.optimize): merged, cast weights
    base/                 the base model itself, when bundled (an endpoint without internet needs it)
    code/inference.py     SageMaker's hooks: model_fn loads the above; input_fn, predict_fn, output_fn
    code/requirements.txt what the container installs beside its own transformers and torch
    code/serving/, code/steps/   the request schema, predictor and prompt rendering the hooks use

The archive is deterministic (sorted entries, fixed times and owners), so its SHA-256 names it:
building a version twice stores one object, `packages/<digest>/model.tar.gz`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from steps.artifacts import ArtifactStore
from steps.optimize import OptimizeReport

MANIFEST = "genaiops-model.json"
FORMAT = 1
HF_TRANSFORMERS = "4.51.3"  # the container's transformers and PyTorch, from the SDK's image tables
HF_PYTORCH = "2.6.0"
HF_PY = "py312"
# The project modules the inference script imports (standard library, pydantic, torch, transformers, peft).
SHIPPED = ("serving/__init__.py", "serving/handler.py", "steps/__init__.py", "steps/engine.py", "steps/generation.py",
           "steps/prompts.py")
REQUIREMENTS = "peft>=0.13\npydantic>=2.7\n"

INFERENCE = '''"""SageMaker inference script of a genaiops model package (SageMaker's Hugging Face inference toolkit calls
model_fn once, then input_fn, predict_fn and output_fn per request)."""

import json
import os
from pathlib import Path

from serving.handler import ModelCard, Predictor, input_fn, output_fn, predict_fn  # noqa: F401
from steps.generation import GenerationSettings, load_build, load_model


def model_fn(model_dir, context=None):
    root = Path(model_dir)
    manifest = json.loads((root / "genaiops-model.json").read_text())
    weights = root / "weights"
    generation = GenerationSettings.model_validate(manifest["generation"])
    build = _build(root, manifest)
    if build is not None:  # the fastest build that passed its re-gate
        loaded, spec = load_build(build, name="served")
        card = ModelCard(source=str(root), base_model=manifest["base_model"], adapter="merged",
                         template=manifest["template"], generation=generation, build=build.name,
                         max_batch_size=int(spec["max_batch_size"]))
        return Predictor(loaded, card)
    if manifest["kind"] == "adapter":
        base = _base(root, manifest)
        loaded, adapter = load_model(base, weights, name="served"), str(weights)
    elif manifest["kind"] == "base":  # the foundation model itself, as served before any fine-tuning
        base, adapter = _base(root, manifest), None
        loaded = load_model(base, None, name="served")
    else:
        base, adapter = str(weights), None
        loaded = load_model(weights, None, name="served")
    card = ModelCard(source=str(root), base_model=manifest["base_model"], adapter=adapter,
                     template=manifest["template"], generation=generation)
    return Predictor(loaded, card)


def _build(root, manifest):
    """The build to serve: GENAIOPS_BUILD names one (or 'unoptimized'), else the one the package chose; None for
    the unoptimized weights."""
    name = os.environ.get("GENAIOPS_BUILD") or manifest.get("serve") or "unoptimized"
    if name == "unoptimized":
        return None
    passed = {b["name"] for b in manifest.get("builds", []) if b.get("passed")}
    folder = root / "builds" / name
    if name not in passed or not (folder / "genaiops-build.json").is_file():
        raise ValueError(f"build {name!r} is not a build of this package that passed its re-gate; "
                         f"passed: {sorted(passed) or 'none'} (or 'unoptimized')")
    return folder


def _base(root, manifest):
    """The base model: bundled, named by the environment, recorded locally, or its hub id."""
    for candidate in (root / "base", os.environ.get("GENAIOPS_BASE_MODEL_DIR"), manifest.get("base_model_path")):
        if candidate and (Path(candidate) / "config.json").is_file():
            return str(candidate)
    return os.environ.get("HF_MODEL_ID") or manifest["base_model_hub_id"] or manifest["base_model"]
'''


class PackageConfig(BaseModel):
    """How versions are packaged for SageMaker hosting."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bundle_base_model: bool = Field(False, description="put the base model in the package (an endpoint without "
                                                       "internet access needs it; locally it is read in place)")
    base_model_hub_id: str = Field("HuggingFaceTB/SmolLM2-135M-Instruct",
                                   description="the base model's Hugging Face id, for a container that downloads it")
    instance_type: str = Field("ml.g5.xlarge", description="decides the image's cpu or gpu build")


class ServedModel(BaseModel):
    """What a version serves: its weights and how to prompt them (from the version's model config)."""

    model_config = ConfigDict(frozen=True)
    weights: str = Field(description="the adapter or full weights' folder; unused for kind base")
    kind: Literal["adapter", "full", "base"]
    base_model: str
    base_model_path: str = ""
    template: str = "{input}"
    generation: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of_mlflow_model(cls, folder: Path) -> ServedModel:
        """From an MLflow pyfunc folder logged by the registry (its MLmodel holds the model config)."""
        import yaml

        mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
        config = (mlmodel.get("flavors", {}).get("python_function", {}) or {}).get("config") or {}
        if not config:
            raise ValueError(f"{folder}: the MLmodel file records no model config; it was not logged by genaiops")
        weights = folder / "artifacts" / "weights"
        if not weights.exists():
            found = sorted((folder / "artifacts").glob("*"))
            weights = found[0] if found else weights
        return cls(weights=str(weights), kind=config["kind"], base_model=config.get("base_model", ""),
                   base_model_path=config.get("base_model_path", ""), template=config.get("template", "{input}"),
                   generation=config.get("generation") or {})


class Package(BaseModel):
    """A stored package: its URI in the artifact store, its digest, and the image that serves it."""

    model_config = ConfigDict(frozen=True)
    uri: str
    digest: str
    image: str
    reused: bool = False
    build: str = "unoptimized"  # the serving build the package loads

    @property
    def short(self) -> str:
        return self.digest[:12]


def image_uri(region: str, instance_type: str) -> str:
    """The Hugging Face PyTorch inference image for the region, from the sagemaker SDK's tables (offline)."""
    from sagemaker.core import image_uris

    return str(image_uris.retrieve("huggingface", region, version=HF_TRANSFORMERS, base_framework_version=f"pytorch"
                                   f"{HF_PYTORCH}", py_version=HF_PY, instance_type=instance_type,
                                   image_scope="inference"))


def archive(model: ServedModel, config: PackageConfig, optimized: OptimizeReport | None = None) -> bytes:
    """The package's bytes; equal inputs give equal bytes. With `optimized`, the builds that passed their
    re-gate go in `builds/`, every build's numbers in the manifest, and the fastest passed build serves."""
    weights = Path(model.weights)
    if model.kind != "base":
        if not weights.is_dir():
            raise FileNotFoundError(f"{weights}: the version's weights are not a folder here; download them first")
        marker = "adapter_config.json" if model.kind == "adapter" else "config.json"
        if not (weights / marker).is_file():
            raise ValueError(f"{weights}: {'an adapter' if model.kind == 'adapter' else 'a full model'} needs {marker}")
    manifest: dict[str, Any] = {"format": FORMAT, "kind": model.kind, "base_model": model.base_model,
                "base_model_path": model.base_model_path, "base_model_hub_id": config.base_model_hub_id,
                "template": model.template, "generation": model.generation}
    if optimized is not None:
        manifest["serve"] = optimized.served_name
        manifest["builds"] = [{**b.spec.model_dump(), "digest": b.digest, "passed": b.passed,
                               "tokens_per_s": round(b.tokens_per_s, 3)} for b in optimized.builds]
    files: dict[str, bytes | Path] = {MANIFEST: json.dumps(manifest, indent=2, sort_keys=True).encode(),
                                      "code/inference.py": INFERENCE.encode(),
                                      "code/requirements.txt": REQUIREMENTS.encode()}
    project = Path(__file__).resolve().parent.parent
    for relative in SHIPPED:
        files[f"code/{relative}"] = project / relative
    if model.kind != "base":
        files.update(_tree(weights, "weights"))
    for build in optimized.builds if optimized is not None else []:
        if build.passed:
            files.update(_tree(Path(build.path), f"builds/{build.name}"))
    if config.bundle_base_model and model.kind in ("adapter", "base"):
        if not (Path(model.base_model_path) / "config.json").is_file():
            raise ValueError(f"bundle_base_model: the base model {model.base_model_path!r} is not a local folder")
        files.update(_tree(Path(model.base_model_path), "base"))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            content = files[name]
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _tree(folder: Path, prefix: str) -> dict[str, bytes | Path]:
    return {f"{prefix}/{p.relative_to(folder).as_posix()}": p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def build(model: ServedModel, store: ArtifactStore, *, region: str, config: PackageConfig | None = None,
          optimized: OptimizeReport | None = None) -> Package:
    """Build the version's package once and store it (content-addressed); the same inputs reuse it."""
    config = config or PackageConfig()
    data = archive(model, config, optimized)
    digest = hashlib.sha256(data).hexdigest()
    key = f"packages/{digest[:32]}/model.tar.gz"
    created = store.put_new(key, data)
    return Package(uri=store.uri(key), digest=digest, image=image_uri(region, config.instance_type), reused=not created,
                   build=optimized.served_name if optimized is not None else "unoptimized")



def of_candidate(trained: Any, *, template: str, generation: dict[str, Any], store: ArtifactStore, region: str,
                 config: PackageConfig | None = None, optimized: OptimizeReport | None = None) -> Package:
    """The package of a fine-tuned candidate (`steps.finetune.TrainedModel`).

    A local one is packaged here. A JumpStart one is already servable: its training job's own
    artifact with JumpStart's inference image for the model (never the base model's artifact)."""
    if str(trained.path).startswith("s3://"):
        image = trained.lineage.get("inference_image", "")
        if not image:
            raise ValueError(f"{trained.path}: the training job did not record JumpStart's inference image")
        identity = f"{trained.path}|{trained.lineage.get('training_job_arn', '')}"
        return Package(uri=str(trained.path), digest=hashlib.sha256(identity.encode()).hexdigest(), image=image)
    served = ServedModel(weights=str(trained.path), kind=trained.kind, base_model=trained.base_model,
                         base_model_path=trained.base_model_path, template=template, generation=generation)
    return build(served, store, region=region, config=config, optimized=optimized)


def of_base(base_model: str, base_model_path: str, *, template: str, generation: dict[str, Any], store: ArtifactStore,
            region: str, config: PackageConfig | None = None) -> Package:
    """The base model served as it is, with the same template and decoding as its fine-tuned versions: what an
    endpoint serves before any version is champion, and what the first candidate must beat live."""
    served = ServedModel(weights="", kind="base", base_model=base_model, base_model_path=base_model_path,
                         template=template, generation=generation)
    return build(served, store, region=region, config=config)
