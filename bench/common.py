"""What the benchmarks share: the default base model and the checked records of the shipped sample."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sample(workspace: Path) -> tuple[Path, Any, Any]:
    """The default base model's folder, the default DataConfig and the checked, split records (offline)."""
    from steps.offline import go_offline

    go_offline()
    from steps.artifacts import LocalStore
    from steps.base_model import resolve_base_model, token_counter
    from steps.data import DataConfig, check_records
    from steps.data_sources import read_source

    base = resolve_base_model("builtin:smollm2-135m-instruct", workspace / "models")
    config = DataConfig()
    data, name = read_source(config.source, LocalStore(workspace / "artifacts"))
    frame, _ = check_records(data, name, config, token_counter(base))
    return base, config, frame


@dataclass(frozen=True)
class HeldOut:
    base: Path
    template: str
    inputs: list[str]  # raw records, as a caller sends them to an endpoint

    @property
    def prompts(self) -> list[str]:
        """The inputs with the prompt template applied, as the evaluation harness sees them."""
        from steps.data import render_prompt

        return [render_prompt(self.template, text) for text in self.inputs]


def held_out(workspace: Path, count: int) -> HeldOut:
    """The first `count` held-out records of the shipped sample, and the default base model."""
    from steps.data import SPLIT

    base, config, frame = sample(workspace)
    inputs = [str(text) for text in frame[frame[SPLIT] == "test"][config.columns.input].tolist()][:count]
    return HeldOut(base=base, template=config.template, inputs=inputs)


def publish(text: str, write: Path | None) -> None:
    """Print a benchmark's results section and, with `write` (bench/RESULTS.md), append it there."""
    print(text)
    if write:
        with write.open("a", encoding="utf-8") as out:
            out.write("\n" + text)
