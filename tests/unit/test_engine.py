"""The guarded output layer: float32 decides exactly the near ties, reduced precision the rest."""

from __future__ import annotations

import pytest
import torch

from steps.engine import GuardedHead


@pytest.mark.parametrize("rank", [0, 6, 12])  # how many of the 12 positions' gaps lie under the margin
@torch.inference_mode()
def test_near_ties_are_recomputed_in_float32_and_the_rest_left_alone(rank: int) -> None:
    torch.manual_seed(0)
    weights = torch.randn(50, 8)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight.data = weights.to(torch.bfloat16)
    hidden = torch.randn(4, 3, 8).to(torch.bfloat16)
    exact = torch.nn.functional.linear(hidden.float(), weights)
    rounded = head(hidden).float()
    assert not torch.allclose(rounded, exact, rtol=0, atol=1e-3)  # bfloat16 rounding is far coarser

    best = rounded.topk(2, dim=-1).values
    gap = best[..., 0] - best[..., 1]
    ordered = [-1.0, *gap.flatten().sort().values.tolist(), 1e9]
    margin = (ordered[rank] + ordered[rank + 1]) / 2 if 0 < rank < 12 else (1e-12 if rank == 0 else 1e9)
    guarded = GuardedHead(head, weights, margin=margin)
    logits = guarded(hidden)
    near = gap < margin
    assert guarded.recomputed == int(near.sum()) and guarded.positions == 12 and logits.dtype == torch.float32
    assert torch.allclose(logits[near], exact[near], rtol=0, atol=1e-5)
    assert torch.equal(logits[~near], rounded[~near])
    assert guarded.weight is head.weight  # what transformers reads of an output layer
    if rank == 12:
        assert bool(near.all())
