"""A model server that follows the SageMaker hosting contract, with dynamic batching.

`GET /ping` answers 200 once the model is loaded; `POST /invocations` takes the HF LLM
container's JSON. Concurrent requests with the same decoding parameters are grouped into one
`generate` call on the model's own thread: while the model works on one batch, the next one
gathers in the queue, so a lone request never waits for company and a busy server answers many
requests per call (see `DynamicBatcher` for how a small batch merges with company that comes late).

    python -m serving.model_server --model PATH_OR_MODELS_URI --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from serving import channel as channels
from serving.handler import MAX_BODY_BYTES, ModelError, Predictor, RequestError, load_served, parse_request
from serving.protocol import BATCH_SIZE, MODEL_TIME_US, Reply, error_reply, web_error
from serving.yielding import Board, active_clock
from steps.generation import GenerationSettings
from steps.offline import go_offline

log = logging.getLogger("serving.model_server")


DEFAULT_BATCH = 8  # requests in one generate call, unless the server or the served build says otherwise
Answered = tuple[list[str], float, int]  # completions, model time of their batch (s), batch size


class ModelThread:
    """The one thread on which everything the model computes runs: loading it, then the batcher's loop.

    PyTorch's OpenMP pool belongs to the thread that first runs a parallel region; a second thread
    that computes gets a second pool, and with more pool threads than cores libgomp stops spinning
    between parallel regions, which made generate 27% (float32) to 38% (bfloat16) slower on two
    cores than the same calls on the thread that loaded the model.
    """

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="model", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            task, future = self._work.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(task())
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)

    def submit(self, task: Callable[[], Any]) -> Future[Any]:
        """Run `task` on the model thread after what was submitted before it."""
        future: Future[Any] = Future()
        self._work.put((task, future))
        return future

    def call(self, task: Callable[[], Any]) -> Any:
        """Run `task` on the model thread and wait for its result (or its exception)."""
        return self.submit(task).result()


@dataclass(eq=False)
class _Pending:
    texts: list[str]
    settings: GenerationSettings
    future: Future[Answered]  # thread-safe: answered from the model thread, awaited by a loop or a thread


_Result = Answered | Exception


class DynamicBatcher:
    """Groups concurrent requests into batched generate calls on one model thread.

    Callers (the event loop, or the threads of the router's channel) only queue requests; the
    model thread takes the oldest request and every queued one with the same settings (up to
    `max_batch_size`) into one call and answers each caller's future itself.
    A lone request never waits for company. Two rules raise throughput under concurrency:
    after answering a batch of several, the model waits up to `linger_ms` for as many requests
    (callers answered together come back together); and when company still arrives late (a
    burst), a small batch whose first token came less than `merge_window_ms` ago is stopped
    after its current token and restarted with the newcomers, provided that at least doubles it
    (so a request is restarted at most log2(max_batch_size) times).
    """

    def __init__(self, predictor: Predictor, *, max_batch_size: int = 8, max_wait_ms: float = 0.0,
                 merge_window_ms: float = 500.0, linger_ms: float = 20.0, model_thread: ModelThread | None = None) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self.predictor = predictor
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self.merge_window, self.linger = merge_window_ms / 1000, linger_ms / 1000
        self._pending: collections.deque[_Pending] = collections.deque()
        self._ready = threading.Condition()
        self._notify_scheduled = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._model_thread = model_thread
        self._loop: Future[Any] | None = None
        self.batches = 0  # generate calls that answered their requests
        self.merges = 0  # small batches stopped to restart with the requests that arrived meanwhile
        self.running = 0  # inputs in the generate call under way (0: the model is idle)

    def start(self) -> None:
        """Run the batching loop: on the model thread that loaded the model, if there is one, else on its own."""
        if self._model_thread is not None:
            self._loop = self._model_thread.submit(self._run)
            return
        self._thread = threading.Thread(target=self._run, name="generate", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._ready:
            self._closing = True  # a running generate stops after its current token
            self._ready.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        if self._loop is not None:
            await asyncio.to_thread(wait, [self._loop], 10)

    def put(self, texts: list[str], settings: GenerationSettings, *, notify: bool = True) -> Future[Answered]:
        """Queue raw `texts` from any thread; the future gets their completions, or a ModelError."""
        future: Future[Answered] = Future()
        self._pending.append(_Pending(texts, settings, future))
        if notify:
            self._notify()
        return future

    async def submit(self, texts: list[str], settings: GenerationSettings) -> Answered:
        """From the event loop: the completions of raw `texts`, the model time of their batch (s) and its size."""
        future = self.put(texts, settings, notify=False)
        if not self._notify_scheduled:  # requests that arrive in this loop iteration go to the model together
            self._notify_scheduled = True
            asyncio.get_running_loop().call_soon(self._notify)
        return await asyncio.wrap_future(future)  # cancelling it (a timeout) cancels the request

    def _notify(self) -> None:
        self._notify_scheduled = False
        with self._ready:
            self._ready.notify()

    # --- the model thread ------------------------------------------------------------------

    def _run(self) -> None:
        answered = 0  # inputs of the batch answered last
        while True:
            with self._ready:
                while not self._pending and not self._closing:
                    self._ready.wait()
                if self._closing:
                    return
                if answered > 1 and self.linger:  # callers answered together come back together
                    deadline = time.perf_counter() + self.linger
                    while self._queued() < min(answered, self.max_batch_size) and not self._closing:
                        left = deadline - time.perf_counter()
                        if left <= 0:
                            break
                        self._ready.wait(left)
            if self.max_wait:  # optionally hold the first request a moment for company
                time.sleep(self.max_wait)
            batch = self._take()
            if not batch:
                continue
            try:
                results = self._work(batch)
            except Exception as exc:  # a bug here must fail the batch, not the thread
                log.exception("batch of %d failed", len(batch))
                results = [ModelError(f"{type(exc).__name__}: {exc}")] * len(batch)
            if results is not None:  # None: requeued to restart with company
                answered = sum(len(item.texts) for item in batch)
                self._hand_back(batch, results)

    def _queued(self) -> int:
        """Inputs waiting (the caller holds the lock)."""
        return sum(len(item.texts) for item in self._pending if not item.future.done())

    def _take(self) -> list[_Pending]:
        """The oldest live request and every queued one with the same settings, up to the batch size."""
        with self._ready:
            batch: list[_Pending] = []
            size, kept = 0, list[_Pending]()
            while self._pending:
                item = self._pending.popleft()
                if item.future.done():  # its caller gave up (timeout, disconnect)
                    continue
                if not batch or (item.settings == batch[0].settings and size + len(item.texts) <= self.max_batch_size):
                    batch.append(item)
                    size += len(item.texts)
                else:
                    kept.append(item)
            self._pending.extendleft(reversed(kept))
            return batch

    def _company(self, batch: list[_Pending], size: int) -> int:
        """How many queued inputs could join this batch."""
        settings, room, joining = batch[0].settings, self.max_batch_size - size, 0
        with self._ready:
            queued = list(self._pending)
        for item in queued:
            if item.settings == settings and joining + len(item.texts) <= room and not item.future.done():
                joining += len(item.texts)
        return joining

    @staticmethod
    def _hand_back(batch: list[_Pending], results: list[_Result]) -> None:
        """Each waiting caller gets its answer or its error (callers that gave up are skipped)."""
        for item, result in zip(batch, results, strict=True):
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody to answer
                if isinstance(result, Exception):
                    item.future.set_exception(result if isinstance(result, ModelError) else ModelError(str(result)))
                else:
                    item.future.set_result(result)

    def _work(self, batch: list[_Pending]) -> list[_Result] | None:
        """Prompts (a request the model cannot take fails alone), then one generate call.

        The time reported with each answer is this whole call: templating, tokenizing, generating, decoding.
        Returns None when the batch was stopped to merge with queued requests (it is back in the queue).
        """
        started = time.perf_counter()
        results: list[_Result] = []
        prompts: list[list[str]] = []
        for item in batch:
            try:
                prompts.append(self.predictor.prompts(item.texts, item.settings))
                results.append(([], 0.0, 0))
            except Exception as exc:
                prompts.append([])
                results.append(exc)
        flat = [p for group in prompts for p in group]
        if not flat:
            return results
        live = [item for item, result in zip(batch, results, strict=True) if not isinstance(result, Exception)]
        mergeable = self.merge_window > 0 and 2 * len(flat) <= self.max_batch_size
        merge, first_token = False, 0.0

        def stop() -> bool:  # checked after every new token
            nonlocal merge, first_token
            if self._closing or all(item.future.done() for item in batch):
                return True  # every caller timed out or left: stop generating for nobody
            first_token = first_token or time.perf_counter()  # the window opens when the prompts are read
            if mergeable and time.perf_counter() - first_token < self.merge_window and \
                    self._company(live, len(flat)) >= len(flat):
                merge = True
            return merge

        self.running = len(flat)
        try:
            outputs = self.predictor.generate(flat, batch[0].settings, stop)
        except Exception as exc:  # a ModelError for every request of the batch
            return [r if isinstance(r, Exception) else exc for r in results]
        finally:
            self.running = 0
        if merge:
            with self._ready:
                self._pending.extendleft(reversed(live))
            self.merges += 1
            failed = [(item, r) for item, r in zip(batch, results, strict=True) if isinstance(r, Exception)]
            if failed:
                self._hand_back([item for item, _ in failed], [r for _, r in failed])
            return None
        elapsed = time.perf_counter() - started
        self.batches += 1
        offset = 0
        for index, group in enumerate(prompts):
            if not isinstance(results[index], Exception):
                results[index] = (outputs[offset: offset + len(group)], elapsed, len(flat))
                offset += len(group)
        return results


BATCHER = web.AppKey("batcher", DynamicBatcher)
CHANNEL_SERVER = web.AppKey("channel_server", channels.ChannelServer)


def build_app(predictor: Predictor, *, max_batch_size: int = 8, max_wait_ms: float = 0.0,
              merge_window_ms: float = 500.0, linger_ms: float = 20.0, timeout_s: float = 60.0,
              channel: str | None = None, board: Board | None = None, model_thread: ModelThread | None = None) -> Any:
    """The aiohttp application of one model server (plus the router's local socket at `channel`).

    With a `board` (a shadow variant, which the router stops while production is busy), the
    timeout of a request from the router's channel counts only the time the shadow could run.
    """
    batcher = DynamicBatcher(predictor, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                             merge_window_ms=merge_window_ms, linger_ms=linger_ms, model_thread=model_thread)
    clock = active_clock(board)

    def prepare(body: bytes, content_type: str) -> tuple[list[str], GenerationSettings]:
        """The texts and decoding settings of a request; raises RequestError naming what is wrong."""
        invocation = parse_request(body, content_type)
        return invocation.texts, predictor.settings(invocation.parameters)

    def reply(answered: Answered) -> Reply:
        outputs, generate_s, size = answered
        document = json.dumps([{"generated_text": text} for text in outputs]).encode()
        return 200, {"Content-Type": "application/json", MODEL_TIME_US: str(int(generate_s * 1e6)),
                     BATCH_SIZE: str(size)}, document

    def failed(error: BaseException) -> Reply:
        """The reply to a request that failed: 400 for the request's fault, 424 for the model's."""
        if isinstance(error, RequestError):
            return error_reply(400, str(error))
        if isinstance(error, TimeoutError):
            return error_reply(424, f"the model did not answer within {timeout_s:g} s")
        return error_reply(424, str(error))

    async def answer(body: bytes, content_type: str) -> Reply:
        """Status, headers and body for one HTTP request (the channel's threads use `answer_now`)."""
        try:
            texts, settings = prepare(body, content_type)
            async with asyncio.timeout(timeout_s):  # no extra task per request, unlike wait_for
                return reply(await batcher.submit(texts, settings))
        except (RequestError, TimeoutError, ModelError) as exc:
            return failed(exc)

    def answer_now(body: bytes, content_type: str, send: Callable[[Reply], None]) -> None:
        """`answer`, for a channel thread: the model thread sends the reply itself, the moment it has it."""
        try:
            future = batcher.put(*prepare(body, content_type))
        except RequestError as exc:
            send(failed(exc))
            return

        def answered(done: Future[Answered]) -> None:  # on the model thread, unless the request timed out
            if done.cancelled():
                return
            error = done.exception()
            send(failed(error) if error is not None else reply(done.result()))

        future.add_done_callback(answered)
        started = clock()
        while not future.done() and (left := timeout_s - (clock() - started)) > 0:
            wait([future], timeout=left)
        if future.cancel():  # still queued or generating: the model skips it, or stops generating for it
            send(failed(TimeoutError()))

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="", status=200)

    async def invocations(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web_error(413, f"body is {request.content_length} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web_error(413, f"body exceeds the limit of {MAX_BODY_BYTES} bytes")
        status, headers, document = await answer(body, request.headers.get("Content-Type", "application/json"))
        return web.Response(status=status, body=document, headers=headers)

    def on_channel(head: dict[str, Any], body: bytes, send: Callable[[Reply], None]) -> None:
        if head.get("op") == "ping":
            send((200, {}, b""))
        elif head.get("op") != "invoke":
            send(error_reply(400, f"unknown channel operation {head.get('op')!r}"))
        elif len(body) > MAX_BODY_BYTES:
            send(error_reply(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}"))
        else:
            answer_now(body, str(head.get("content_type") or "application/json"), send)

    async def on_startup(app: web.Application) -> None:
        batcher.start()
        if channel is not None:
            app[CHANNEL_SERVER] = channels.ChannelServer(channel, on_channel, max_body=MAX_BODY_BYTES)

    async def on_cleanup(app: web.Application) -> None:
        server = app.get(CHANNEL_SERVER)
        if server is not None:
            server.close()
        await batcher.stop()

    app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app[BATCHER] = batcher
    return app


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a faster loop and transports), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an MLflow model URI or folder, or a Hugging Face folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    parser.add_argument("--channel", help="also answer a local endpoint router on this Unix socket (@name: abstract)")
    parser.add_argument("--max-batch-size", type=int, default=0,
                        help="requests batched into one generate call (0: what the served build asks for, else 8)")
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--merge-window-ms", type=float, default=500.0,
                        help="a small batch whose first token is younger than this restarts with requests that "
                             "arrive meanwhile (0: never)")
    parser.add_argument("--linger-ms", type=float, default=20.0,
                        help="after a batch of several, wait this long at most for its callers to come back (0: never)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait for the model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--board", type=Path, help="a shadow's board, where the router says how long it kept the "
                                                   "shadow stopped: request timeouts count only the time it could run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    go_offline()
    model_thread = ModelThread()
    if args.threads:
        import torch

        model_thread.call(lambda: torch.set_num_threads(args.threads))

    started = time.perf_counter()
    predictor: Predictor = model_thread.call(lambda: load_served(args.model))
    batch = args.max_batch_size or predictor.card.max_batch_size or DEFAULT_BATCH
    log.info("loaded %s in %.1f s (build %s, template %s, batch up to %d)", args.model, time.perf_counter() - started,
             predictor.card.build, "recorded" if predictor.card.template != "{input}" else "none", batch)
    gc.collect()
    gc.freeze()  # the model's objects live as long as the process: keep them out of every later collection
    app = build_app(predictor, max_batch_size=batch, max_wait_ms=args.max_wait_ms,
                    merge_window_ms=args.merge_window_ms, linger_ms=args.linger_ms, timeout_s=args.timeout,
                    channel=args.channel, board=Board(args.board) if args.board else None, model_thread=model_thread)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, handle_signals=True,
                loop=new_event_loop())


if __name__ == "__main__":
    main()
