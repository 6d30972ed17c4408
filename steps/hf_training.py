"""The transformers side of fine-tuning: tokenising, batching, the loss and progress reports.

Kept apart from `steps.finetune` so that reading a config never imports transformers.
Batches are left-padded so every target ends at the last position: the loss then needs the
logits of the last few positions only, which spares most of the vocabulary projection, the
largest single matrix of a small model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback

from steps.data import Example

log = logging.getLogger("steps.finetune")

MetricsCallback = Callable[[int, dict[str, float]], None]


def tokenize(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_len: int) -> list[dict[str, list[int]]]:
    """Prompt + target + EOS, the prompt masked out of the labels; an over-long prompt loses its start."""
    rows = []
    for example in examples:
        prompt = tokenizer(example.prompt, add_special_tokens=True)["input_ids"]
        target = tokenizer(" " + example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        target = target[: max_len // 2]
        prompt = prompt[-(max_len - len(target)):]
        rows.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    return rows


class LeftPadCollator:
    """Left-pads a batch so all sequences end together; positions count from each first real token."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad = pad_token_id

    def __call__(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids, labels, mask, positions = [], [], [], []
        for r in rows:
            n = len(r["input_ids"])
            ids.append([self.pad] * (width - n) + r["input_ids"])
            labels.append([-100] * (width - n) + r["labels"])
            mask.append([0] * (width - n) + [1] * n)
            positions.append([0] * (width - n) + list(range(n)))
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask), "position_ids": torch.tensor(positions)}


def target_only_loss(model: Any, inputs: dict[str, torch.Tensor], num_items: Any = None) -> torch.Tensor:
    """Causal-LM loss from the logits of the positions that predict a label, and those only."""
    labels = inputs["labels"]
    labelled = (labels != -100).any(dim=0).nonzero()
    first = int(labelled[0]) if len(labelled) else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1  # the position before the first label predicts it
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    position_ids=inputs["position_ids"], logits_to_keep=keep)
    logits = outputs.logits[:, :-1, :].float()
    targets = labels[:, labels.shape[1] - keep + 1:]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    count = num_items if num_items is not None else (targets != -100).sum()
    return loss / count


class TargetOnlyLossTrainer(Trainer):
    """A Trainer whose loss skips the logits nobody needs; it is normalised over the accumulated tokens."""

    loss_is_scaled_for_ga = True

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        loss = target_only_loss(model, inputs, num_items_in_batch if model.training else None)
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: Any = None) -> Any:
        with torch.no_grad():
            loss = target_only_loss(model, self._prepare_inputs(inputs))
        return loss.detach(), None, None


class Progress(TrainerCallback):
    """Reports steps, loss and ETA to the log, and every number to an optional sink (MLflow)."""

    def __init__(self, total: int, sink: MetricsCallback | None) -> None:
        self.total, self.sink = total, sink
        self.started = time.monotonic()
        self.first_step: int | None = None

    def record(self, step: int, metrics: dict[str, float]) -> None:
        if self.sink is not None:
            self.sink(step, metrics)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
        step = state.global_step
        numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float) and math.isfinite(v)}
        if "loss" in numbers:
            if self.first_step is None:  # a resumed run starts counting here
                self.first_step, self.started = step, time.monotonic()
            done = step - self.first_step
            eta = duration((time.monotonic() - self.started) / done * (self.total - step)) if done else "…"
            log.info("step %d/%d  loss %.3f  lr %.2e  eta %s", step, self.total, numbers["loss"],
                     numbers.get("learning_rate", 0.0), eta)
        elif "eval_loss" in numbers:
            log.info("step %d/%d  validation loss %.3f", step, self.total, numbers["eval_loss"])
        wanted = {k: v for k, v in numbers.items() if k in ("loss", "eval_loss", "learning_rate", "grad_norm")}
        if wanted:
            self.record(step, wanted)


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def plot_losses(history: Sequence[dict[str, Any]], eval_before: float, path: Path) -> Path:
    """A PNG of training loss per step and validation loss where it was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
    evals = [(0, eval_before)] + [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e and "step" in e]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axes.plot(*zip(*train, strict=True), label="training loss", color="#4477aa", linewidth=1.2)
    axes.plot(*zip(*evals, strict=True), "o-", label="validation loss", color="#cc6677")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (target tokens)")
    axes.set_title("Fine-tuning loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
