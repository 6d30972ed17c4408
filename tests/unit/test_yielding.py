"""The router's hold on a shadow process: a real child process, stopped and continued with signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.yielding import Board, Throttle, active_clock, stopped


@pytest.fixture()
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process that stands for a shadow's model server: it works until it is told to stop."""
    process = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.001)"])
    yield process
    os.kill(process.pid, signal.SIGCONT)
    process.kill()
    process.wait(timeout=10)


@pytest.fixture()
def board(tmp_path: Path) -> Iterator[Board]:
    made = Board(tmp_path / "shadow.board", create=True)
    yield made
    made.close()


def test_the_shadow_is_stopped_while_production_is_busy_and_the_stop_is_counted(
        child: subprocess.Popen[bytes], board: Board) -> None:
    async def scenario() -> tuple[bool, bool, float]:
        throttle = Throttle(board, share=0)
        throttle.attach(child.pid)
        throttle.busy()
        await asyncio.sleep(0.3)
        held = stopped(child.pid)
        throttle.idle()
        await asyncio.sleep(0.05)
        return held, stopped(child.pid), throttle.paused

    held, still, paused = asyncio.run(scenario())
    assert held and not still
    assert paused >= 0.3 and board.paused_s() == pytest.approx(paused, abs=1e-5)  # what the shadow's clock reads


def test_under_sustained_load_the_shadow_runs_its_share_in_slices(child: subprocess.Popen[bytes], board: Board) -> None:
    async def scenario() -> tuple[set[bool], int]:
        throttle = Throttle(board, share=0.5, slice_ms=20)
        throttle.attach(child.pid)
        throttle.busy()
        states = set()
        for _ in range(300):  # production busy for about half a second
            states.add(stopped(child.pid))
            await asyncio.sleep(0.002)
        throttle.idle()
        return states, throttle.stops

    states, stops = asyncio.run(scenario())
    assert states == {True, False} and stops > 2  # stopped, let run, stopped again...


def test_no_hold_with_a_full_share_and_a_process_stopped_by_someone_else_is_left_alone(
        child: subprocess.Popen[bytes], board: Board) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        free = Throttle(board, share=1)
        free.attach(child.pid)
        free.busy()
        unheld = not stopped(child.pid)
        free.idle()
        os.kill(child.pid, signal.SIGSTOP)  # a debugger, an operator: not the router's to continue
        for _ in range(100):
            if stopped(child.pid):
                break
            await asyncio.sleep(0.01)
        throttle = Throttle(board, share=0)
        throttle.attach(child.pid)
        throttle.busy()
        throttle.idle()
        await asyncio.sleep(0.05)
        return unheld, throttle.left_alone, stopped(child.pid)

    unheld, left_alone, still_stopped = asyncio.run(scenario())
    assert unheld and left_alone and still_stopped
    assert board.paused_s() == 0


def test_the_active_clock_stands_still_while_the_shadow_is_stopped(board: Board) -> None:
    clock = active_clock(board)
    before = clock()
    board.set_paused_s(5.0)
    assert clock() < before - 4.9  # five seconds stopped are taken off the time that passed


def test_a_board_must_be_one(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"12")
    with pytest.raises(ValueError, match="short: not a shadow's board"):
        Board(tmp_path / "short")
