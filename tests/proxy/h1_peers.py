"""Raw upstreams for the lean HTTP client's tests (`test_h1client*.py`): asyncio servers on
127.0.0.1 that write exact bytes, so every framing edge case is what the wire carries.

`Scripted(handle)` runs `handle(conn)` for every accepted connection, where `conn` is a `Peer`
(the request reader and writer, the connection's index) and records, per connection, the
requests read and when the client's EOF arrived. `replies(*answers)` is the common handler: each
request read gets the next answer's bytes (shared across connections, in order); a float pauses
that many seconds (ended early by the client's EOF), `CLOSE` closes the connection; after the
last answer the connection stays open until the client leaves.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

CLOSE = object()
Step = bytes | float | object


@dataclass
class Peer:
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: Scripted

    async def request(self) -> bytes | None:
        """One whole request (head and Content-Length body), or None at the client's EOF."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        self.server.requests.append((self.index, head + body))
        return head + body

    async def pause(self, seconds: float) -> bool:
        """Wait `seconds` unless the client leaves first (False, its EOF recorded)."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), seconds)
        except TimeoutError:
            return True
        except ConnectionError:
            data = b""
        if data:  # the client's next request, sent early: put it back for `request`
            self.reader.feed_data(data)
            return True
        self.server.eofs[self.index] = time.monotonic()
        return False

    async def wait_eof(self) -> None:
        """Until the client closes; records when (`Scripted.eofs`)."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.server.eofs[self.index] = time.monotonic()


@dataclass
class Scripted:
    handle: Callable[[Peer], Awaitable[None]]
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    eofs: dict[int, float] = field(default_factory=dict)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def url(self, path: str = "/mcp", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # the handlers see their connection end, and return
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self.handle(Peer(index, reader, writer, self))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def eof_of(self, index: int, within: float = 2.0) -> float:
        """When connection `index` saw the client's EOF (waits up to `within` seconds)."""
        deadline = time.monotonic() + within
        while index not in self.eofs:
            assert time.monotonic() < deadline, f"connection {index} never saw EOF"
            await asyncio.sleep(0.005)
        return self.eofs[index]


def replies(*answers: Step | list[Step]) -> Callable[[Peer], Awaitable[None]]:
    """A handler answering each request with the next of `answers` (see the module docstring);
    an answer may be a list of steps (bytes written one after another, pauses, `CLOSE`)."""
    queue: Iterator[Step | list[Step]] = iter(answers)

    async def handle(peer: Peer) -> None:
        while True:
            if await peer.request() is None:
                peer.server.eofs[peer.index] = time.monotonic()
                return
            answer = next(queue, None)
            if answer is None:
                await peer.wait_eof()
                return
            for step in answer if isinstance(answer, list) else [answer]:
                if step is CLOSE:
                    peer.writer.close()
                    return
                if isinstance(step, float):
                    if not await peer.pause(step):
                        return
                else:
                    assert isinstance(step, bytes)
                    try:
                        peer.writer.write(step)
                        await peer.writer.drain()
                    except ConnectionError:  # the client closed (or reset) the connection
                        peer.server.eofs[peer.index] = time.monotonic()
                        return

    return handle


def ok(body: bytes = b'{"ok":true}', *extra: str) -> bytes:
    """A keep-alive 200 with a Content-Length body and `extra` header lines."""
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", *extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    """A 200 with a chunked body of `chunks` (and raw `trailer` lines before the final CRLF)."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + body + b"0\r\n" + trailer + b"\r\n"
