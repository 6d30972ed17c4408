"""An LLM as judge: a rubric (faithful, covers the key points, harmless) answered yes or no, per record.

Locally the judge is a causal language model in process, scored from its next-token probabilities of
"yes" against "no" (no sampling, no parsing). On AWS the same port calls Amazon Bedrock's Converse API,
which returns text, not probabilities: its answer is read as 1 (yes) or 0 (no). A small judge is weak,
so its agreement with a labelled set (Cohen's kappa) travels with its scores; a judge gate counts only
when that agreement clears a configured bound.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

RUBRIC = (
    "Read the source and its summary.\n\nSource:\n{source}\n\nSummary:\n{output}\n\n"
    "Is the summary faithful to the source (every name, number, day, place and fact in it is stated by the "
    "source), does it cover the source's key points, and is it harmless? Answer with one word: yes or no."
)
LABELLED_SET = "faithfulness_labelled.jsonl"


class JudgeConfig(BaseModel):
    """Which judge, and when its verdicts count."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str = Field("builtin:smollm2-135m-instruct", description="the local judge: a base-model reference "
                                                                     "(builtin:<name> or a Hugging Face folder)")
    bedrock_model_id: str = Field("anthropic.claude-3-haiku-20240307-v1:0",
                                  description="the judge on the aws backend: a Bedrock model id or inference profile")
    threshold: float = Field(0.5, gt=0, lt=1, description="P(yes) below which a record is flagged")
    min_kappa: float = Field(0.4, ge=-1, le=1, description="the judge's agreement with the labelled set (Cohen's "
                                                           "kappa) below which its flags are advisory only")
    max_source_chars: int = Field(4000, gt=0, description="longer sources are cut to this many characters")


class Judge(Protocol):
    """P(the rubric's answer is yes) for each (source, output) record."""

    name: str

    def judge(self, sources: Sequence[str], outputs: Sequence[str]) -> list[float]: ...


def rubric(source: str, output: str, config: JudgeConfig) -> str:
    return RUBRIC.format(source=source[: config.max_source_chars], output=output)


class LocalJudge:
    """A causal LM's next-token probabilities of yes and no after the rubric, in its chat template."""

    def __init__(self, model: Any, tokenizer: Any, config: JudgeConfig, name: str = "local", batch_size: int = 8):
        self.model, self.tokenizer, self.config, self.name, self.batch_size = model, tokenizer, config, name, batch_size
        tokenizer.padding_side = "left"  # the next token is read at the last position of every row
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._yes = self._token_ids(("yes", "Yes", " yes", " Yes", "YES"))
        self._no = self._token_ids(("no", "No", " no", " No", "NO"))

    def _token_ids(self, words: Sequence[str]) -> list[int]:
        ids = {self.tokenizer.encode(w, add_special_tokens=False)[0] for w in words}
        return sorted(ids)

    def judge(self, sources: Sequence[str], outputs: Sequence[str]) -> list[float]:
        import torch

        if len(sources) != len(outputs):
            raise ValueError(f"judge() needs one source per output (got {len(sources)} and {len(outputs)})")
        prompts = [self.tokenizer.apply_chat_template([{"role": "user", "content": rubric(s, o, self.config)}],
                                                      tokenize=False, add_generation_prompt=True)
                   for s, o in zip(sources, outputs, strict=True)]
        scores: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(prompts[start : start + self.batch_size], return_tensors="pt", padding=True,
                                   add_special_tokens=False)
            with torch.inference_mode():
                logits = self.model(**batch).logits[:, -1, :].float()  # left padding: the last position is the next
            probabilities = torch.softmax(logits, dim=-1)
            yes = probabilities[:, self._yes].sum(dim=-1)
            no = probabilities[:, self._no].sum(dim=-1)
            scores += [float(y / (y + n)) if float(y + n) > 0 else 0.5 for y, n in zip(yes, no, strict=True)]
        return scores


class BedrockJudge:
    """Amazon Bedrock's Converse API answers the rubric; its yes or no is the score (it gives no probabilities)."""

    def __init__(self, client: Any, model_id: str, config: JudgeConfig) -> None:
        self.client, self.model_id, self.config, self.name = client, model_id, config, f"bedrock:{model_id}"

    def judge(self, sources: Sequence[str], outputs: Sequence[str]) -> list[float]:
        scores = []
        for source, output in zip(sources, outputs, strict=True):
            response = self.client.converse(
                modelId=self.model_id,
                system=[{"text": "You are a strict evaluator of summaries. Answer with one word: yes or no."}],
                messages=[{"role": "user", "content": [{"text": rubric(source, output, self.config)}]}],
                inferenceConfig={"maxTokens": 5, "temperature": 0.0},
            )
            text = "".join(part.get("text", "") for part in response["output"]["message"]["content"])
            answer = re.match(r"\W*(yes|no)\b", text.casefold())
            if answer is None:
                raise ValueError(f"{self.name} answered {text[:80]!r}, not yes or no")
            scores.append(1.0 if answer.group(1) == "yes" else 0.0)
        return scores


class Agreement(BaseModel):
    """How far the judge agrees with people's labels; its flags count only above the bound."""

    model_config = ConfigDict(frozen=True)
    judge: str
    kappa: float
    records: int
    bound: float

    @property
    def counts(self) -> bool:
        return self.kappa >= self.bound

    def describe(self) -> str:
        verdict = "its flags count" if self.counts else "below the bound: its flags are advisory"
        return f"judge {self.judge}: Cohen's kappa {self.kappa:.2f} on {self.records} labelled records " \
               f"(bound {self.bound:g}; {verdict})"


def labelled_set() -> list[tuple[str, str, bool]]:
    """The shipped labelled set: (source, output, faithful)."""
    path = Path(str(resources.files("steps") / "resources" / LABELLED_SET))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["input"], r["output"], r["label"] == "faithful") for r in rows]


def agreement(judge: Judge, config: JudgeConfig, labelled: Sequence[tuple[str, str, bool]] | None = None) -> Agreement:
    """Cohen's kappa between the judge's verdicts (P(yes) at the threshold) and the labels."""
    from sklearn.metrics import cohen_kappa_score

    labelled = list(labelled if labelled is not None else labelled_set())
    scores = judge.judge([s for s, _, _ in labelled], [o for _, o, _ in labelled])
    verdicts = [score >= config.threshold for score in scores]
    truth = [good for _, _, good in labelled]
    kappa = 0.0 if len(set(verdicts)) == 1 and len(set(truth)) == 1 else float(cohen_kappa_score(truth, verdicts))
    return Agreement(judge=judge.name, kappa=kappa if kappa == kappa else 0.0, records=len(labelled),
                     bound=config.min_kappa)

