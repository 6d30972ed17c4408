"""Run commands under the offline guard (tests/offline_guard/sitecustomize.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GUARD = Path(__file__).resolve().parent / "offline_guard"
BIN = Path(sys.executable).parent


def guarded_env(log: Path, **extra: str) -> dict[str, str]:
    """The current environment, plus the guard on PYTHONPATH for this process tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD), env.get("PYTHONPATH")]))
    env["OFFLINE_GUARD_LOG"] = str(log)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra)
    return env


def run_guarded(args: list[str], log: Path, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=guarded_env(log, **extra), capture_output=True, text=True, timeout=timeout,
                          check=False)


def refused(log: Path) -> list[str]:
    """The connection attempts the guard refused (empty means the run stayed offline)."""
    return log.read_text().splitlines() if log.exists() else []
