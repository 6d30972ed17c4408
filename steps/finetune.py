"""The `finetune` stage: one `Trainer` port, a local LoRA/full trainer and a SageMaker JumpStart trainer.

The local trainer runs transformers + peft in process through the transformers `Trainer`
(gradient accumulation, checkpoints and resume, evaluation, early stopping, seeding);
`steps.hf_training` holds its transformers-specific parts and `steps.jumpstart` the AWS one.
Every input is checked before any work starts, and a local run that cannot fit in memory is
refused with what would fit instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steps.base_model import DEFAULT_BASE_MODEL, BaseModelError, check_model_folder, resolve_base_model
from steps.data import Example, PreparedDataset
from steps.memory import MemoryEstimate, available_memory, estimate_training_memory

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


@lru_cache(maxsize=1)
def sagemaker_training_instance_types() -> tuple[str, ...]:
    """Every instance type CreateTrainingJob accepts, from botocore's model of the SageMaker API."""
    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("TrainingInstanceType")
    return tuple(shape.enum)


class JumpStartSettings(BaseModel):
    """What the aws backend trains: a JumpStart model on SageMaker, and on what hardware."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model_id: str = Field("meta-textgeneration-llama-3-2-1b-instruct", min_length=1)
    model_version: str | None = Field(None, description="a JumpStart model version; the latest when unset")
    accept_eula: bool = Field(False, description="gated models (Llama) need the EULA accepted")
    instance_type: str = "ml.g5.2xlarge"
    instance_count: int = Field(1, ge=1, le=64, description="more than 1 trains distributed")
    volume_size_gb: int = Field(100, ge=1)
    spot: bool = Field(False, description="managed spot training (needs max_wait_seconds >= max_run_seconds)")
    max_run_seconds: int = Field(4 * 3600, ge=60)
    max_wait_seconds: int | None = Field(None, ge=60, description="spot only; defaults to twice max_run_seconds")
    hyperparameters: dict[str, str] = Field(default_factory=dict, description="passed through as they are")

    @field_validator("instance_type")
    @classmethod
    def _training_instance(cls, value: str) -> str:
        allowed = sagemaker_training_instance_types()
        if value not in allowed:
            raise ValueError(f"{value!r} is not a SageMaker training instance type; allowed: {', '.join(allowed)}")
        return value

    @model_validator(mode="after")
    def _spot_waits_longer_than_it_runs(self) -> JumpStartSettings:
        if self.max_wait_seconds is not None and not self.spot:
            raise ValueError("max_wait_seconds applies to spot training only; set spot: true or remove it")
        if self.spot and self.max_wait_seconds is not None and self.max_wait_seconds < self.max_run_seconds:
            raise ValueError(f"max_wait_seconds ({self.max_wait_seconds}) must be >= max_run_seconds "
                             f"({self.max_run_seconds}) for spot training")
        return self


class FinetuneConfig(BaseModel):
    """How to fine-tune: base model, method, schedule, and the JumpStart job for the aws backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    base_model: str = Field(DEFAULT_BASE_MODEL, description="builtin:<name> or a path to a local Hugging Face folder")
    method: Literal["lora", "full"] = "lora"
    lora: LoraSettings = LoraSettings()
    max_steps: int = Field(24, gt=0, description="optimizer steps (ignored when epochs is set)")
    epochs: float | None = Field(None, gt=0, description="passes over the training split, instead of max_steps")
    batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(3e-3, gt=0, lt=1)
    warmup_steps: int = Field(2, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_seq_len: int = Field(512, ge=16)
    eval_samples: int = Field(24, gt=0, description="validation records used for the validation loss")
    eval_steps: int | None = Field(None, gt=0, description="also measure validation loss every N steps")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="stop after N evaluations without a better validation loss (needs eval_steps)")
    save_steps: int = Field(10, gt=0, description="checkpoint every N steps; a rerun resumes from the last one")
    gradient_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    memory_limit_gb: float | None = Field(None, gt=0, description="refuse local runs estimated above this")
    seed: int = 42
    jumpstart: JumpStartSettings = JumpStartSettings()

    @field_validator("base_model")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("base_model must name a built-in model or a folder")
        return value

    @model_validator(mode="after")
    def _early_stopping_needs_evaluations(self) -> FinetuneConfig:
        if self.early_stopping_patience is not None:
            if self.eval_steps is None:
                raise ValueError("early_stopping_patience needs eval_steps (how often to measure validation loss)")
            if self.save_steps % self.eval_steps:
                raise ValueError(f"with early stopping, save_steps ({self.save_steps}) must be a multiple of "
                                 f"eval_steps ({self.eval_steps}) so the best checkpoint exists")
        return self

    def digest(self) -> str:
        """A short hash of everything that changes the trained weights."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class TrainedModel(BaseModel):
    """A fine-tuned candidate: where its weights are, what it was made from, how training went."""

    model_config = ConfigDict(frozen=True)
    path: str  # the adapter folder (LoRA), the full model folder, or an s3:// model artifact
    kind: Literal["adapter", "full"]
    base_model: str  # the configured reference, e.g. builtin:smollm2-135m-instruct or a JumpStart model id
    base_model_path: str  # a local folder; empty when the base model lives on AWS
    metrics: dict[str, float]
    loss_curve: str | None = None  # a PNG of training and validation loss
    lineage: dict[str, str] = {}
    reused: bool = False


class FinetuneError(ValueError):
    """The fine-tuning inputs cannot work; raised before any training starts."""


class Trainer(Protocol):
    """Fine-tunes a base model on a prepared dataset."""

    def train(self, dataset: PreparedDataset, config: FinetuneConfig,
              on_metrics: MetricsCallback | None = None) -> TrainedModel: ...


class LocalLoraTrainer:
    """transformers + peft in this process; checkpoints and adapters under `runs_dir`."""

    def __init__(self, models_dir: Path, runs_dir: Path) -> None:
        self.models_dir, self.runs_dir = models_dir, runs_dir

    def train(self, dataset: PreparedDataset, config: FinetuneConfig,
              on_metrics: MetricsCallback | None = None) -> TrainedModel:
        base_path = resolve_base_model(config.base_model, self.models_dir)
        trained = finetune(dataset.splits["train"], dataset.splits["validation"], config, base_path,
                           self.runs_dir / f"{dataset.hash[:16]}-{config.digest()}", on_metrics)
        return trained.model_copy(update={"lineage": {"dataset_hash": dataset.hash, "trainer": "local"}})


def run_training(trainer: Trainer, dataset: PreparedDataset, config: FinetuneConfig,
                 on_metrics: MetricsCallback | None = None) -> TrainedModel:
    """Fine-tune with whichever trainer the backend chose."""
    return trainer.train(dataset, config, on_metrics)


def check_inputs(train: Sequence[Example], validation: Sequence[Example], config: FinetuneConfig,
                 base_model_path: Path) -> None:
    """Everything that can be known wrong before loading weights, named with its key."""
    if not train:
        raise FinetuneError("finetune: the dataset has no training rows (data.validation_fraction and "
                            "data.test_fraction leave none, or the source is too small)")
    if not validation:
        raise FinetuneError("finetune: the dataset has no validation rows")
    try:
        check_model_folder(base_model_path)
    except BaseModelError as exc:
        raise FinetuneError(str(exc)) from exc
    if config.method == "lora":
        available = linear_module_names(base_model_path)
        unknown = sorted(set(config.lora.target_modules) - set(available))
        if unknown:
            raise FinetuneError(f"finetune.lora.target_modules: {unknown} are not linear layers of "
                                f"{base_model_path.name}; allowed: {sorted(available)}")


def linear_module_names(model_path: Path) -> set[str]:
    """The short names of the linear layers of a model, read from its config without loading weights."""
    return {name.rsplit(".", 1)[-1] for name, _ in _linear_layers(model_path)}


def _linear_layers(model_path: Path) -> list[tuple[str, tuple[int, int]]]:
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    return [(name, (m.in_features, m.out_features)) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")]


def plan_memory(config: FinetuneConfig, base_model_path: Path) -> MemoryEstimate:
    """Estimate peak training memory for this model, method and batch, without loading weights."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    model_config = AutoConfig.from_pretrained(base_model_path)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(model_config)
    total = sum(p.numel() for p in model.parameters())
    if config.method == "lora":
        targets = set(config.lora.target_modules)
        trainable = sum(config.lora.r * (m.in_features + m.out_features) for name, m in model.named_modules()
                        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)
    else:
        trainable = total
    return estimate_training_memory(
        total_params=total, trainable_params=trainable, bytes_per_param=2 if _dtype(config.precision) == torch.bfloat16 else 4,
        batch_size=config.batch_size, seq_len=config.max_seq_len,
        hidden_size=int(getattr(model_config, "hidden_size", 0) or 0),
        layers=int(getattr(model_config, "num_hidden_layers", 0) or 0),
        vocab_size=int(getattr(model_config, "vocab_size", 0) or 0),
        gradient_checkpointing=config.gradient_checkpointing,
    )


