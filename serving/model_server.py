"""A model server that follows the SageMaker hosting contract, with dynamic batching.

`GET /ping` answers 200 once the model is loaded; `POST /invocations` takes the HF LLM
container's JSON. Concurrent requests with the same decoding parameters are grouped into one
`generate` call: while the model works on one batch, the next one gathers in the queue, so a
lone request never waits for company and a busy server answers many requests per call.

    python -m serving.model_server --model PATH_OR_MODELS_URI --host 127.0.0.1 --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from serving.handler import MAX_BODY_BYTES, ModelError, Predictor, RequestError, parse_request
from serving.protocol import BATCH_SIZE, MODEL_TIME_US, web_error
from steps.generation import GenerationSettings
from steps.offline import go_offline

log = logging.getLogger("serving.model_server")


@dataclass
class _Pending:
    texts: list[str]
    settings: GenerationSettings
    future: asyncio.Future[tuple[list[str], float, int]]
    queued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Groups concurrent requests into batched generate calls, one batch at a time on one thread."""

    def __init__(self, predictor: Predictor, *, max_batch_size: int = 8, max_wait_ms: float = 0.0) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, not {max_batch_size}")
        self.predictor = predictor
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self._pending: collections.deque[_Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str], settings: GenerationSettings) -> tuple[list[str], float, int]:
        """The completions of raw `texts`, the model time of their batch (s) and its size."""
        future: asyncio.Future[tuple[list[str], float, int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(texts, settings, future))
        self._wake.set()
        return await future

    def _take(self) -> list[_Pending]:
        """The oldest request and every queued one with the same settings, up to the batch size."""
        first = self._pending.popleft()
        batch, size, kept = [first], len(first.texts), collections.deque[_Pending]()
        while self._pending:
            item = self._pending.popleft()
            if item.future.done():  # its caller gave up (timeout, disconnect)
                continue
            if item.settings == first.settings and size + len(item.texts) <= self.max_batch_size:
                batch.append(item)
                size += len(item.texts)
            else:
                kept.append(item)
        self._pending.extendleft(reversed(kept))
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                if self.max_wait:  # optionally hold the first request a moment for company
                    await asyncio.sleep(self.max_wait)
                else:  # let requests that already arrived with this one reach the queue (microseconds)
                    for _ in range(3):
                        await asyncio.sleep(0)
            batch = [b for b in self._take() if not b.future.done()]
            if not batch:
                continue
            results = await loop.run_in_executor(self._executor, self._work, batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, Exception):
                    item.future.set_exception(result if isinstance(result, ModelError) else ModelError(str(result)))
                else:
                    item.future.set_result(result)

    def _work(self, batch: list[_Pending]) -> list[tuple[list[str], float, int] | Exception]:
        """On the model's thread: prompts (a request the model cannot take fails alone), then one generate call.

        The time reported with each answer is this whole call: templating, tokenizing, generating, decoding.
        """
        started = time.perf_counter()
        results: list[tuple[list[str], float, int] | Exception] = []
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

        def abandoned() -> bool:  # every caller timed out or left: stop generating for nobody
            return all(item.future.done() for item in batch)

        try:
            outputs = self.predictor.generate(flat, batch[0].settings, abandoned)
        except Exception as exc:  # a ModelError for every request of the batch
            return [r if isinstance(r, Exception) else exc for r in results]
        elapsed = time.perf_counter() - started
        self.batches += 1
        offset = 0
        for index, group in enumerate(prompts):
            if not isinstance(results[index], Exception):
                results[index] = (outputs[offset: offset + len(group)], elapsed, len(flat))
                offset += len(group)
        return results


BATCHER = web.AppKey("batcher", DynamicBatcher)


def build_app(predictor: Predictor, *, max_batch_size: int = 8, max_wait_ms: float = 0.0,
              timeout_s: float = 60.0) -> Any:
    """The aiohttp application of one model server."""
    batcher = DynamicBatcher(predictor, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="", status=200)

    async def invocations(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web_error(413, f"body is {request.content_length} bytes; the limit is {MAX_BODY_BYTES}")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web_error(413, f"body exceeds the limit of {MAX_BODY_BYTES} bytes")
        try:
            invocation = parse_request(body, request.headers.get("Content-Type", "application/json"))
            settings = predictor.settings(invocation.parameters)
        except RequestError as exc:
            return web_error(400, str(exc))
        try:
            async with asyncio.timeout(timeout_s):  # no extra task per request, unlike wait_for
                outputs, generate_s, size = await batcher.submit(invocation.texts, settings)
        except TimeoutError:
            return web_error(424, f"the model did not answer within {timeout_s:g} s")
        except ModelError as exc:
            return web_error(424, str(exc))
        answer = json.dumps([{"generated_text": text} for text in outputs])
        return web.Response(body=answer.encode(), content_type="application/json",
                            headers={MODEL_TIME_US: str(int(generate_s * 1e6)), BATCH_SIZE: str(size)})

    async def on_startup(app: web.Application) -> None:
        batcher.start()

    async def on_cleanup(app: web.Application) -> None:
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
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait for the model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    go_offline()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    predictor = Predictor.load(args.model)
    log.info("loaded %s in %.1f s (template %s, batch up to %d)", args.model, time.perf_counter() - started,
             "recorded" if predictor.card.template != "{input}" else "none", args.max_batch_size)
    app = build_app(predictor, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, timeout_s=args.timeout)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, handle_signals=True,
                loop=new_event_loop())


if __name__ == "__main__":
    main()
