"""Unfaithful twins of correct summaries: an invented name, a wrong number, day or place, a negation, a reversal.

They make the labelled sets the scorers and the judge are measured on, and the corrupted training data
a test trains on to show that the gate refuses a model that learned to name the wrong people.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from steps.sample_data import DAYS, NAMES

Perturbation = Callable[[random.Random, str, str], "str | None"]  # (rng, source, summary) -> unfaithful summary

# Names for inventing: none of them appear in the shipped sample, so an invented name is never a real one.
INVENTED = ("Bartholomew", "Genevieve", "Thaddeus", "Ottilie", "Leopold", "Rosalind", "Casimir", "Philippa",
            "Augustin", "Marisol", "Evander", "Henrietta", "Lysander", "Seraphina", "Ignatius", "Clementine")
PLACES = ("Reykjavik", "Marrakesh", "Winnipeg", "Tbilisi", "Montevideo", "Adelaide", "Bergen", "Cusco")
_NEGATABLE = (
    (r"\bwill\b", "will not"), (r"\bcan\b(?!['’])", "cannot"), (r"\bcan't\b", "can"), (r"\bis\b", "is not"),
    (r"\bare\b", "are not"), (r"\bagrees\b", "does not agree"), (r"\baccepts\b", "does not accept"),
    (r"\bwants\b", "does not want"), (r"\bneeds\b", "does not need"), (r"\bhas\b", "does not have"),
)
_REVERSALS = (
    ("accepts", "declines"), ("declines", "accepts"), ("agrees", "refuses"), ("before", "after"),
    ("after", "before"), ("confirms", "cancels"), ("more", "less"), ("cheaper", "more expensive"),
    ("earlier", "later"), ("later", "earlier"), ("morning", "evening"), ("lends", "sells"), ("buys", "sells"),
)


def _names_in(text: str) -> list[str]:
    return [n for n in NAMES if re.search(rf"\b{n}\b", text)]


def invent_name(rng: random.Random, source: str, summary: str) -> str | None:
    """Replace every person the summary names with someone the source never mentions (one stranger each)."""
    named = _names_in(summary)
    if not named:
        return None
    strangers = rng.sample([n for n in INVENTED if not re.search(rf"\b{n}\b", source)], len(named))
    for who, stranger in zip(named, strangers, strict=True):
        summary = re.sub(rf"\b{who}\b", stranger, summary)
    return summary


def wrong_number(rng: random.Random, source: str, summary: str) -> str | None:
    """Change a number (a price, a time, a count) to one the source does not state."""
    numbers = list(re.finditer(r"\d+", summary))
    if not numbers:
        return None
    match = rng.choice(numbers)
    stated = set(re.findall(r"\d+", source))
    value = int(match.group())
    candidates = [str(v) for v in (value + 1, value + 2, value * 2, value + 10, max(value - 3, 1) + 40)
                  if str(v) not in stated]
    return summary[: match.start()] + rng.choice(candidates) + summary[match.end() :]


def wrong_day(rng: random.Random, source: str, summary: str) -> str | None:
    """Move the event to a day the source does not mention."""
    days = [d for d in DAYS if re.search(rf"\b{d}\b", summary)]
    others = [d for d in DAYS if d not in source]
    if not days or not others:
        return None
    return re.sub(rf"\b{rng.choice(days)}\b", rng.choice(others), summary, count=1)


def wrong_place(rng: random.Random, source: str, summary: str) -> str | None:
    """Add a place the source never names."""
    return summary.rstrip(".") + f" in {rng.choice(PLACES)}."


def negate(rng: random.Random, source: str, summary: str) -> str | None:
    """Negate the summary's first verb that can be negated."""
    for pattern, replacement in _NEGATABLE:
        if re.search(pattern, summary):
            return re.sub(pattern, replacement, summary, count=1)
    return None


def reverse(rng: random.Random, source: str, summary: str) -> str | None:
    """Turn a fact around without touching any name ("accepts" for "declines", "before" for "after")."""
    for word, opposite in _REVERSALS:
        if re.search(rf"\b{word}\b", summary):
            return re.sub(rf"\b{word}\b", opposite, summary, count=1)
    return None


PERTURBATIONS: dict[str, Perturbation] = {
    "invented_name": invent_name, "wrong_number": wrong_number, "wrong_day": wrong_day, "wrong_place": wrong_place,
    "negation": negate, "reversal": reverse,
}
