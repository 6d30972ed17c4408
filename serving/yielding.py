"""A shadow variant steps aside while production has requests in flight.

On one machine a shadow and the production variants share the cores, and even a shadow at the
lowest CPU priority slows production (bench/RESULTS.md): a computation it started while
production was idle goes on while production works, and the same model's weights stream
through the same caches and memory. So the router stops the shadow's process (SIGSTOP) the
moment production gets a request and continues it (SIGCONT) once production has none in flight
(`Throttle`); under sustained production load it lets the shadow run slices of `slice_ms` for
its `share` of the time, so that the shadow still progresses. A shadow that someone else stopped
(a debugger, an operator) is left alone. The router writes how long it kept the shadow stopped
to a small shared file (a `Board`), so that the timeouts of the shadow's requests, in the shadow
and in the router alike, count only the time it was allowed to run (`active_clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

_PAUSED = struct.Struct("<q")  # microseconds the shadow was kept stopped, one 8-byte aligned slot


class Board:
    """The file shared by the router (writes) and one shadow process (reads): how long the shadow was stopped."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            self.path.write_bytes(bytes(_PAUSED.size))
        with self.path.open("r+b") as handle:
            if handle.seek(0, 2) < _PAUSED.size:
                raise ValueError(f"{self.path}: not a shadow's board (under {_PAUSED.size} bytes)")
            self._map = mmap.mmap(handle.fileno(), _PAUSED.size)

    def paused_s(self) -> float:
        """Seconds the shadow was kept stopped for production, since the board was made."""
        return int(_PAUSED.unpack_from(self._map, 0)[0]) / 1e6

    def set_paused_s(self, seconds: float) -> None:
        _PAUSED.pack_into(self._map, 0, int(seconds * 1e6))

    def close(self) -> None:
        self._map.close()


class Paused(Protocol):
    def paused_s(self) -> float: ...


def active_clock(source: Paused | None) -> Callable[[], float]:
    """A clock that stands still while a shadow is stopped (the plain monotonic clock without a `source`).

    `source` is the shadow's `Board` in the shadow's process, its `Throttle` in the router.
    """
    if source is None:
        return time.monotonic
    return lambda: time.monotonic() - source.paused_s()


def stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (by a signal or a tracer); False where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"T", b"t")


class Throttle:
    """The router's hold on one shadow process: stopped while production is busy, but for its share.

    `busy()` and `idle()` are called on the router's event loop when production's requests in
    flight go from 0 to 1 and back; `attach(pid)` when the shadow's process (re)starts.
    """

    def __init__(self, board: Board, *, share: float, slice_ms: float = 20.0) -> None:
        self.board, self.share, self.slice = board, share, slice_ms / 1000
        self.pid: int | None = None
        self.paused = board.paused_s()
        self.stops = 0  # times the router stopped the shadow
        self.left_alone = False  # at the last try, the process was already stopped by someone else
        self._since: float | None = None  # when the router stopped it (None: running)
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None

    def attach(self, pid: int) -> None:
        """A new process for the shadow: it starts running (and loading) unhindered."""
        self._cancel()
        self._release()  # the time the old process was stopped still counts
        self.pid, self.left_alone = pid, False

    def busy(self) -> None:
        self._busy = True
        self._hold()

    def idle(self) -> None:
        self._busy = False
        self._cancel()
        self._release()

    def paused_s(self) -> float:
        """Seconds the shadow was kept stopped, the stop under way included."""
        return self.paused + (time.monotonic() - self._since if self._since is not None else 0.0)

    def close(self) -> None:
        """Let the process run again (before it is stopped for good, or to leave it to itself)."""
        self._busy = False
        self._cancel()
        self._release()

    def _hold(self) -> None:
        if self.pid is None or self._since is not None or self.share >= 1:
            return
        self.left_alone = stopped(self.pid)
        if self.left_alone:
            return
        try:
            os.kill(self.pid, signal.SIGSTOP)
        except ProcessLookupError:  # it died; the supervisor restarts it and attaches the new one
            return
        self._since = time.monotonic()
        self.stops += 1
        if self.share > 0:
            self._timer = asyncio.get_running_loop().call_later(self.slice * (1 - self.share) / self.share,
                                                                self._grant)

    def _grant(self) -> None:
        """Production is still busy: the shadow's slice."""
        self._timer = None
        self._release()
        if self._busy:
            self._timer = asyncio.get_running_loop().call_later(self.slice, self._revoke)

    def _revoke(self) -> None:
        self._timer = None
        if self._busy:
            self._hold()

    def _release(self) -> None:
        if self._since is None or self.pid is None:
            return
        self.paused += time.monotonic() - self._since
        self.board.set_paused_s(self.paused)  # before it runs again, so its clock never jumps
        self._since = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
