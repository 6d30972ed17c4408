"""The model server on 127.0.0.1 with the tiny model: the hosting contract and dynamic batching."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from serving import model_server
from serving.handler import Invocation, Parameters, Predictor, input_fn, load_served, model_fn, output_fn, predict_fn
from serving.model_server import build_app
from tests.conftest import make_held_model

PROMPTS = [f"Speaker {i}: the delivery of order {i * 7} is late again." for i in range(8)]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.load(tiny_model_dir)


async def serve(predictor: Predictor, calls: Any, **options: Any) -> Any:
    from aiohttp.test_utils import TestClient, TestServer

    client = TestClient(TestServer(build_app(predictor, **options), host="127.0.0.1"))
    await client.start_server()
    try:
        return await calls(client)
    finally:
        await client.close()


def test_concurrent_requests_share_generate_calls_and_get_their_own_answers(predictor: Predictor) -> None:
    alone = [predictor.predict(Invocation(inputs=p, parameters=Parameters(max_new_tokens=6)))[0]["generated_text"]
             for p in PROMPTS]

    async def calls(client: Any) -> tuple[list[str], list[int], int]:
        async def one(prompt: str) -> tuple[str, int]:
            response = await client.post("/invocations", json={"inputs": prompt, "parameters": {"max_new_tokens": 6}})
            assert response.status == 200, await response.text()
            return (await response.json())[0]["generated_text"], int(response.headers["X-Genaiops-Batch-Size"])

        answers = await asyncio.gather(*(one(p) for p in PROMPTS * 3))
        return [a for a, _ in answers], [b for _, b in answers], client.server.app[model_server.BATCHER].batches

    texts, sizes, batches = asyncio.run(serve(predictor, calls, max_batch_size=8))
    assert texts == alone * 3  # batching (left padding) changes no answer of the greedy model
    assert batches < len(PROMPTS) * 3 and max(sizes) > 1, (batches, sizes)
    assert max(sizes) <= 8


def test_different_parameters_are_never_batched_together(predictor: Predictor) -> None:
    async def calls(client: Any) -> list[tuple[int, int]]:
        async def one(tokens: int) -> tuple[int, int]:
            response = await client.post("/invocations", json={"inputs": PROMPTS[0],
                                                               "parameters": {"max_new_tokens": tokens}})
            return tokens, int(response.headers["X-Genaiops-Batch-Size"])

        return list(await asyncio.gather(*(one(t) for t in [2, 3] * 6)))

    results = asyncio.run(serve(predictor, calls))
    assert all(size <= 6 for _, size in results)  # each batch holds only requests with the same settings


@pytest.fixture(scope="module")
def held(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """The tiny model served through its own code/inference.py, which holds "[hold]" requests until they time out."""
    return load_served(make_held_model(tiny_model_dir, tmp_path_factory.mktemp("held")))


def test_a_model_folder_with_an_inference_script_is_loaded_by_its_model_fn(held: Predictor, predictor: Predictor) -> None:
    assert type(held).__name__ == "HeldPredictor"
    invocation = Invocation(inputs=PROMPTS[0], parameters=Parameters(max_new_tokens=4))
    assert held.predict(invocation) == predictor.predict(invocation)  # the same model, loaded by the script


def test_every_error_gets_its_status_and_the_server_stays_up(held: Predictor) -> None:
    async def calls(client: Any) -> dict[str, Any]:
        seen = {}
        for label, body in {"bad json": b"{", "bad field": b'{"inputs": "x", "parameters": {"top_p": 2}}',
                            "too long": json.dumps({"inputs": "word " * 1500}).encode(),
                            "too big": b'{"inputs": "' + b"x" * (6 * 1024 * 1024) + b'"}',
                            "too deep": b"[" * 100_000}.items():
            response = await client.post("/invocations", data=body, headers={"Content-Type": "application/json"})
            seen[label] = (response.status, response.headers.get("x-amzn-ErrorType"), (await response.json())["message"])
        slow = await client.post("/invocations", json={"inputs": "[hold] x", "parameters": {"max_new_tokens": 2}})
        seen["timeout"] = (slow.status, slow.headers.get("x-amzn-ErrorType"), (await slow.json())["message"])
        seen["ping"] = (await client.get("/ping")).status
        ok = await client.post("/invocations", json={"inputs": "x", "parameters": {"max_new_tokens": 2}})
        seen["after"] = ok.status
        return seen

    seen = asyncio.run(serve(held, calls, timeout_s=1.0))
    assert seen["bad json"][:2] == (400, "ValidationError") and "not valid JSON" in seen["bad json"][2]
    assert seen["bad field"][:2] == (400, "ValidationError") and seen["bad field"][2].startswith("parameters.top_p")
    assert seen["too long"][:2] == (424, "ModelError") and "exceeds the model's context of 1024" in seen["too long"][2]
    assert seen["too big"][:2] == (413, "ValidationError")
    assert seen["too deep"][:2] == (400, "ValidationError") and "nested too deeply" in seen["too deep"][2]
    assert seen["timeout"][:2] == (424, "ModelError") and "did not answer within 1 s" in seen["timeout"][2]
    assert seen["ping"] == 200 and seen["after"] == 200


def test_the_same_module_is_a_sagemaker_inference_script(tiny_model_dir: Path, predictor: Predictor) -> None:
    model = model_fn(str(tiny_model_dir))
    body = b'{"inputs": "A: the order is late. B: sorry.", "parameters": {"max_new_tokens": 5}}'
    answer = output_fn(predict_fn(input_fn(body, "application/json"), model), "application/json")
    assert json.loads(answer) == predictor.predict(input_fn(body, "application/json"))


def test_a_registered_version_is_served_with_its_template_and_settings(tiny_model_dir: Path, tmp_path: Path,
                                                                       predictor: Predictor) -> None:
    import mlflow.pyfunc

    from model_registry import pyfunc_model
    from steps.data import render_prompt
    from steps.generation import GenerationSettings

    template = "Summarize the following conversation.\n\n{input}\n\nSummary:"
    folder = tmp_path / "version"
    mlflow.pyfunc.save_model(str(folder), python_model=pyfunc_model.__file__, artifacts={"weights": str(tiny_model_dir)},
                             model_config={"kind": "full", "base_model": "tiny", "base_model_path": str(tiny_model_dir),
                                           "template": template, "generation": {"max_new_tokens": 4}})
    served = model_fn(str(folder))
    assert served.card.template == template and served.card.generation.max_new_tokens == 4
    answer = served.predict(Invocation(inputs=PROMPTS[0]))
    settings = GenerationSettings(max_new_tokens=4)
    expected = predictor.generate([render_prompt(template, PROMPTS[0])], settings)
    assert answer == [{"generated_text": expected[0]}]  # the recorded template, applied to the raw input
    with pytest.raises(FileNotFoundError, match="neither an MLflow model"):
        Predictor.load(tmp_path)


async def generating_alone(batcher: model_server.DynamicBatcher) -> None:
    for _ in range(2000):
        if batcher.running == 1:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the first request never started generating")


def test_a_lone_batch_restarts_with_company_that_arrives_early(predictor: Predictor) -> None:
    parameters = {"max_new_tokens": 40}
    alone = [predictor.predict(Invocation(inputs=p, parameters=Parameters(**parameters)))[0]["generated_text"]
             for p in PROMPTS[:4]]

    async def calls(client: Any) -> tuple[list[tuple[str, int]], int, int]:
        async def one(prompt: str) -> tuple[str, int]:
            response = await client.post("/invocations", json={"inputs": prompt, "parameters": parameters})
            assert response.status == 200, await response.text()
            return (await response.json())[0]["generated_text"], int(response.headers["X-Genaiops-Batch-Size"])

        batcher = client.server.app[model_server.BATCHER]
        first = asyncio.create_task(one(PROMPTS[0]))
        await generating_alone(batcher)
        rest = await asyncio.gather(*(one(p) for p in PROMPTS[1:4]))
        return [await first, *rest], batcher.merges, batcher.batches

    answers, merges, batches = asyncio.run(serve(predictor, calls, max_batch_size=8))
    assert [text for text, _ in answers] == alone  # restarting changes no answer
    assert merges >= 1 and batches == 1 and {size for _, size in answers} == {4}, (merges, batches, answers)


def test_without_a_merge_window_a_lone_batch_runs_to_its_end(predictor: Predictor) -> None:
    async def calls(client: Any) -> tuple[list[int], int]:
        async def one(prompt: str) -> int:
            response = await client.post("/invocations", json={"inputs": prompt, "parameters": {"max_new_tokens": 40}})
            return int(response.headers["X-Genaiops-Batch-Size"])

        batcher = client.server.app[model_server.BATCHER]
        first = asyncio.create_task(one(PROMPTS[0]))
        await generating_alone(batcher)
        rest = await asyncio.gather(*(one(p) for p in PROMPTS[1:4]))
        return [await first, *rest], batcher.merges

    sizes, merges = asyncio.run(serve(predictor, calls, max_batch_size=8, merge_window_ms=0))
    assert merges == 0 and sizes == [1, 3, 3, 3]


def test_callers_answered_together_are_batched_together_again(predictor: Predictor) -> None:
    async def calls(client: Any) -> tuple[list[int], int]:
        async def caller(prompt: str) -> list[int]:
            sizes = []
            for _ in range(3):  # each caller sends its next request once it has its answer
                response = await client.post("/invocations", json={"inputs": prompt, "parameters": {"max_new_tokens": 8}})
                sizes.append(int(response.headers["X-Genaiops-Batch-Size"]))
            return sizes

        rounds = await asyncio.gather(*(caller(p) for p in PROMPTS[:4]))
        return [size for sizes in rounds for size in sizes], client.server.app[model_server.BATCHER].batches

    sizes, batches = asyncio.run(serve(predictor, calls, max_batch_size=8, merge_window_ms=0))
    assert sizes == [4] * 12 and batches == 3, (sizes, batches)


def test_a_shadows_timeout_counts_only_the_time_it_could_run(predictor: Predictor, tmp_path: Path) -> None:
    from serving.channel import Channel, new_address
    from serving.yielding import Board

    expected = predictor.predict(Invocation(inputs=PROMPTS[0], parameters=Parameters(max_new_tokens=4)))
    board = Board(tmp_path / "shadow.board", create=True)
    address = new_address("board-test")

    async def calls(client: Any) -> Any:
        channel = Channel(address)
        try:
            body = json.dumps({"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 4}}).encode()
            waiting = asyncio.create_task(channel.invoke(body, content_type="application/json", accept="*/*",
                                                         timeout=30))
            batcher = client.server.app[model_server.BATCHER]
            while not batcher._pending:  # the request is queued: its timeout has started on the shadow's clock
                await asyncio.sleep(0.001)
            board.set_paused_s(10.0)  # as the router writes it when it lets a stopped shadow run again
            return await waiting
        finally:
            channel.close()

    try:  # the model holds the request 3 s (max_wait_ms), three times the timeout: all of it "stopped" time
        answer = asyncio.run(serve(predictor, calls, timeout_s=1.0, max_wait_ms=3000, channel=address, board=board))
    finally:
        board.close()
    assert answer.status == 200, answer.body
    assert json.loads(answer.body) == expected
