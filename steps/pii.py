"""Personal data in free text: email addresses, phone numbers and payment card numbers.

Card numbers are confirmed with the Luhn checksum, so order numbers and tracking codes of the
same length are not flagged. Phone numbers need a separator-rich shape or a leading `+`, so
plain prices, years and counts are not flagged either.
"""

from __future__ import annotations

import re
from typing import Literal

PiiKind = Literal["email", "phone", "card"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "card")
PLACEHOLDERS: dict[PiiKind, str] = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]"}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,3}"  # +44 20 7946 0958, +1-202-555-0147
    r"|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"  # (020) 7946 0958
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 202-555-0147
    r"|0\d{2,4}[ -]\d{3,4}[ -]\d{3,4}"  # 020 7946 0958
    r")(?![\w])"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a digit string (payment card numbers pass it)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _cards(text: str) -> list[re.Match[str]]:
    found = []
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(match)
    return found


def _matches(text: str, kind: PiiKind) -> list[re.Match[str]]:
    if kind == "email":
        return list(_EMAIL.finditer(text))
    if kind == "card":
        return _cards(text)
    card_spans = [m.span() for m in _cards(text)]
    return [m for m in _PHONE.finditer(text) if not any(s <= m.start() < e for s, e in card_spans)]


def find_pii(text: str, kinds: tuple[PiiKind, ...] | list[PiiKind] = PII_KINDS) -> list[PiiKind]:
    """The kinds of personal data found in `text`, in the order of `kinds`."""
    return [kind for kind in kinds if _matches(text, kind)]


def redact(text: str, kinds: tuple[PiiKind, ...] | list[PiiKind] = PII_KINDS) -> str:
    """`text` with every match replaced by its placeholder (cards first, so a card is never a phone)."""
    for kind in sorted(kinds, key=lambda k: k != "card"):
        for match in sorted(_matches(text, kind), key=lambda m: m.start(), reverse=True):
            text = text[: match.start()] + PLACEHOLDERS[kind] + text[match.end():]
    return text
