"""The local socket between the endpoint router and its model servers.

Every request to a local endpoint crosses this hop, so it carries no second HTTP exchange:
a message is an 8-byte frame header (two big-endian lengths) followed by a small JSON head and
the raw body. The router sends `{"op": "invoke", "content_type": …, "accept": …}` + the request
body, or `{"op": "ping"}`; the model server answers `{"status": …, "headers": {…}}` + the
response body, exactly what its HTTP route would have answered. The model server keeps its
HTTP routes (`/ping`, `/invocations`) for the SageMaker hosting contract; the channel is only
how a local endpoint reaches it.

Addresses are Unix sockets: an abstract name on Linux (written `@name`; it vanishes with the
process), else a file in the temporary folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from serving.protocol import Reply

_FRAME = struct.Struct(">II")


class ChannelError(ConnectionError):
    """The model server did not give a complete answer (not listening, closed, malformed)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def new_address(label: str) -> str:
    """A fresh address for one model server; `label` only helps a reader of `ss -x`."""
    token = f"genaiops-{os.getpid()}-{label[:24]}-{secrets.token_hex(4)}"  # socket paths are short (104 bytes)
    if sys.platform == "linux":
        return f"@{token}"
    return os.path.join(tempfile.gettempdir(), f"{token}.sock")


def _native(address: str) -> str:
    return "\0" + address[1:] if address.startswith("@") else address


def encode(head: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps(head, separators=(",", ":")).encode()
    return _FRAME.pack(len(encoded), len(body)) + encoded + body


# --- the model server's side ---------------------------------------------------------------

Handler = Callable[[dict[str, Any], bytes, Callable[[Reply], None]], None]


def _receive(sock: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None if the stream ends before the first one."""
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            if left == size:
                return None
            raise ChannelError("the stream ended inside a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _send(connection: socket.socket, reply: Reply) -> None:
    status, headers, body = reply
    with contextlib.suppress(OSError):  # the router went away: its thread here sees the closed socket
        connection.sendall(encode({"status": status, "headers": headers}, body))


class ChannelServer:
    """Answers the router on `address`, a thread per router connection.

    The router holds one connection per request in flight and sends one message at a time on
    each, so a blocking thread per connection takes requests with no event loop in between:
    the socket wakes the thread, the thread calls `handle(head, body, send)`. `send(reply)`
    must be called once per message, from any thread: the model thread sends its answer the
    moment it has it.
    """

    def __init__(self, address: str, handle: Handler, *, max_body: int) -> None:
        self.address, self.handle, self.max_body = address, handle, max_body
        if not address.startswith("@") and os.path.exists(address):
            os.unlink(address)  # left by a model server that crashed on this address
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(_native(address))
        self._listener.listen(128)
        self._closed = False
        self.accepting = threading.Thread(target=self._accept, name="channel-accept", daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(connection,), name="channel", daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                while (header := _receive(connection, _FRAME.size)) is not None:
                    head_size, body_size = _FRAME.unpack(header)
                    if head_size > 65536 or body_size > self.max_body:
                        return  # not our router: drop the connection
                    payload = _receive(connection, head_size + body_size) or b""
                    self.handle(json.loads(payload[:head_size]), payload[head_size:], partial(_send, connection))
            except (OSError, ValueError):
                return  # the router went away or broke the framing: drop this connection only

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        if not self.address.startswith("@"):
            with contextlib.suppress(OSError):
                os.unlink(self.address)


# --- the router's side ---------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One kept connection; answers are cut from the stream as they arrive."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.future: asyncio.Future[Answer] | None = None
        self.closed = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ChannelError(f"the model server closed the connection without an answer{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < _FRAME.size:
            return
        head_size, body_size = _FRAME.unpack_from(self._buffer)
        if head_size > 65536 or body_size > self.max_body:
            self._fail(ChannelError(f"answer of {head_size} + {body_size} bytes is over the limit"))
            self.close()
            return
        end = _FRAME.size + head_size + body_size
        if len(self._buffer) < end:
            return
        message, self._buffer = bytes(self._buffer[:end]), self._buffer[end:]
        try:
            head = json.loads(message[_FRAME.size: _FRAME.size + head_size])
            answer = Answer(int(head["status"]), dict(head.get("headers", {})), message[_FRAME.size + head_size:])
        except (ValueError, KeyError, TypeError) as exc:
            self._fail(ChannelError(f"malformed answer: {exc}"))
            self.close()
            return
        if self.future is not None and not self.future.done():
            self.future.set_result(answer)

    def _fail(self, error: Exception) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Channel:
    """Kept connections to one model server (`limit` caps them; None: no cap).

    The timeout of a request (None: none) runs from its first byte sent, not from its wait for a
    free connection; a connection whose exchange failed or timed out is closed, never reused.
    """

    def __init__(self, address: str, *, limit: int | None = None, max_body: int = 64 * 1024 * 1024) -> None:
        self.address, self.max_body = address, max_body
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit) if limit else None
        self.opened = 0  # connections made so far

    async def invoke(self, body: bytes, *, content_type: str, accept: str, custom_attributes: str | None = None,
                     timeout: float | None) -> Answer:
        head = {"op": "invoke", "content_type": content_type, "accept": accept}
        if custom_attributes is not None:
            head["custom_attributes"] = custom_attributes
        return await self._request(head, body, timeout)

    async def ping(self, *, timeout: float) -> Answer:
        return await self._request({"op": "ping"}, b"", timeout)

    async def _request(self, head: dict[str, Any], body: bytes, timeout: float | None) -> Answer:
        if self._slots is None:
            return await self._exchange(head, body, timeout)
        async with self._slots:
            return await self._exchange(head, body, timeout)

    async def _exchange(self, head: dict[str, Any], body: bytes, timeout: float | None) -> Answer:
        loop = asyncio.get_running_loop()
        connection = self._checkout()
        try:
            async with asyncio.timeout(timeout):
                if connection is None:
                    connection = await self._connect()
                future = connection.future = loop.create_future()
                assert connection.transport is not None
                connection.transport.write(encode(head, body))
                answer = await future
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        connection.future = None
        self._idle.append(connection)
        return answer

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)  # a model server whose backlog is full must not block the router's loop
            await loop.sock_connect(sock, _native(self.address))
            _, connection = await loop.create_unix_connection(lambda: _Connection(self.max_body), sock=sock)
        except OSError as exc:
            sock.close()
            raise ChannelError(f"cannot reach the model server at {self.address}: {exc}") from None
        self.opened += 1
        return connection

    def _checkout(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the likeliest to be warm
            if not connection.closed:
                return connection
        return None

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
