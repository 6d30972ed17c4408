"""The local artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.artifacts import ArtifactNotFoundError, LocalStore


def test_put_get_exists_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    uri = store.put("a/b/c.txt", b"hello")
    assert uri == (tmp_path / "a" / "b" / "c.txt").as_uri()
    assert store.get("a/b/c.txt") == b"hello"
    assert store.exists("a/b/c.txt") and not store.exists("a/b/d.txt")
    store.put("a/b/c.txt", b"again")
    assert store.get("a/b/c.txt") == b"again"
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["c.txt"]  # no temp files left


def test_missing_key_and_escaping_keys_are_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(ArtifactNotFoundError):
        store.get("nope")
    for key in ("../outside", "/etc/passwd", ""):
        with pytest.raises(ValueError, match="relative path"):
            store.put(key, b"x")
