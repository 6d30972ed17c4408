"""A model's `code/inference.py` for tests: the model holds any request whose input contains "[hold]" until
every caller of its batch has given up, so a timeout fires on any machine, fast or slow, with no race."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from serving.handler import Predictor

HOLD = "[hold]"


class HeldPredictor(Predictor):
    def generate(self, prompts: Sequence[str], settings: Any, stop: Callable[[], bool] | None = None) -> list[str]:
        if not any(HOLD in prompt for prompt in prompts):
            return super().generate(prompts, settings, stop)
        while stop is None or not stop():  # the server's check: every caller timed out or left
            time.sleep(0.01)
        return [""] * len(prompts)


def model_fn(model_dir: str, context: Any = None) -> Predictor:
    plain = Predictor.load(model_dir)
    return HeldPredictor(plain.loaded, plain.card)
