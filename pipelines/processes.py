"""A command that runs a server in the foreground and stops all of it on SIGTERM as on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType

STOP_GRACE_S = 20.0  # how long the group gets to exit after SIGTERM before it is killed


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def stop_group(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group of `process` (the server and every worker it forked), then SIGKILL what is left."""
    group = process.pid
    if _group_alive(group):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(group):
            return
        time.sleep(0.1)
    if _group_alive(group):
        os.killpg(group, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """SIGTERM, SIGINT and SIGHUP ignored inside the block (a clean-up a second Ctrl-C must not cut short); from
    the main thread only, elsewhere a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_foreground(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Run `command` in its own process group until it exits, or until this process gets SIGTERM, SIGINT
    or SIGHUP: then the whole group is stopped before returning. Returns the command's exit code (0 when stopped)."""
    process = subprocess.Popen(list(command), env=dict(env), start_new_session=True)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt  # leaves the wait below; the group is stopped in `finally`

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = process.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        with shielded():  # a second Ctrl-C must not cut the clean-up short
            stop_group(process)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if stopping else code
