"""The LLM judge port: a local model's yes/no probabilities, Bedrock's Converse (Stubber), and its agreement."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from steps.judge import BedrockJudge, JudgeConfig, LocalJudge, agreement, labelled_set, rubric

CONFIG = JudgeConfig()
SOURCE = "Hana: My card is blocked.\nMarcus: I removed the hold."


def _converse_reply(text: str) -> dict[str, object]:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 80, "outputTokens": 2, "totalTokens": 82}, "metrics": {"latencyMs": 120}}


def test_bedrock_judge_sends_the_rubric_through_converse_and_reads_yes_or_no() -> None:
    client = boto3.client("bedrock-runtime", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    judge = BedrockJudge(client, "anthropic.claude-3-haiku-20240307-v1:0", CONFIG)
    outputs = ["Marcus removes the hold.", "Ines removes the hold.", "Marcus removes it."]
    with Stubber(client) as stub:
        for output, answer in zip(outputs, ("Yes.", " no", "I think so"), strict=True):
            stub.add_response("converse", _converse_reply(answer), {
                "modelId": "anthropic.claude-3-haiku-20240307-v1:0",
                "system": [{"text": "You are a strict evaluator of summaries. Answer with one word: yes or no."}],
                "messages": [{"role": "user", "content": [{"text": rubric(SOURCE, output, CONFIG)}]}],
                "inferenceConfig": {"maxTokens": 5, "temperature": 0.0},
            })
        assert judge.judge([SOURCE, SOURCE], outputs[:2]) == [1.0, 0.0]
        with pytest.raises(ValueError, match="not yes or no"):
            judge.judge([SOURCE], outputs[2:])
        stub.assert_no_pending_responses()


def test_local_judge_gives_probabilities_the_same_alone_or_in_a_padded_batch(tiny_model_dir: Path) -> None:
    from steps.generation import load_model

    loaded = load_model(tiny_model_dir, None, name="judge")
    judge = LocalJudge(loaded.model, loaded.tokenizer, CONFIG, batch_size=4)
    outputs = ["Marcus removes the hold on Hana's card.", "Ines.", "A much longer summary that says Marcus removed "
               "the hold and that Hana's card works again after the call."]
    together = judge.judge([SOURCE] * 3, outputs)
    alone = [judge.judge([SOURCE], [o])[0] for o in outputs]
    assert all(0 < p < 1 for p in together)
    assert together == pytest.approx(alone, abs=1e-4)
    assert len({round(p, 6) for p in together}) > 1  # the output changes the verdict
    with pytest.raises(ValueError, match="one source per output"):
        judge.judge([SOURCE], outputs)


class _Labels:
    """A judge that answers from the labels themselves (or their opposite): kappa's two ends."""

    def __init__(self, truth: dict[str, bool], invert: bool = False) -> None:
        self.truth, self.invert, self.name = truth, invert, "labels"

    def judge(self, sources: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return [float(self.truth[o] != self.invert) for o in outputs]


def test_agreement_is_cohens_kappa_against_the_labelled_set() -> None:
    labelled = labelled_set()
    assert {good for _, _, good in labelled} == {True, False} and len(labelled) >= 60
    truth = {output: good for _, output, good in labelled}
    perfect = agreement(_Labels(truth), CONFIG)
    assert perfect.kappa == pytest.approx(1.0) and perfect.counts and perfect.records == len(labelled)
    contrary = agreement(_Labels(truth, invert=True), CONFIG)
    assert contrary.kappa < 0 and not contrary.counts
    assert "advisory" in contrary.describe() and "kappa" in perfect.describe()
