"""Personal-data detectors: what they catch and what they leave alone."""

from __future__ import annotations

import pytest

from steps.pii import find_pii, luhn_valid, redact


@pytest.mark.parametrize(("text", "kinds"), [
    ("write to ann.lee+work@example.co.uk today", ["email"]),
    ("call +44 20 7946 0958 after six", ["phone"]),
    ("my number is (020) 7946 0958", ["phone"]),
    ("ring 202-555-0147", ["phone"]),
    ("card 4111 1111 1111 1111 expires soon", ["card"]),
    ("card 5500-0000-0000-0004 and mail x@y.io", ["email", "card"]),
])
def test_detects(text: str, kinds: list[str]) -> None:
    assert find_pii(text) == kinds


@pytest.mark.parametrize("text", [
    "The tracking number is 482913.",
    "It costs 149 dollars, ready by Friday at 4:30.",
    "Order 1234 5678 9012 3456 shipped",  # 16 digits, fails the Luhn check
    "We met in 2024 and again on 12.05.",
    "Score was 3-2 after 90 minutes.",
])
def test_leaves_ordinary_numbers_alone(text: str) -> None:
    assert find_pii(text) == []


def test_redact_replaces_every_match_and_only_those() -> None:
    text = "Mail ann@example.com or call +1-202-555-0147; card 4111111111111111."
    assert redact(text) == "Mail [EMAIL] or call [PHONE]; card [CARD]."
    assert redact(text, ["email"]) == "Mail [EMAIL] or call +1-202-555-0147; card 4111111111111111."


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
