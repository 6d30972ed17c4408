"""MLflow adapter: tracking runs, and model versions that follow the approval protocol.

One `MlflowRegistry` owns one MLflow client for one tracking URI; nothing here is created at
import time. Registration is idempotent on the run key (dataset hash + config digest): the
same inputs never make a second version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from pydantic import BaseModel, ConfigDict

from contracts import tags as T

log = logging.getLogger(__name__)


class RegisteredVersion(BaseModel):
    """A model version as the pipeline sees it."""

    model_config = ConfigDict(frozen=True)
    name: str
    version: str
    run_id: str
    status: str
    tags: dict[str, str]
    source: str = ""  # the version's source as MLflow records it (`models:/m-…` for MLflow 3 logged models)
    model_id: str = ""
    reused: bool = False
    aliases: list[str] = []
    description: str = ""


class RunRecord(BaseModel):
    """A run of the experiment, as a recovery reads it."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    tags: dict[str, str]
    params: dict[str, str]


class RegistryError(RuntimeError):
    """The registry refused an operation."""


class MlflowRuns:
    """The runs of one experiment: opened and closed, their parameters, metrics and artifacts, and the ones a
    process that died left RUNNING."""

    def __init__(self, client: Any, experiment_id: str) -> None:
        self.client, self.experiment_id = client, experiment_id

    @contextmanager
    def run(self, run_name: str, tags: Mapping[str, str]) -> Iterator[str]:
        """An MLflow run that ends FINISHED, or FAILED if the block raises.

        Runs of the same run key left RUNNING by a process that was killed are marked KILLED first.
        """
        if T.RUN_KEY in tags:
            stale = self.client.search_runs(
                [self.experiment_id], f"tags.`{T.RUN_KEY}` = '{tags[T.RUN_KEY]}' and attributes.status = 'RUNNING'")
            for orphan in stale:
                log.info("marking run %s KILLED: its process ended without closing it", orphan.info.run_id)
                self.client.set_terminated(orphan.info.run_id, status="KILLED")
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        run_id = run.info.run_id
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flatten(params)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, path, artifact_path)

    def log_artifacts(self, run_id: str, folder: str, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, folder, artifact_path)

    def run_url(self, ui_url: str, run_id: str) -> str:
        return f"{ui_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def run_params(self, run_id: str) -> dict[str, str]:
        """The run's logged parameters (nested ones flattened with dots); empty for a run that is gone."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.params)
        except MlflowException:
            return {}

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The run's latest metrics; empty for a run that is gone."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.metrics)
        except MlflowException:
            return {}

    def running_runs(self) -> list[RunRecord]:
        """The experiment's runs that are still RUNNING."""
        found = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        return [RunRecord(run_id=r.info.run_id, tags=dict(r.data.tags), params=dict(r.data.params)) for r in found]

    def mark_killed(self, run_id: str, tag: str, reason: str) -> None:
        """End a run whose process died: KILLED, with why in `tag`."""
        self.client.set_tag(run_id, tag, reason)
        self.client.set_terminated(run_id, status="KILLED")

    def run_tagged(self, key: str, value: str) -> str | None:
        """The id of the experiment's run tagged `key=value`, if any."""
        found = self.client.search_runs([self.experiment_id], f"tags.`{key}` = '{value}'", max_results=1)
        return str(found[0].info.run_id) if found else None

    def run_tags(self, run_id: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.tags)
        except MlflowException:
            return {}


