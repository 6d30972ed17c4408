"""What a source run shows about a candidate, read by the MLflow server when the pipeline registers a version.

The retrain flow logs the dataset hash and the pipeline config as run parameters and the gate
report (with a machine-readable `gate_report.json`) among the run's artifacts before it
registers; the server compares the new version's tags with these, so a version cannot claim a
passed gate, a dataset, a base model or a servable package that its run does not show.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from contracts import tags as T
from model_registry.permissions import RunEvidence

REPORT_FOLDER = "gate_report"  # where the gate report sits among the run's artifacts
REPORT_JSON = "gate_report.json"
DATASET_HASH_PARAM = "dataset.hash"  # the flow logs {"dataset": {"hash": ...}, "pipeline": {...}} flattened
BASE_MODEL_PARAM = "base_model"  # what was fine-tuned: the configured model, or the JumpStart model on aws
PACKAGE_PARAMS = {"uri": "package.uri", "digest": "package.digest", "image": "package.image"}
BUILD_PARAMS = {T.BUILD_SERVED: "package.build", T.BUILD_SPEEDUP: "package.build_speedup", T.BUILDS: "package.builds"}


def build_params(tags: dict[str, str]) -> dict[str, str]:
    """The build tags of a version as the run's `package` parameters (the evidence the server checks them with)."""
    return {BUILD_PARAMS[key].removeprefix("package."): value for key, value in tags.items() if key in BUILD_PARAMS}


class RegistryUnavailableError(RuntimeError):
    """The registry or the run's artifacts could not be read; a write that depends on them is refused."""


def run_evidence(run_id: str) -> RunEvidence | None:
    """The evidence of `run_id` in the server's tracking store; None if the run does not exist."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_tracking_store

    if not run_id:
        return None
    try:
        run = _get_tracking_store().get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise RegistryUnavailableError(f"run {run_id}: {exc}") from exc
    except Exception as exc:
        raise RegistryUnavailableError(f"run {run_id}: {type(exc).__name__}: {exc}") from exc
    params, tags = run.data.params, run.data.tags
    report = _gate_report(run.info.artifact_uri)
    return RunEvidence(
        run_id=run_id, run_key=tags.get(T.RUN_KEY), triggered_by=tags.get(T.TRIGGERED_BY),
        dataset_hash=params.get(DATASET_HASH_PARAM), base_model=params.get(BASE_MODEL_PARAM),
        gate_passed=None if report is None else bool(report.get("passed")),
        gate_summary=None if report is None else str(report.get("summary", "")),
        report_dataset_hash=None if report is None else str(report.get("dataset_hash", "")),
        package_uri=params.get(PACKAGE_PARAMS["uri"]), package_digest=params.get(PACKAGE_PARAMS["digest"]),
        package_image=params.get(PACKAGE_PARAMS["image"]),
        builds={tag: params[param] for tag, param in BUILD_PARAMS.items() if param in params},
        trigger={k: tags[k] for k in (T.TRIGGER, T.TRIGGER_NAME, T.TRIGGER_DETAIL) if k in tags},
    )


def _gate_report(artifact_uri: str) -> dict[str, object] | None:
    """The run's gate_report.json, or None when the run has none; unreadable artifacts raise."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        repository = get_artifact_repository(artifact_uri)
        names = {Path(f.path).name for f in repository.list_artifacts(REPORT_FOLDER)}
        if REPORT_JSON not in names:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = repository.download_artifacts(f"{REPORT_FOLDER}/{REPORT_JSON}", folder)
            document = json.loads(Path(path).read_text())
    except Exception as exc:
        raise RegistryUnavailableError(f"the gate report under {artifact_uri}: {type(exc).__name__}: {exc}") from exc
    return document if isinstance(document, dict) else None
