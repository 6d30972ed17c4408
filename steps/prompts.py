"""Prompt rendering: the same at training, evaluation and serving time (standard library only, so that a
model package's inference script can ship it)."""

from __future__ import annotations

import string


def normalise(value: object) -> object:
    """Collapse runs of blanks inside each line and drop empty lines; non-strings pass through."""
    if not isinstance(value, str):
        return value
    return "\n".join(" ".join(line.split()) for line in value.splitlines() if line.strip())


def render_prompt(template: str, text: str) -> str:
    """The prompt for one raw input, the same way at training, evaluation and serving time."""
    return template.format(input=normalise(text))


def raw_input(template: str, prompt: str) -> str:
    """The raw input inside a templated prompt (the template has one {input} placeholder)."""
    prefix: list[str] = []
    suffix: list[str] = []
    seen = False
    for literal, field, _, _ in string.Formatter().parse(template):
        (suffix if seen else prefix).append(literal)
        seen = seen or field is not None
    head, tail = "".join(prefix), "".join(suffix)
    if prompt.startswith(head) and prompt.endswith(tail):
        return prompt[len(head): len(prompt) - len(tail) if tail else None]
    return prompt
