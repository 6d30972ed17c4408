"""Training memory: an estimate before the run, and what this machine has to give.

The estimate counts bytes, not guesses: weights (every parameter), gradients and AdamW's two
moments (trainable parameters only, moments in fp32), and activations (a per-token, per-layer
budget plus the logits), so LoRA and full fine-tuning are told apart by the numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

GB = 1024**3
# Bytes kept per token and layer for the backward pass (attention and MLP inputs and outputs,
# norms, residuals) in units of hidden size; about 16 values of 4 bytes for a Llama-style block.
ACTIVATION_VALUES_PER_HIDDEN = 16
CHECKPOINTED_VALUES_PER_HIDDEN = 2
FRAMEWORK_OVERHEAD = int(0.6 * GB)  # the interpreter, torch, tokenizer and dataset


class MemoryEstimate(BaseModel):
    """Peak training memory, in bytes, by where it goes."""

    model_config = ConfigDict(frozen=True)
    weights: int
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    trainable_params: int
    total_params: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.overhead

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "activations", "overhead")
        return f"{self.total / GB:.2f} GB = " + " + ".join(f"{p} {getattr(self, p) / GB:.2f}" for p in parts)

    def refusal(self, limit: int, method: str, batch_size: int, checkpointing: bool) -> str:
        """Why a run cannot fit, and what would."""
        hints = []
        if method == "full":
            hints.append("method: lora (trains under 1% of the parameters; no full gradients or optimizer states)")
        if batch_size > 1:
            fits = max(1, int(batch_size * max(limit - (self.total - self.activations), 0) / max(self.activations, 1)))
            if fits < batch_size:
                hints.append(f"batch_size: {fits} with gradient_accumulation_steps: {-(-batch_size // fits)}")
        if not checkpointing:
            hints.append("gradient_checkpointing: true")
        hints.append("or the aws backend (a SageMaker training instance)")
        return (f"finetune: this run needs about {self.total / GB:.1f} GB ({self.describe()}) but "
                f"{limit / GB:.2f} GB is available; try {'; '.join(hints)}")


def estimate_training_memory(*, total_params: int, trainable_params: int, bytes_per_param: int, batch_size: int,
                             seq_len: int, hidden_size: int, layers: int, vocab_size: int,
                             gradient_checkpointing: bool = False) -> MemoryEstimate:
    """Bytes for weights, gradients, AdamW moments, activations and runtime overhead."""
    per_token = CHECKPOINTED_VALUES_PER_HIDDEN if gradient_checkpointing else ACTIVATION_VALUES_PER_HIDDEN
    tokens = batch_size * seq_len
    activations = tokens * hidden_size * layers * per_token * 4 + tokens * vocab_size * 4 // 8  # logits: last 1/8
    return MemoryEstimate(
        weights=total_params * bytes_per_param,
        gradients=trainable_params * bytes_per_param,
        optimizer=trainable_params * 8,  # AdamW: two fp32 moments per trainable parameter
        activations=activations,
        overhead=FRAMEWORK_OVERHEAD,
        trainable_params=trainable_params,
        total_params=total_params,
    )


def available_memory() -> int:
    """Memory this process may still use: the cgroup limit if there is one, else what the OS has free."""
    available = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    cgroup = Path("/sys/fs/cgroup/memory.max")
    if cgroup.exists():
        limit = cgroup.read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text()) if Path("/sys/fs/cgroup/memory.current").exists() else 0
            available = min(available, int(limit) - used)
    return available