def finetune(
    train: Sequence[Example],
    validation: Sequence[Example],
    config: FinetuneConfig,
    base_model_path: Path,
    output_dir: Path,
    on_metrics: MetricsCallback | None = None,
) -> TrainedModel:
    """Fine-tune the base model on `train`; resume from a checkpoint in `output_dir` if one exists."""
    done = output_dir / _DONE_MARKER
    if done.exists():
        log.info("reusing the finished training in %s", output_dir)
        return TrainedModel.model_validate({**json.loads(done.read_text()), "reused": True})
    check_inputs(train, validation, config, base_model_path)
    estimate = plan_memory(config, base_model_path)
    limit = int(config.memory_limit_gb * 1024**3) if config.memory_limit_gb else available_memory()
    log.info("memory plan: %s (limit %.1f GB)", estimate.describe(), limit / 1024**3)
    if estimate.total > limit:
        raise FinetuneError(estimate.refusal(limit, config.method, config.batch_size, config.gradient_checkpointing))

    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        EarlyStoppingCallback,
        PrinterCallback,
        TrainingArguments,
        set_seed,
    )

    from steps.hf_training import LeftPadCollator, Progress, TargetOnlyLossTrainer, duration, plot_losses, tokenize

    output_dir.mkdir(parents=True, exist_ok=True)
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
    early = config.early_stopping_patience is not None
    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=-1 if config.epochs else config.max_steps,
        num_train_epochs=config.epochs or 1,
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
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        seed=config.seed,
        data_seed=config.seed,
        bf16=dtype == torch.bfloat16,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    steps_total = _planned_steps(config, len(train_rows))
    progress = Progress(steps_total, on_metrics)
    callbacks: list[Any] = [progress]
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = TargetOnlyLossTrainer(
        model=model, args=args, train_dataset=train_rows, eval_dataset=eval_rows,
        data_collator=LeftPadCollator(tokenizer.pad_token_id), callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes through the log, one line a step
    resume = _last_checkpoint(checkpoints)
    started = time.monotonic()
    if resume is None:
        before = trainer.evaluate()["eval_loss"]  # reported at step 0 through the progress callback
        (output_dir / "eval_loss_before.json").write_text(json.dumps({"eval_loss": before}))
    else:
        log.info("resuming from %s", resume)
        before = json.loads((output_dir / "eval_loss_before.json").read_text())["eval_loss"]
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    after = _final_eval_loss(trainer, trainer.state.global_step)
    seconds = time.monotonic() - started

    if config.method == "lora":
        path, kind = output_dir / "adapter", "adapter"
    else:
        path, kind = output_dir / "model", "full"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    curve = output_dir / "loss_curve.png"
    plot_losses(trainer.state.log_history, before, curve)
    steps_run = trainer.state.global_step
    examples_seen = steps_run * config.batch_size * config.gradient_accumulation_steps
    mean_tokens = sum(len(r["input_ids"]) for r in train_rows) / len(train_rows)
    metrics = {
        "train_loss": float(result.training_loss),
        "eval_loss_before": float(before),
        "eval_loss": float(after),
        "steps": float(steps_run),
        "stopped_early": float(early and steps_run < steps_total),
        "trainable_params": float(trainable),
        "total_params": float(total_params),
        "trainable_fraction": trainable / total_params,
        "train_seconds": seconds,
        "tokens_per_second": examples_seen * mean_tokens / seconds if seconds else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "estimated_memory_mb": estimate.total / 1024**2,
        "resumed_from_step": float(int(resume.name.rsplit("-", 1)[-1]) if resume else 0),
    }
    trained = TrainedModel(path=str(path), kind=kind, base_model=config.base_model,
                           base_model_path=str(base_model_path), metrics=metrics, loss_curve=str(curve))
    done.write_text(trained.model_dump_json(indent=2))
    shutil.rmtree(checkpoints, ignore_errors=True)
    log.info("validation loss %.3f -> %.3f in %s", before, after, duration(seconds))
    return trained


def _planned_steps(config: FinetuneConfig, rows: int) -> int:
    if not config.epochs:
        return config.max_steps
    per_epoch = -(-rows // (config.batch_size * config.gradient_accumulation_steps))
    return max(1, round(per_epoch * config.epochs))


def _with_lora(model: Any, lora: LoraSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))


def _final_eval_loss(trainer: Any, last_step: int) -> float:
    """The validation loss after the last step: from the trainer's own last evaluation if it ran one."""
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry:
            if entry.get("step") == last_step and not trainer.args.load_best_model_at_end:
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
