"""Loading a base model (plus an optional LoRA adapter, merged on load) and batched generation.

Shared by evaluation, the MLflow pyfunc model and the model server, so that a prompt gives the
same answer in every place it is asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class GenerationSettings(BaseModel):
    """Decoding settings; temperature 0 means greedy decoding."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_new_tokens: int = Field(48, gt=0, le=4096)
    batch_size: int = Field(8, gt=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    seed: int = 0
    prompt_format: Literal["template", "chat"] = Field(
        "template", description="how a served model turns inputs into prompts: its version's template, or the "
                                "tokenizer's chat template (how the general-skills check asks its questions)")


class Generator(Protocol):
    """The evaluation harness's generation port: the same prompts and settings, answered in this process
    (`InProcess`) or by an endpoint's variant (`steps.endpoint_generation.EndpointGenerator`)."""

    name: str

    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> tuple[list[str], list[float]]:
        """Completions of templated prompts, and each one's share of its batch's wall time (seconds)."""
        ...

    def ask(self, questions: Sequence[str], settings: GenerationSettings) -> list[str]:
        """Answers to bare questions, asked in the model's chat format."""
        ...


class LoadedModel:
    """A model ready for generation, with its tokenizer (left padding for batches)."""

    def __init__(self, model: Any, tokenizer: Any, name: str) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name


DType = Literal["float32", "bfloat16"]


def load_model(base_model_path: str | Path, adapter_path: str | Path | None = None, name: str = "model",
               dtype: DType = "float32") -> LoadedModel:
    """Load a base model, merge a LoRA adapter into it if one is given, and put it in eval mode.

    The adapter is merged in float32 and the merged weights are then cast to `dtype`, so that a bfloat16 build
    rounds each weight once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_path or base_model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    model.eval()
    return LoadedModel(model, tokenizer, name)


BUILD_MANIFEST = "genaiops-build.json"  # in a serving build's folder: its dtype, batch size and engine settings
BUILD_HEAD = "head-float32.safetensors"  # the output layer's float32 weights, for a build that guards its choices


def load_build(folder: str | Path, name: str = "served") -> tuple[LoadedModel, dict[str, Any]]:
    """A serving build (`steps.optimize`) loaded as its manifest says: its dtype, its output layer's settings,
    compiled and warmed up when asked; and the manifest."""
    import json

    folder = Path(folder)
    spec = json.loads((folder / BUILD_MANIFEST).read_text())
    loaded = load_model(folder, None, name=name, dtype=spec.get("dtype", "float32"))
    head = loaded.model.get_output_embeddings()
    # Generation reads the last position of a padded batch (a strided view): handed over as it is, a bfloat16
    # matmul copies the output layer's weights once per row of the batch; made contiguous it is one mm.
    head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    if spec.get("guard_margin"):
        from safetensors.torch import load_file

        from steps.engine import GuardedHead

        weights = load_file(str(folder / BUILD_HEAD))["weight"]
        loaded.model.set_output_embeddings(GuardedHead(head, weights, float(spec["guard_margin"])))
    if spec.get("compile"):
        warm_up(loaded, compile_forward=True, batch_size=int(spec.get("max_batch_size", 1)))
    return loaded, spec


def warm_up(loaded: LoadedModel, *, compile_forward: bool = False, batch_size: int = 1) -> None:
    """Compile the forward pass (when asked) and generate once alone and once at `batch_size`, so that no
    request pays for compiling."""
    import torch

    if compile_forward:
        loaded.model.forward = torch.compile(loaded.model.forward, dynamic=True)
    for size in sorted({1, batch_size}):
        generate(loaded, ["Warm up."] * size, GenerationSettings(max_new_tokens=2, batch_size=size))


def generate(loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings,
             stop: Callable[[], bool] | None = None) -> list[str]:
    """Complete every prompt, in batches of `settings.batch_size`; returns the cleaned completions.

    `stop`, checked after every new token, ends generation early (a server whose callers gave up).
    """
    return generate_timed(loaded, prompts, settings, stop)[0]


def generate_timed(loaded: LoadedModel, prompts: Sequence[str], settings: GenerationSettings,
                   stop: Callable[[], bool] | None = None) -> tuple[list[str], list[float]]:
    """Like `generate`, plus each prompt's share of its batch's wall time (seconds)."""
    import time

    import torch

    tokenizer, outputs, latencies = loaded.tokenizer, list[str](), list[float]()
    sampling = settings.temperature > 0
    extra: dict[str, Any] = {"do_sample": sampling}
    if sampling:
        torch.manual_seed(settings.seed)
        extra.update(temperature=settings.temperature, top_p=settings.top_p)
        if settings.top_k:
            extra["top_k"] = settings.top_k
    if stop is not None:
        from transformers import StoppingCriteria, StoppingCriteriaList

        check: Callable[[], bool] = stop

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return check()

        extra["stopping_criteria"] = StoppingCriteriaList([_Stop()])
    for start in range(0, len(prompts), settings.batch_size):
        batch = list(prompts[start : start + settings.batch_size])
        started = time.perf_counter()
        encoded = tokenizer(batch, return_tensors="pt", padding=True)
        with torch.inference_mode():
            tokens = loaded.model.generate(
                **encoded, max_new_tokens=settings.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, **extra,
            )
        new = tokens[:, encoded["input_ids"].shape[1]:]
        outputs.extend(clean(tokenizer.decode(row, skip_special_tokens=True)) for row in new)
        latencies.extend([(time.perf_counter() - started) / len(batch)] * len(batch))
    return outputs, latencies


def clean(text: str) -> str:
    """The first non-empty line of a completion: answers are one line, anything after is rambling."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def chat_prompts(tokenizer: Any, questions: Sequence[str]) -> list[str]:
    """Questions in the tokenizer's chat template (how an instruct model shows what it knows), or a plain
    question/answer template for a model without one."""
    if getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                              add_generation_prompt=True) for q in questions]
    return [PLAIN_QUESTION.format(question=q) for q in questions]


PLAIN_QUESTION = "Question: {question}\nAnswer:"


class InProcess:
    """A model loaded in this process, as a `Generator`."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded, self.name = loaded, loaded.name

    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> tuple[list[str], list[float]]:
        return generate_timed(self.loaded, prompts, settings)

    def ask(self, questions: Sequence[str], settings: GenerationSettings) -> list[str]:
        return generate_timed(self.loaded, chat_prompts(self.loaded.tokenizer, questions), settings)[0]