class MlflowRegistry:
    """Model versions of one registered model in an MLflow tracking server or store; its experiment's runs are
    `runs`."""

    def __init__(self, tracking_uri: str, *, experiment: str, model_name: str, artifact_root: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = self._experiment(experiment, artifact_root)
        self.runs = MlflowRuns(self.client, self.experiment_id)

    def _experiment(self, name: str, artifact_root: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
        return str(self.client.create_experiment(name, artifact_location=location))

    # --- tracking ---------------------------------------------------------------------------

    def load_alias(self, alias: str) -> tuple[Any, str] | None:
        """The version behind an alias, loaded for generation (`steps.generation.LoadedModel`), or None."""
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException:
            return None
        return self.load_version(str(version.version), name=alias)[0], str(version.version)

    def load_version(self, version: str, name: str = "candidate") -> tuple[Any, dict[str, Any]]:
        """A registered version loaded for generation, with the model config it was logged with."""
        import mlflow.pyfunc

        with self._fluent_uri():
            model = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
        loaded = model.unwrap_python_model().loaded
        loaded.name = name
        return loaded, dict(model.model_config or {})

    def logged_config(self, model_uri: str) -> dict[str, Any]:
        """The model config a version was logged with (template, generation), from its MLmodel file alone."""
        import mlflow.models

        with self._fluent_uri():
            flavor = mlflow.models.Model.load(model_uri).flavors.get("python_function", {})
        return dict(flavor.get("config") or {})

    def version_url(self, ui_url: str, version: str) -> str:
        return f"{ui_url.rstrip('/')}/#/models/{self.model_name}/versions/{version}"

    # --- registry ---------------------------------------------------------------------------

    def find_version(self, run_key: str) -> RegisteredVersion | None:
        """The version registered for this run key, if any."""
        found = self.client.search_model_versions(
            f"name = '{self.model_name}' and tags.`{T.RUN_KEY}` = '{run_key}'", max_results=10
        )
        if not found:
            return None
        return self._as_registered(max(found, key=lambda v: int(v.version)), reused=True)

    def get_version(self, version: str) -> RegisteredVersion:
        return self._as_registered(self.client.get_model_version(self.model_name, version))

    def find(self, version: str) -> RegisteredVersion | None:
        """The version, or None when there is no such version."""
        from mlflow.exceptions import MlflowException

        try:
            return self.get_version(version)
        except MlflowException:
            return None

    def versions(self) -> list[RegisteredVersion]:
        """Every version of the model, oldest first."""
        found = self.client.search_model_versions(f"name = '{self.model_name}'", max_results=10_000)
        return sorted((self._as_registered(v) for v in found), key=lambda v: int(v.version))

    def alias_version(self, alias: str) -> RegisteredVersion | None:
        """The version an alias points at, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self._as_registered(self.client.get_model_version_by_alias(self.model_name, alias))
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, version)

    def delete_alias(self, alias: str) -> None:
        import contextlib

        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # not set: nothing to delete
            self.client.delete_registered_model_alias(self.model_name, alias)

    def set_tag(self, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(self.model_name, version, key, value)

    def delete_tag(self, version: str, key: str) -> None:
        self.client.delete_model_version_tag(self.model_name, version, key)

    def versions_of_run(self, run_id: str) -> list[RegisteredVersion]:
        """The versions registered from a run."""
        return [self._as_registered(v) for v in self.client.search_model_versions(f"run_id = '{run_id}'",
                                                                                   max_results=10)]

    def register(
        self,
        run_id: str,
        *,
        weights_path: str,
        model_config: Mapping[str, Any],
        tags: Mapping[str, str],
        description: str,
    ) -> RegisteredVersion:
        """Log the candidate as a pyfunc model in the run and register it with its tags in one call.

        Idempotent: if a version for the same source run exists, it is returned instead.
        """
        existing = self.client.search_model_versions(
            f"name = '{self.model_name}' and tags.`{T.SOURCE_RUN}` = '{run_id}'", max_results=10
        )
        if existing:
            return self._as_registered(existing[0], reused=True)
        self._ensure_registered_model()
        if weights_path.startswith("s3://"):  # a training job's artifact: registered where it is, not copied
            version = self.client.create_model_version(
                self.model_name, source=weights_path, run_id=run_id, tags={**tags, T.SOURCE_RUN: run_id},
                description=description,
            )
            log.info("registered %s version %s from %s (%s)", self.model_name, version.version, weights_path,
                     tags.get(T.APPROVAL_STATUS))
            return self._as_registered(self.client.get_model_version(self.model_name, version.version))
        with self._fluent_uri():  # the registry resolves `models:/m-...` through the fluent URI
            model_uri, model_id = self._log_pyfunc(run_id, weights_path, model_config)
            version = self.client.create_model_version(
                self.model_name, source=model_uri, run_id=run_id, model_id=model_id,
                tags={**tags, T.SOURCE_RUN: run_id}, description=description,
            )
        log.info("registered %s version %s (%s)", self.model_name, version.version, tags.get(T.APPROVAL_STATUS))
        return self._as_registered(self.client.get_model_version(self.model_name, version.version))

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            self.client.create_registered_model(
                self.model_name,
                description="Fine-tuned candidates. Each version carries its gate report; approvers set "
                f"`{T.APPROVAL_STATUS}` to `{T.APPROVED}` or `{T.REJECTED}`.",
            )

    @contextmanager
    def _fluent_uri(self) -> Iterator[None]:
        """Point MLflow's process-wide (fluent) API at this store for the block, then restore it."""
        import mlflow

        tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(tracking)
            mlflow.set_registry_uri(registry)

    def _log_pyfunc(self, run_id: str, weights_path: str, model_config: Mapping[str, Any]) -> tuple[str, str]:
        import mlflow
        import mlflow.pyfunc

        from model_registry import pyfunc_model

        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=pyfunc_model.__file__,
                artifacts={"weights": weights_path},
                model_config=dict(model_config),
                pip_requirements=_requirements(),
            )
        return str(info.model_uri), str(info.model_id)

    def _as_registered(self, version: Any, reused: bool = False) -> RegisteredVersion:
        version_tags = dict(version.tags or {})
        return RegisteredVersion(
            name=version.name, version=str(version.version), run_id=version.run_id or "",
            status=version_tags.get(T.APPROVAL_STATUS, "unknown"), tags=version_tags, reused=reused,
            source=str(version.source or ""), model_id=str(getattr(version, "model_id", None) or ""),
            aliases=list(getattr(version, "aliases", None) or []), description=str(version.description or ""),
        )

    def artifact_location(self, version: RegisteredVersion) -> str:
        """Where the version's files physically are: a logged model's artifact location, else its source."""
        if version.model_id and version.source.startswith("models:/"):
            try:
                return str(self.client.get_logged_model(version.model_id).artifact_location)
            except Exception:  # an older server, or a model kept elsewhere: the source is what we have
                log.debug("no logged model %s behind %s", version.model_id, version.source, exc_info=True)
        return version.source


def _requirements() -> list[str]:
    """Pin what the pyfunc model needs to load, from what is installed here."""
    wanted = ("torch", "transformers", "peft", "mlflow", "pydantic")
    pins = []
    for name in wanted:
        try:
            pins.append(f"{name}=={metadata.version(name).split('+')[0]}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat
