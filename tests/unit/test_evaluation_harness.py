"""The evaluation harness on real (tiny) models: a candidate damaged by its training data fails the
right gate, and a candidate that is the champion cannot beat it."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.data import Example
from steps.evaluate import EvaluateConfig, Gate, decide, evaluate, general_prompts
from steps.finetune import FinetuneConfig, finetune
from steps.generation import LoadedModel, load_model
from steps.sample_data import generate_records

RECORDS = list(generate_records(104, seed=21))
PROMPT = "Summarize.\n\n{}\n\nSummary:"
TRAIN = [Example(id=r["id"], prompt=PROMPT.format(r["dialogue"]), target=r["summary"]) for r in RECORDS[:80]]
HELD_OUT = [Example(id=r["id"], prompt=PROMPT.format(r["dialogue"]), target=r["summary"]) for r in RECORDS[80:96]]
VALIDATION = [Example(id=r["id"], prompt=PROMPT.format(r["dialogue"]), target=r["summary"]) for r in RECORDS[96:]]
CONFIG = EvaluateConfig.model_validate({"max_samples": 8, "general_samples": 4,
                                        "generation": {"max_new_tokens": 8, "batch_size": 4},
                                        "bootstrap": {"resamples": 200}})


def _adapter(tiny_model_dir: Path, folder: Path, train: list[Example]) -> LoadedModel:
    trained = finetune(train, VALIDATION, FinetuneConfig(max_steps=30, batch_size=8, learning_rate=0.02,
                                                         eval_samples=4, save_steps=100), tiny_model_dir, folder)
    return load_model(tiny_model_dir, trained.path, name="candidate")


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, None, name="base")


def test_a_candidate_trained_to_say_nothing_fails_the_empty_output_gate(
    tiny_model_dir: Path, tmp_path: Path, base: LoadedModel
) -> None:
    silent = _adapter(tiny_model_dir, tmp_path / "silent", [e.model_copy(update={"target": ""}) for e in TRAIN])
    result = evaluate(silent, base, HELD_OUT, CONFIG)
    assert result.candidate.metrics["empty_rate"] >= 0.75 and result.base.metrics["empty_rate"] < 0.5
    report = decide(result, [Gate(metric="empty_rate", max=0.1), Gate(metric="blocklist_rate", max=0.0)])
    assert [(c.metric, c.passed) for c in report.checks] == [("empty_rate", False), ("blocklist_rate", True)]
    assert len(result.candidate.general_predictions) == 4 and "general.accuracy" in result.candidate.metrics
    [prompt] = general_prompts(base, ["What is 2 plus 2?"])
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")


def test_a_candidate_equal_to_the_champion_does_not_beat_it(
    tiny_model_dir: Path, tmp_path: Path, base: LoadedModel
) -> None:
    trained = _adapter(tiny_model_dir, tmp_path / "good", TRAIN)
    champion = load_model(tiny_model_dir, tmp_path / "good" / "adapter", name="champion")
    result = evaluate(trained, base, HELD_OUT, CONFIG, champion=champion, champion_version="1")
    assert result.candidate.predictions == result.champion.predictions
    report = decide(result, [Gate(metric="rougeL", min_delta_vs_champion=0.0),
                             Gate(metric="empty_rate", max=0.5)])
    vs_champion, empty = report.checks
    assert vs_champion.kind == "vs_champion" and vs_champion.value == 0 and not vs_champion.passed
    assert empty.passed
    assert latency_is_measured(result.candidate.metrics)


def latency_is_measured(metrics: dict[str, float]) -> bool:
    return 0 < metrics["latency_p50"] <= metrics["latency_p95"]
