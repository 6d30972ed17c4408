"""The `evaluate` flow: a registered version evaluated on demand, against its base model and the champion, on
the held-out split of the dataset it was trained on, with the configured gates."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, ConfigDict

from contracts import tags as T
from pipelines.flows.hooks import failed_run_hook
from pipelines.offline import go_offline
from pipelines.reliability import expected, quiet_expected_failures
from pipelines.settings import PipelineConfig
from serving.evaluation import EvaluationSetupError
from steps.evaluate import EvalResult, GateReport, evaluate


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
    described = registry.find(number) if number else registry.alias_version(alias)
    if described is None:
        raise ModelUriError(f"--model-uri: {model_uri} not found in {settings.tracking_uri}")
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
