"""Prompt rendering: the same at training, evaluation and serving time (standard library only, so that a
model package's inference script can ship it)."""

from __future__ import annotations


def normalise(value: object) -> object:
    """Collapse runs of blanks inside each line and drop empty lines; non-strings pass through."""
    if not isinstance(value, str):
        return value
    return "\n".join(" ".join(line.split()) for line in value.splitlines() if line.strip())


def render_prompt(template: str, text: str) -> str:
    """The prompt for one raw input, the same way at training, evaluation and serving time."""
    return template.format(input=normalise(text))
