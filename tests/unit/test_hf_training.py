"""The training internals: left padding and the target-only loss agree with the textbook loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steps.data import Example
from steps.hf_training import LeftPadCollator, target_only_loss, tokenize

EXAMPLES = [
    Example(id="1", prompt="Summarize.\n\nAnn: hi\nBob: hello there, how are you?\n\nSummary:", target="They greet."),
    Example(id="2", prompt="Summarize.\n\nCy: the car is ready\n\nSummary:", target="Cy's car is ready on Monday."),
    Example(id="3", prompt="Summarize.\n\nDee: lunch?\nEd: sure\nDee: noon\n\nSummary:", target="Lunch at noon."),
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[object, object]:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_labels_mask_the_prompt_and_end_with_eos(tiny: tuple[object, object]) -> None:
    _, tokenizer = tiny
    rows = tokenize(EXAMPLES, tokenizer, max_len=512)
    for example, row in zip(EXAMPLES, rows, strict=True):
        prompt_len = len(tokenizer(example.prompt)["input_ids"])
        assert row["labels"][:prompt_len] == [-100] * prompt_len
        assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]
        assert row["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(row["input_ids"][prompt_len:-1]).strip() == example.target


def test_over_long_prompts_lose_their_start_not_their_target(tiny: tuple[object, object]) -> None:
    _, tokenizer = tiny
    row = tokenize(EXAMPLES[:1], tokenizer, max_len=16)[0]
    assert len(row["input_ids"]) == 16
    assert tokenizer.decode(row["input_ids"][-1 - len(tokenizer(" They greet.")["input_ids"]) : -1]).strip() == "They greet."


def test_target_only_loss_equals_the_full_right_padded_loss(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    rows = tokenize(EXAMPLES, tokenizer, max_len=512)
    fast = target_only_loss(model, LeftPadCollator(tokenizer.pad_token_id)(rows))

    # Reference: each sequence alone, no padding, all logits, the model's own shifted loss.
    total, count = 0.0, 0
    for row in rows:
        labels = torch.tensor([row["labels"]])
        out = model(input_ids=torch.tensor([row["input_ids"]]), labels=labels)
        n = int((labels[:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    assert float(fast) == pytest.approx(total / count, rel=1e-4)


def test_loss_is_normalised_by_the_given_token_count(tiny: tuple[object, object]) -> None:
    model, tokenizer = tiny
    batch = LeftPadCollator(tokenizer.pad_token_id)(tokenize(EXAMPLES, tokenizer, max_len=512))
    mean = target_only_loss(model, batch)
    tokens = int((batch["labels"] != -100).sum())
    halved = target_only_loss(model, batch, num_items=torch.tensor(2 * tokens))
    assert float(halved) == pytest.approx(float(mean) / 2, rel=1e-5)
