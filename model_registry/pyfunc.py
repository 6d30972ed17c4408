"""The MLflow pyfunc flavour of a candidate: the adapter as an artifact, the base model by reference.

Logging the whole base model would copy it into every version; the adapter is a few MB.
`mlflow models serve` and `mlflow.pyfunc.load_model` load the base model from the recorded
path and merge the adapter on load. Inputs are raw records (a dialogue); the prompt template
recorded with the version is applied here, the same way as at training and evaluation.
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel


class AdapterModel(PythonModel):
    """Generates with a base model plus the version's LoRA adapter (or its full weights)."""

    def load_context(self, context: Any) -> None:
        from steps.generation import GenerationSettings, load_model

        config = context.model_config
        weights = context.artifacts["weights"]
        if config["kind"] == "adapter":
            self._model = load_model(config["base_model_path"], weights, name="candidate")
        else:
            self._model = load_model(weights, None, name="candidate")
        self._template: str = config["template"]
        self._settings = GenerationSettings.model_validate(config["generation"])
        self._config = dict(config)

    @property
    def loaded(self) -> Any:
        """The underlying `steps.generation.LoadedModel`, for in-process evaluation and serving."""
        return self._model

    @property
    def template(self) -> str:
        return self._template

    @property
    def settings(self) -> Any:
        """The version's `GenerationSettings`."""
        return self._settings

    @property
    def config(self) -> dict[str, Any]:
        """The model config the version was logged with (base model path, kind, template, generation)."""
        return self._config

    def predict(self, context: Any, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from steps.generation import generate
        from steps.prompts import render_prompt

        texts = _texts(model_input)
        settings = self._settings
        if params:
            settings = settings.model_copy(update={k: v for k, v in params.items() if k in type(settings).model_fields})
        return generate(self._model, [render_prompt(self._template, t) for t in texts], settings)


def _texts(model_input: Any) -> list[str]:
    """Accept a list of strings, one string, or a DataFrame whose first column holds the inputs."""
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "iloc"):  # pandas DataFrame from dataframe_split / dataframe_records
        column = "inputs" if "inputs" in model_input.columns else model_input.columns[0]
        return [str(v) for v in model_input[column].tolist()]
    return [str(v) for v in model_input]
