"""What runs behind an endpoint: request schema, the loaded model, and SageMaker's inference-script hooks.

The same module serves locally (`serving.model_server` calls `Predictor`) and as the inference
script of a SageMaker Hugging Face container (`model_fn`, `input_fn`, `predict_fn`, `output_fn`),
so a request gets the same answer in both places.

Requests follow the Hugging Face LLM container's shape:
`{"inputs": "dialogue…" | ["…", …], "parameters": {"max_new_tokens": 48, "temperature": 0, …}}`;
the answer is `[{"generated_text": "…"}, …]`, one per input. Inputs are raw records: the prompt
template recorded with the model version is applied here, as at training and evaluation time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steps.generation import GenerationSettings, LoadedModel

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoints refuse larger payloads
MAX_INPUTS = 64


class RequestError(ValueError):
    """The request is malformed (HTTP 400); the message names the field."""


class ModelError(RuntimeError):
    """The model could not answer this request (HTTP 424, SageMaker's ModelError)."""


class Parameters(BaseModel):
    """Per-request decoding parameters (the subset of the HF LLM container's that applies here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_new_tokens: int | None = Field(None, gt=0, le=1024)
    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    do_sample: bool | None = None
    seed: int | None = None
    prompt_format: Literal["template", "chat"] | None = Field(
        None, description="template (the default): inputs are records, the version's template makes the prompts; "
                          "chat: inputs are questions, asked in the tokenizer's chat template")


class Invocation(BaseModel):
    """One parsed request."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    inputs: str | list[str]
    parameters: Parameters = Parameters()

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


def parse_request(body: bytes, content_type: str = "application/json") -> Invocation:
    """Parse and validate a request body; raises RequestError naming what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    kind = content_type.split(";")[0].strip().lower()
    if kind not in ("application/json", "", "*/*"):
        raise RequestError(f"Content-Type {content_type!r} is not supported; send application/json")
    try:  # the common case in one pass; anything unusual takes the path below, which names the problem
        return _checked(Invocation.model_validate_json(body))
    except ValidationError:
        pass
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # 100,000 "[" must not take down the thread that parses it
        raise RequestError("body is nested too deeply to be a request") from None
    if isinstance(document, str):  # a bare string is one input
        document = {"inputs": document}
    if not isinstance(document, dict):
        raise RequestError(f"body must be a JSON object with 'inputs', not {type(document).__name__}")
    try:
        invocation = Invocation.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("str", "list[")))
        raise RequestError(f"{where or 'body'}: {first['msg']}") from None
    return _checked(invocation)


def _checked(invocation: Invocation) -> Invocation:
    texts = invocation.texts
    if not texts:
        raise RequestError("inputs: must hold at least one input")
    if len(texts) > MAX_INPUTS:
        raise RequestError(f"inputs: {len(texts)} inputs in one request; the limit is {MAX_INPUTS}")
    for index, text in enumerate(texts):
        if not text.strip():
            raise RequestError(f"inputs[{index}]: is empty" if isinstance(invocation.inputs, list) else "inputs: is empty")
    return invocation


class ModelCard(BaseModel):
    """How a served model was loaded."""

    model_config = ConfigDict(frozen=True)
    source: str
    base_model: str
    adapter: str | None = None
    template: str = "{input}"
    generation: GenerationSettings = GenerationSettings()
    build: str = Field("unoptimized", description="the serving build loaded (steps.optimize), or the unoptimized "
                                                  "weights")
    max_batch_size: int | None = Field(None, description="the batch the build was measured and re-gated at")


class Predictor:
    """A loaded model that answers batches of texts with one `generate` call per parameter set."""

    def __init__(self, loaded: LoadedModel, card: ModelCard) -> None:
        self.loaded, self.card = loaded, card
        self._settings: dict[Parameters, GenerationSettings] = {}
        config = getattr(loaded.model, "config", None)
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 0)

    @classmethod
    def load(cls, source: str | Path) -> Predictor:
        """Load an MLflow model (a `models:/` URI or a folder with an MLmodel file) or a Hugging Face folder."""
        from steps.generation import load_model

        text = str(source)
        path = Path(text)
        if text.startswith(("models:/", "runs:/")) or (path / "MLmodel").exists():
            return cls._load_mlflow(text)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{text}: neither an MLflow model (no MLmodel) nor a Hugging Face model folder "
                                    "(no config.json)")
        adapter = path if (path / "adapter_config.json").exists() else None
        if adapter is not None:
            base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
            return cls(load_model(base, adapter), ModelCard(source=text, base_model=base, adapter=str(adapter)))
        return cls(load_model(path), ModelCard(source=text, base_model=text))

    @classmethod
    def _load_mlflow(cls, uri: str) -> Predictor:
        import mlflow.pyfunc

        wrapper = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        config = wrapper.config
        card = ModelCard(source=uri, base_model=str(config.get("base_model_path", "")),
                         adapter="merged" if config.get("kind") == "adapter" else None,
                         template=wrapper.template, generation=wrapper.settings)
        return cls(wrapper.loaded, card)

    def settings(self, parameters: Parameters) -> GenerationSettings:
        """The model's recorded settings with a request's parameters applied (remembered per parameter set)."""
        known = self._settings.get(parameters)
        if known is not None:
            return known
        update = {k: v for k, v in parameters.model_dump().items() if v is not None and k != "do_sample"}
        if parameters.do_sample is False:
            update["temperature"] = 0.0
        settings = self.card.generation.model_copy(update=update)
        if len(self._settings) >= 256:
            self._settings.clear()
        self._settings[parameters] = settings
        return settings

    def prompts(self, texts: Sequence[str], settings: GenerationSettings) -> list[str]:
        """The prompts for raw inputs; raises ModelError for one the model cannot take."""
        from steps.generation import chat_prompts
        from steps.prompts import render_prompt

        if settings.prompt_format == "chat":
            prompts = chat_prompts(self.loaded.tokenizer, texts)
        else:
            prompts = [render_prompt(self.card.template, t) for t in texts]
        if self.context_length:
            for index, prompt in enumerate(prompts):
                size = len(self.loaded.tokenizer(prompt).input_ids)
                if size + settings.max_new_tokens > self.context_length:
                    raise ModelError(f"input {index} is {size} tokens; with max_new_tokens {settings.max_new_tokens} "
                                     f"it exceeds the model's context of {self.context_length} tokens")
        return prompts

    def generate(self, prompts: Sequence[str], settings: GenerationSettings,
                 stop: Callable[[], bool] | None = None) -> list[str]:
        """One batched generate call; any failure of the model is a ModelError. `stop` ends it early."""
        from steps.generation import generate

        try:
            return generate(self.loaded, prompts, settings.model_copy(update={"batch_size": max(1, len(prompts))}),
                            stop)
        except Exception as exc:
            log.exception("generate failed for a batch of %d", len(prompts))
            raise ModelError(f"{type(exc).__name__}: {exc}") from exc

    def predict(self, invocation: Invocation) -> list[dict[str, str]]:
        settings = self.settings(invocation.parameters)
        return [{"generated_text": text} for text in self.generate(self.prompts(invocation.texts, settings), settings)]


def load_served(source: str | Path) -> Predictor:
    """What a model server serves from `source`: like SageMaker's inference toolkit, a model folder that ships
    `code/inference.py` with a `model_fn` is loaded by that function; anything else by `Predictor.load`."""
    import importlib.util
    import sys

    script = Path(str(source)) / "code" / "inference.py"
    if not script.is_file():
        return Predictor.load(source)
    sys.path.insert(0, str(script.parent))  # the script may import modules shipped beside it
    spec = importlib.util.spec_from_file_location(f"inference_{abs(hash(str(script)))}", script)
    if spec is None or spec.loader is None:
        raise ImportError(f"{script}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model_fn_of_script = getattr(module, "model_fn", None)
    if model_fn_of_script is None:
        return Predictor.load(source)  # the toolkit's default model_fn
    loaded = model_fn_of_script(str(source))
    if not isinstance(loaded, Predictor):
        raise TypeError(f"{script}: model_fn returned a {type(loaded).__name__}; the model server serves a "
                        "serving.handler.Predictor (or a subclass)")
    return loaded


# --- the SageMaker Hugging Face inference toolkit's hooks -----------------------------------------

def model_fn(model_dir: str, context: Any = None) -> Predictor:
    """Load the model shipped in `model_dir` (an MLflow model folder or a Hugging Face folder)."""
    return Predictor.load(model_dir)


def input_fn(input_data: bytes | str, content_type: str, context: Any = None) -> Invocation:
    body = input_data.encode() if isinstance(input_data, str) else input_data
    return parse_request(body, content_type)


def predict_fn(data: Invocation, model: Predictor, context: Any = None) -> list[dict[str, str]]:
    started = time.perf_counter()
    answer = model.predict(data)
    log.debug("predicted %d inputs in %.1f ms", len(data.texts), (time.perf_counter() - started) * 1000)
    return answer


def output_fn(prediction: list[dict[str, str]], accept: str, context: Any = None) -> str:
    if accept and accept.split(";")[0].strip() not in ("application/json", "*/*"):
        raise RequestError(f"Accept {accept!r} is not supported; accept application/json")
    return json.dumps(prediction)
