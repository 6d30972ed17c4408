"""A shadow variant yields the CPU to production while production has requests in flight.

On one machine a shadow and the production variants share the cores, and even a shadow at the
lowest CPU priority slows production: the same model's weights stream through the same caches
and memory. So the router publishes, in a small shared file per shadow (a `Board`), how many
production requests are in flight, and the shadow's model checks it before every module it runs
(`Yielder`): while production is busy the shadow computes at most `share` of the time, in slices
of `slice_ms`, and pauses the rest; when production is idle it runs freely. The shadow writes
back how long it has paused, so that the timeouts of its requests, in the shadow and in the
router alike, count only the time it was allowed to run (`active_clock`).
"""

from __future__ import annotations

import math
import mmap
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SLOT = struct.Struct("<q")  # 8-byte aligned slots: production requests in flight, microseconds paused, share (ppm)
_BUSY, _PAUSED, _SHARE, _SIZE = 0, 8, 16, 24


class Board:
    """The shared file between the router (writes `busy` and `share`) and one shadow process (writes `paused`)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            self.path.write_bytes(bytes(_SIZE))
        with self.path.open("r+b") as handle:
            if handle.seek(0, 2) < _SIZE:
                raise ValueError(f"{self.path}: not a yield board (under {_SIZE} bytes)")
            self._map = mmap.mmap(handle.fileno(), _SIZE)

    def busy(self) -> int:
        """Production requests in flight, as the router last published them."""
        return int(_SLOT.unpack_from(self._map, _BUSY)[0])

    def set_busy(self, in_flight: int) -> None:
        _SLOT.pack_into(self._map, _BUSY, in_flight)

    def share(self) -> float:
        """The share of time the shadow may compute while production is busy."""
        return int(_SLOT.unpack_from(self._map, _SHARE)[0]) / 1e6

    def set_share(self, share: float) -> None:
        if not 0 <= share <= 1:
            raise ValueError(f"share must be between 0 and 1, not {share}")
        _SLOT.pack_into(self._map, _SHARE, round(share * 1e6))

    def paused_s(self) -> float:
        """Seconds the shadow has paused for production, since the board was made."""
        return int(_SLOT.unpack_from(self._map, _PAUSED)[0]) / 1e6

    def set_paused_s(self, seconds: float) -> None:
        _SLOT.pack_into(self._map, _PAUSED, int(seconds * 1e6))

    def close(self) -> None:
        self._map.close()


def active_clock(board: Board | None) -> Callable[[], float]:
    """A clock that stands still while the shadow of `board` pauses (the plain monotonic clock without one)."""
    if board is None:
        return time.monotonic
    return lambda: time.monotonic() - board.paused_s()


class Yielder:
    """Called before each module of the shadow's model runs; pauses while production is busy.

    While the board says production is busy, the shadow runs a slice of `slice_ms` and then
    rests `slice_ms * (1 - share) / share`, or less if production goes idle first, so that it
    still progresses under sustained production load (with `share` 0 it runs no slice and rests
    until production is idle). The share is read from the board at every rest, so the router
    can change it while serving. `cancelled` ends a rest early (the server is stopping).
    """

    def __init__(self, board: Board, *, slice_ms: float = 20.0, poll_ms: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.board = board
        self.slice, self.poll = slice_ms / 1000, poll_ms / 1000
        self.clock, self.sleep = clock, sleep
        self.cancelled: Callable[[], bool] = lambda: False
        self.paused = board.paused_s()  # a restarted shadow goes on counting where its predecessor stopped
        self.rests = 0
        self._slice_started: float | None = None

    def __call__(self, *_: Any) -> None:
        if not self.board.busy():
            self._slice_started = None
            return
        now = self.clock()
        if self._slice_started is None and self.board.share() > 0:
            self._slice_started = now
        elif self._slice_started is None or now - self._slice_started >= self.slice:
            self._rest(now)

    def _rest(self, started: float) -> None:
        share = self.board.share()
        if share >= 1:
            self._slice_started = None
            return
        self.rests += 1
        until = started + (self.slice * (1 - share) / share if share > 0 else math.inf)
        last = started
        while self.board.busy() and not self.cancelled():
            if last >= until:
                break
            self.sleep(min(self.poll, until - last))
            now = self.clock()
            self.paused += now - last
            self.board.set_paused_s(self.paused)  # as it goes: the router times the shadow's requests by it
            last = now
        self._slice_started = self.clock() if self.board.busy() else None

    def install(self, model: Any) -> list[Any]:
        """Check before every leaf module of `model` (each projection, norm, activation).

        A check can only come between two modules, so production may have to wait for the one
        under way: the finer they are, the shorter that wait (a whole decoder layer of a batched
        prefill runs for hundreds of milliseconds on one thread). Returns the hooks' handles
        (`handle.remove()` takes one off).
        """
        leaves = [module for module in model.modules() if next(module.children(), None) is None] or [model]
        return [leaf.register_forward_pre_hook(self) for leaf in leaves]
