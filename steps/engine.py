"""Serving-engine parts of the optimized builds (`steps.optimize`), loaded by `steps.generation.load_build` in
the endpoint's process: they import torch at once, so nothing else imports them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class GuardedHead(torch.nn.Module):
    """An output layer in reduced precision that recomputes, in float32, the logits of every position whose two
    best tokens are closer than `margin`: the near ties, where rounding can make greedy decoding pick the other
    token. Elsewhere the reduced-precision logits decide, which is where nearly all the speed is."""

    def __init__(self, head: torch.nn.Module, weights: torch.Tensor, margin: float) -> None:
        super().__init__()
        self.head, self.margin = head, margin
        self.register_buffer("float32_weight", weights.to(torch.float32), persistent=False)
        self.float32_weight: torch.Tensor
        self.recomputed = self.positions = 0  # how often the guard stepped in, for benchmarks

    @property
    def weight(self) -> Any:  # what transformers reads of an output layer
        return self.head.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden).float()
        best = logits.topk(2, dim=-1).values
        near = (best[..., 0] - best[..., 1]) < self.margin
        self.positions += near.numel()
        if bool(near.any()):
            self.recomputed += int(near.sum())
            logits[near] = F.linear(hidden[near].float(), self.float32_weight)
        return logits
