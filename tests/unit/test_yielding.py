"""A shadow's yielding to production: the shared board, the pauses and their accounting (a fake clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.yielding import Board, Yielder, active_clock


class FakeTime:
    """A clock that only moves when the yielder sleeps, or when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.on_sleep = lambda: None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


@pytest.fixture()
def board(tmp_path: Path) -> Board:
    made = Board(tmp_path / "shadow.board", create=True)
    yield made
    made.close()


def yielder(board: Board, time: FakeTime, **options: float) -> Yielder:
    return Yielder(board, clock=time.clock, sleep=time.sleep, slice_ms=20, poll_ms=2, **options)


def test_a_shadow_runs_freely_while_production_is_idle(board: Board) -> None:
    time = FakeTime()
    model = yielder(board, time)
    board.set_share(0)
    for _ in range(50):
        model()
        time.now += 0.01  # a layer's work
    assert not time.sleeps and model.rests == 0 and board.paused_s() == 0


def test_while_production_is_busy_a_shadow_runs_its_share_of_the_time(board: Board) -> None:
    time = FakeTime()
    model = yielder(board, time)
    board.set_share(0.25)
    board.set_busy(3)
    worked = 0.0
    for _ in range(200):  # 2 s of layers of 10 ms each
        model()
        time.now += 0.01
        worked += 0.01
    paused = sum(time.sleeps)
    assert model.rests > 10
    assert worked / (worked + paused) == pytest.approx(0.25, abs=0.03)  # slices of 20 ms, rests of 60 ms
    assert board.paused_s() == pytest.approx(paused, abs=1e-5)  # what the router's clock of the shadow reads


def test_with_no_share_a_shadow_waits_until_production_is_idle(board: Board) -> None:
    time = FakeTime()
    model = yielder(board, time)
    board.set_share(0)
    board.set_busy(1)

    def idle_after_a_while() -> None:
        if len(time.sleeps) == 500:  # 1 s of 2 ms polls
            board.set_busy(0)

    time.on_sleep = idle_after_a_while
    model()  # no slice at all: it rests at once
    assert len(time.sleeps) == 500 and board.paused_s() == pytest.approx(1.0, abs=1e-5)
    time.on_sleep = lambda: None
    model()  # production idle: no more pauses
    assert len(time.sleeps) == 500


def test_the_share_is_read_from_the_board_at_every_rest_and_a_rest_ends_when_stopping(board: Board) -> None:
    time = FakeTime()
    model = yielder(board, time)
    board.set_busy(1)
    board.set_share(1)  # no yielding at all
    for _ in range(20):
        model()
        time.now += 0.01
    assert not time.sleeps
    board.set_share(0)  # the router changed it while serving
    stopping = False
    model.cancelled = lambda: stopping

    def stop_after_a_while() -> None:
        nonlocal stopping
        stopping = len(time.sleeps) >= 10

    time.on_sleep = stop_after_a_while
    for _ in range(3):
        model()
        time.now += 0.01
    assert len(time.sleeps) == 10  # the rest ended when the server began to stop, and none began after


def test_the_active_clock_stands_still_while_the_shadow_pauses(board: Board) -> None:
    clock = active_clock(board)
    before = clock()
    board.set_paused_s(5.0)
    assert clock() < before - 4.9  # five seconds of pause are taken off the time that passed


def test_a_board_must_be_one(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"12")
    with pytest.raises(ValueError, match="short: not a yield board"):
        Board(tmp_path / "short")
    board = Board(tmp_path / "ok", create=True)
    with pytest.raises(ValueError, match=r"share must be between 0 and 1, not 1\.5"):
        board.set_share(1.5)
    board.close()


def test_the_check_runs_before_every_module_of_a_model(tiny_model_dir: Path, board: Board) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    time = FakeTime()
    check = Yielder(board, clock=time.clock, sleep=time.sleep, slice_ms=0)  # slices and rests of 0 s: count them
    board.set_busy(1)
    board.set_share(0.5)
    handles = check.install(model)
    projections = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(handles) > len(projections) > 4 * model.config.num_hidden_layers  # q, k, v, o, the MLP's, the head
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    assert check.rests == len(handles) - 1  # the first module starts the slice; every later one ends it
    for handle in handles:
        handle.remove()
