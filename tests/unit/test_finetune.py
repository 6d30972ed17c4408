"""The local trainer on a tiny model: bad inputs refused before any work, memory planning, LoRA and
full fine-tuning, epochs, early stopping and the loss curve."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from steps.data import Example
from steps.finetune import FinetuneConfig, FinetuneError, finetune, plan_memory
from steps.memory import estimate_training_memory
from steps.sample_data import generate_records

RECORDS = list(generate_records(120, seed=5))
TRAIN = [Example(id=r["id"], prompt=f"Summarize.\n\n{r['dialogue']}\n\nSummary:", target=r["summary"])
         for r in RECORDS[:96]]
VALIDATION = [Example(id=r["id"], prompt=f"Summarize.\n\n{r['dialogue']}\n\nSummary:", target=r["summary"])
              for r in RECORDS[96:]]


def quick(**overrides: object) -> FinetuneConfig:
    return FinetuneConfig.model_validate({"max_steps": 4, "batch_size": 4, "eval_samples": 8, "save_steps": 2,
                                          "learning_rate": 0.01, **overrides})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lora": {"target_modules": ["q_proj", "query"]}},
     r"finetune\.lora\.target_modules: \['query'\] are not linear layers of .*allowed: \[.*'q_proj'"),
])
def test_unknown_target_modules_are_refused_with_the_allowed_names(
    tiny_model_dir: Path, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(FinetuneError, match=message):
        finetune(TRAIN, VALIDATION, quick(**overrides), tiny_model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_rank_of_zero_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"lora\.r\n  Input should be greater than 0"):
        quick(lora={"r": 0})


def test_missing_or_incomplete_base_model_folders_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FinetuneError, match="is not a folder"):
        finetune(TRAIN, VALIDATION, quick(), tmp_path / "nowhere", tmp_path / "out")
    no_tokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model_dir, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(FinetuneError, match="has no tokenizer"):
        finetune(TRAIN, VALIDATION, quick(), no_tokenizer, tmp_path / "out")
    with pytest.raises(FinetuneError, match="no training rows"):
        finetune([], VALIDATION, quick(), tiny_model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_memory_estimate_separates_lora_from_full_fine_tuning() -> None:
    common = {"total_params": 135_000_000, "bytes_per_param": 4, "batch_size": 8, "seq_len": 256,
              "hidden_size": 576, "layers": 30, "vocab_size": 49152}
    lora = estimate_training_memory(trainable_params=900_000, **common)
    full = estimate_training_memory(trainable_params=135_000_000, **common)
    assert lora.weights == full.weights == 540_000_000
    assert full.gradients == 540_000_000 and full.optimizer == 1_080_000_000
    assert lora.gradients + lora.optimizer < 0.01 * (full.gradients + full.optimizer)
    checkpointed = estimate_training_memory(trainable_params=900_000, gradient_checkpointing=True, **common)
    assert checkpointed.activations < lora.activations / 4


def test_plan_reads_the_model_shape_without_loading_weights(tiny_model_dir: Path) -> None:
    lora, full = plan_memory(quick(), tiny_model_dir), plan_memory(quick(method="full"), tiny_model_dir)
    assert lora.total_params == full.total_params == full.trainable_params
    assert 0 < lora.trainable_params < 0.01 * lora.total_params


def test_a_run_that_cannot_fit_is_refused_with_what_would(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FinetuneError) as caught:
        finetune(TRAIN, VALIDATION, quick(method="full", memory_limit_gb=0.05), tiny_model_dir, tmp_path / "out")
    message = str(caught.value)
    assert "needs about" in message and "0.05 GB is available" in message
    assert "method: lora" in message and "gradient_checkpointing: true" in message
    assert not (tmp_path / "out").exists()


def test_lora_trains_a_small_adapter_and_draws_its_loss_curve(tiny_model_dir: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    trained = finetune(TRAIN, VALIDATION, quick(eval_steps=2), tiny_model_dir, tmp_path / "out",
                       on_metrics=lambda step, metrics: seen.append((step, metrics)))
    assert trained.kind == "adapter" and (Path(trained.path) / "adapter_config.json").exists()
    assert trained.metrics["trainable_fraction"] < 0.01 and trained.metrics["steps"] == 4
    assert trained.metrics["eval_loss"] < trained.metrics["eval_loss_before"]
    assert [s for s, m in seen if "loss" in m] == [1, 2, 3, 4]
    assert [s for s, m in seen if "eval_loss" in m] == [0, 2, 4]
    assert trained.loss_curve and Path(trained.loss_curve).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "out" / "checkpoints").exists()
    again = finetune(TRAIN, VALIDATION, quick(eval_steps=2), tiny_model_dir, tmp_path / "out")
    assert again.reused and again.path == trained.path


def test_full_fine_tuning_saves_the_whole_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    trained = finetune(TRAIN, VALIDATION, quick(method="full", learning_rate=0.001), tiny_model_dir, tmp_path / "out")
    assert trained.kind == "full" and trained.metrics["trainable_fraction"] == 1.0
    assert (Path(trained.path) / "config.json").exists() and (Path(trained.path) / "tokenizer.json").exists()


def test_epochs_replace_max_steps(tiny_model_dir: Path, tmp_path: Path) -> None:
    trained = finetune(TRAIN, VALIDATION, quick(epochs=0.5), tiny_model_dir, tmp_path / "out")
    assert trained.metrics["steps"] == 12  # 96 rows / batch 4 = 24 steps an epoch


def test_early_stopping_ends_a_diverging_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = quick(max_steps=40, learning_rate=0.9, warmup_steps=0, eval_steps=2, save_steps=2,
                   early_stopping_patience=2)
    trained = finetune(TRAIN, VALIDATION, config, tiny_model_dir, tmp_path / "out")
    assert trained.metrics["stopped_early"] == 1 and trained.metrics["steps"] < 40


def test_early_stopping_needs_evaluations_and_aligned_checkpoints() -> None:
    with pytest.raises(ValidationError, match="early_stopping_patience needs eval_steps"):
        quick(early_stopping_patience=2)
    with pytest.raises(ValidationError, match=r"save_steps .* must be a multiple of eval_steps"):
        quick(early_stopping_patience=2, eval_steps=3, save_steps=4)
