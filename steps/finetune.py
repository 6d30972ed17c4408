"""The `finetune` stage: LoRA (or full) fine-tuning of a causal LM with transformers + peft.

Training runs through the transformers `Trainer` (gradient accumulation, checkpoints and
resume, evaluation, seeding); `steps.hf_training` holds its transformers-specific parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from steps.base_model import DEFAULT_BASE_MODEL
from steps.data import Example

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MetricsCallback = Callable[[int, dict[str, float]], None]  # (step, metrics)
_DONE_MARKER = "training-complete.json"


class LoraSettings(BaseModel):
    """Low-rank adapter shape: rank, scaling, dropout and which projections get adapters."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    r: int = Field(8, gt=0, le=1024)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)


class FinetuneConfig(BaseModel):
    """How to fine-tune: base model, method, schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    base_model: str = Field(DEFAULT_BASE_MODEL, description="builtin:<name> or a path to a local Hugging Face folder")
    method: Literal["lora", "full"] = "lora"
    lora: LoraSettings = LoraSettings()
    max_steps: int = Field(24, gt=0)
    batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(3e-3, gt=0, lt=1)
    warmup_steps: int = Field(2, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_seq_len: int = Field(512, ge=16)
    eval_samples: int = Field(24, gt=0, description="validation records used for the validation loss")
    eval_steps: int | None = Field(None, gt=0, description="also measure validation loss every N steps")
    save_steps: int = Field(10, gt=0)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 42

    @field_validator("base_model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("base_model must name a built-in model or a folder")
        return value

    def digest(self) -> str:
        """A short hash of everything that changes the trained weights."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class TrainedModel(BaseModel):
    """A fine-tuned candidate: where its weights are and how it was made."""

    model_config = ConfigDict(frozen=True)
    path: str  # the adapter folder (LoRA) or the full model folder
    kind: Literal["adapter", "full"]
    base_model: str  # the configured reference, e.g. builtin:smollm2-135m-instruct
    base_model_path: str
    metrics: dict[str, float]
    reused: bool = False


class FinetuneError(ValueError):
    """The fine-tuning inputs cannot work; raised before any training starts."""


def finetune(
    train: Sequence[Example],
    validation: Sequence[Example],
    config: FinetuneConfig,
    base_model_path: Path,
    output_dir: Path,
    on_metrics: MetricsCallback | None = None,
) -> TrainedModel:
    """Fine-tune the base model on `train`; resume from a checkpoint in `output_dir` if one exists."""
    if not train:
        raise FinetuneError("finetune: the dataset has no training rows")
    if not validation:
        raise FinetuneError("finetune: the dataset has no validation rows")
    done = output_dir / _DONE_MARKER
    if done.exists():
        log.info("reusing the finished training in %s", output_dir)
        return TrainedModel.model_validate({**json.loads(done.read_text()), "reused": True})

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainingArguments, set_seed

    from steps.hf_training import LeftPadCollator, Progress, TargetOnlyLossTrainer, duration, tokenize

    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = _dtype(config.precision)
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=dtype)
    total_params = sum(p.numel() for p in model.parameters())
    if config.method == "lora":
        model = _with_lora(model, config.lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("training %s of %s parameters (%.2f%%) with %s", f"{trainable:,}", f"{total_params:,}",
             100 * trainable / total_params, config.method)

    train_rows = tokenize(train, tokenizer, config.max_seq_len)
    eval_rows = tokenize(validation[: config.eval_samples], tokenizer, config.max_seq_len)
    checkpoints = output_dir / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        logging_steps=1,
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        bf16=dtype == torch.bfloat16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    progress = Progress(config.max_steps, on_metrics)
    trainer = TargetOnlyLossTrainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
        data_collator=LeftPadCollator(tokenizer.pad_token_id), callbacks=[progress],
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through the log, one line a step
    resume = _last_checkpoint(checkpoints)
    started = time.monotonic()
    if resume is None:
        before = trainer.evaluate()["eval_loss"]
        progress.record(0, {"eval_loss": before})
        (output_dir / "eval_loss_before.json").write_text(json.dumps({"eval_loss": before}))
    else:
        log.info("resuming from %s", resume)
        before = json.loads((output_dir / "eval_loss_before.json").read_text())["eval_loss"]
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    after = _final_eval_loss(trainer, config.max_steps)
    seconds = time.monotonic() - started

    if config.method == "lora":
        path, kind = output_dir / "adapter", "adapter"
    else:
        path, kind = output_dir / "model", "full"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    tokens = sum(len(r["input_ids"]) for r in train_rows) * _epochs_seen(config, len(train_rows))
    metrics = {
        "train_loss": float(result.training_loss),
        "eval_loss_before": float(before),
        "eval_loss": float(after),
        "trainable_params": float(trainable),
        "total_params": float(total_params),
        "trainable_fraction": trainable / total_params,
        "train_seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "resumed": float(resume is not None),
    }
    trained = TrainedModel(path=str(path), kind=kind, base_model=config.base_model,
                           base_model_path=str(base_model_path), metrics=metrics)
    done.write_text(trained.model_dump_json(indent=2))
    shutil.rmtree(checkpoints, ignore_errors=True)
    log.info("validation loss %.3f -> %.3f in %s", before, after, duration(seconds))
    return trained


def _with_lora(model: Any, lora: LoraSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = sorted(set(lora.target_modules) - names)
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if type(m).__name__ == "Linear" and "." in n})
        raise FinetuneError(f"finetune.lora.target_modules: {unknown} are not modules of this model; "
                            f"allowed: {linear}")
    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))


def _final_eval_loss(trainer: Any, last_step: int) -> float:
    """The validation loss after the last step: from the trainer's own last evaluation if it ran one."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry.get("step") == last_step:
                return float(entry["eval_loss"])
            break
    return float(trainer.evaluate()["eval_loss"])


def _dtype(precision: str) -> torch.dtype:
    import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32  # CPUs without native bf16 run fp32 faster


def _last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]), default=None)


def _epochs_seen(config: FinetuneConfig, rows: int) -> float:
    return config.max_steps * config.batch_size * config.gradient_accumulation_steps / rows
