"""The router's local socket to its model servers: real sockets and threads, no model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from serving.channel import Channel, ChannelError, ChannelServer, new_address
from serving.protocol import Reply


def echo(head: dict[str, Any], body: bytes, send: Callable[[Reply], None]) -> None:
    if head.get("op") == "ping":
        send((200, {}, b""))
    elif body == b"later":  # answered from another thread, as the model thread does
        threading.Timer(0.05, send, [(200, {}, b"from another thread")]).start()
    else:
        if body == b"sleep":
            time.sleep(2)
        send((200, {"Content-Type": head["content_type"], "X-Length": str(len(body))}, body[::-1]))


def test_answers_come_back_whole_on_kept_connections() -> None:
    server = ChannelServer(new_address("test"), echo, max_body=8 * 1024 * 1024)
    big = bytes(range(256)) * 24 * 1024  # 6 MB: the largest request an endpoint takes

    async def calls() -> tuple[list[Any], int]:
        channel = Channel(server.address, max_body=8 * 1024 * 1024)
        try:
            answers = [await channel.ping(timeout=5)]
            for body in (b"abc", big, b"", b"x" * 70000, b"later"):
                answers.append(await channel.invoke(body, content_type="application/json", accept="*/*", timeout=5))
            answers += await asyncio.gather(*(channel.invoke(b"%d" % i, content_type="text/plain", accept="*/*",
                                                             timeout=5) for i in range(8)))
            return answers, channel.opened
        finally:
            channel.close()

    try:
        answers, opened = asyncio.run(calls())
    finally:
        server.close()
    assert answers[0].status == 200
    assert [a.body for a in answers[1:6]] == [b"cba", big[::-1], b"", b"x" * 70000, b"from another thread"]
    assert answers[2].headers == {"Content-Type": "application/json", "X-Length": str(len(big))}
    assert sorted(a.body for a in answers[6:]) == sorted(b"%d" % i for i in range(8))
    assert opened == 8  # sequential requests reuse one connection; concurrent ones get their own


def test_a_missing_server_a_timeout_and_a_closed_connection_are_channel_errors() -> None:
    server = ChannelServer(new_address("test"), echo, max_body=1024)

    async def calls() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        nobody = Channel(new_address("nobody"))
        with pytest.raises(ChannelError, match="cannot reach the model server"):
            await nobody.ping(timeout=5)
        channel = Channel(server.address)
        with pytest.raises(TimeoutError):
            await channel.invoke(b"sleep", content_type="x", accept="x", timeout=0.2)
        seen["idle after timeout"] = len(channel._idle)  # the timed-out connection is not reused
        with pytest.raises(ChannelError, match="closed the connection"):
            await channel.invoke(b"y" * 2048, content_type="x", accept="x", timeout=5)  # over the server's limit
        seen["answer after errors"] = (await channel.invoke(b"ok", content_type="x", accept="x", timeout=5)).body
        return seen

    try:
        seen = asyncio.run(calls())
    finally:
        server.close()
    assert seen == {"idle after timeout": 0, "answer after errors": b"ko"}


def test_a_closed_server_refuses_new_connections() -> None:
    server = ChannelServer(new_address("test"), echo, max_body=1024)
    server.close()
    with pytest.raises(ChannelError, match="cannot reach"):
        asyncio.run(Channel(server.address).ping(timeout=5))
    server.accepting.join(timeout=5)
    assert not server.accepting.is_alive()
