"""One exchange of the lean keep-alive HTTP/1.1 upstream client: the response parsed by llhttp
(through `httptools`), the body handed out as it arrives.

The request is `h1request.serialize`, the socket `h1conn.H1Connection`, the pool, connecting and
the outbound policy `h1pool.py`.

Response (`Response`): status and headers as (name, value) `str` pairs in the upstream's own
spelling (latin-1, byte-exact), then body bytes as they arrive — chunked, `Content-Length`, or
until the upstream closes. 1xx interim answers are skipped; a 101 is an error (no upgrade was
asked for). Trailers are parsed and dropped. HEAD, 204 and 304 answers have no body.
Flow control: past `high_water` buffered body bytes, reading from the socket pauses until the
caller takes them.

Reuse (`Response.release`): only after the whole response was read off the wire, when both
sides keep the connection alive and the answer was not to a HEAD. Refused outright, the
connection closed: a parse error (llhttp is strict: invalid or overflowing chunk sizes, bad
framing), `Content-Length` with `Transfer-Encoding`, two `Content-Length`s, a transfer coding
other than `chunked`, a header block or chunk framing over `STALL_LIMIT` bytes without body
progress, and bytes nobody asked for (after a complete response, or on an idle connection).

Cancellation: cancelling a waiting `read_chunk` loses no bytes (the relay's keep-alive timer
does it); `close()` aborts the socket at once, and a response not read to its end is never
pooled.

Invariant: errors are `UpstreamError` categories; nothing here logs or formats a URL, a header
or a payload.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

import httptools

from bindify_appliance.errors import UpstreamError

__all__ = ["BROKE", "Response", "StaleConnection"]

STALL_LIMIT: Final = 64 * 1024  # bytes in a row without body progress (headers, framing)
BROKE: Final = "the upstream connection broke mid-response"
INVALID: Final = "the upstream sent an invalid HTTP response"
TIMED_OUT: Final = "the upstream did not answer in time"


class H1Connection(Protocol):
    """What an exchange needs of its socket (`h1conn.H1Connection`)."""

    loop: asyncio.AbstractEventLoop
    high_water: int
    response: Response | None
    closed: bool
    paused: bool
    exchanges: int

    def abort(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def idle(self) -> None: ...


class StaleConnection(UpstreamError):
    """A reused connection closed before any byte of the answer: the request may be retried."""


class Response:
    """One exchange: the answer's status and headers once `headers_in` resolves, then its body.

    llhttp's callbacks (`on_*`) run inside `feed`; the parser is this exchange's alone.
    """

    __slots__ = (
        "_buf",
        "_conn",
        "_done",
        "_error",
        "_head_only",
        "_interim",
        "_keep",
        "_lengths",
        "_parser",
        "_progress",
        "_received",
        "_size",
        "_stall",
        "_te",
        "_timer",
        "_until_close",
        "_waiter",
        "headers",
        "headers_in",
        "status",
    )

    def __init__(self, conn: H1Connection, head_only: bool) -> None:
        self._conn: H1Connection | None = conn
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self.headers_in: asyncio.Future[None] | None = conn.loop.create_future()
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self._buf: list[bytes] = []
        self._size = 0
        self._done = False
        self._error: str | None = None
        self._keep = False
        self._interim = False
        self._until_close = False
        self._lengths: list[str] = []
        self._te: str | None = None
        self._received = 0
        self._stall = 0
        self._progress = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- the wire side (called by the connection and by llhttp) -------------------------------

    def feed(self, data: bytes) -> None:
        if self._done:
            self._keep = False  # bytes after a complete answer: never reuse
            self._abort()
            return
        self._received += len(data)
        self._progress = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(INVALID)
            return
        except httptools.HttpParserError:
            if self._done:  # a second message after a complete one (or a HEAD answer's body)
                self._keep = False
                self._abort()
            else:
                self._fail(INVALID)
            return
        if self._progress or self._done:
            self._stall = 0
        else:
            self._stall += len(data)
            if self._stall > STALL_LIMIT:
                self._fail(INVALID)

    def on_message_begin(self) -> None:
        if self._done:
            raise ValueError("a second response")  # stops llhttp; `feed` closes the socket

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status:
            return  # a trailer: parsed, never used
        text = name.decode("latin-1")
        decoded = value.decode("latin-1")
        self.headers.append((text, decoded))
        lower = text.lower()
        if lower == "content-length":
            self._lengths.append(decoded)
        elif lower == "transfer-encoding":
            self._te = decoded if self._te is None else f"{self._te}, {decoded}"

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise ValueError("protocol switch")
            self._interim = True  # 100 Continue, 103 Early Hints, …: the real answer follows
            self.headers = []
            self._lengths = []
            self._te = None
            return
        if self._te is not None and (self._lengths or self._te.strip().lower() != "chunked"):
            raise ValueError("ambiguous framing")
        if len(self._lengths) > 1:
            raise ValueError("ambiguous framing")
        self.status = status
        self._keep = self._parser.should_keep_alive() and not self._head_only
        self._until_close = self._te is None and not self._lengths and status not in (204, 304)
        if self._head_only:
            self._until_close = False
            self._complete()
        waiter, self.headers_in = self.headers_in, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._done:
            return  # a HEAD answer's body: the connection is not reused
        self._buf.append(body)
        self._size += len(body)
        self._progress = True
        self._wake()
        conn = self._conn
        if self._size > (conn.high_water if conn is not None else 0) and conn is not None:
            conn.pause()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self._done:
            self._complete()

    def lost(self) -> None:
        """The socket closed: the end of a read-until-close body, or a broken answer."""
        if self._done:
            return
        if self.status and self._until_close and self._error is None:
            self._keep = False
            self._complete()
            return
        conn = self._conn
        if self._received == 0 and conn is not None and conn.exchanges > 0:
            self._fail(None)  # a reused connection the peer had closed: `StaleConnection`
        else:
            self._fail(BROKE)

    def _complete(self) -> None:
        self._done = True
        self._cancel_timer()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, reason: str | None) -> None:
        """`reason` None: stale (nothing of the answer came)."""
        if self._error is None and not self._done:
            self._error = reason or BROKE
            waiter, self.headers_in = self.headers_in, None
            if waiter is not None and not waiter.done():
                error = StaleConnection(BROKE) if reason is None else UpstreamError(reason)
                waiter.set_exception(error)
                waiter.exception()  # retrieved here: whoever awaited it may be gone
            self._wake()
        self._keep = False
        self._cancel_timer()
        self._abort()

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def set_deadline(self, when: float) -> None:
        """The whole exchange ends by `when` (loop time), or it fails as timed out."""
        conn = self._conn
        if conn is not None and not self._done:
            self._timer = conn.loop.call_at(when, self._fail, TIMED_OUT)

    # -- the reader's side --------------------------------------------------------------------

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name.lower() == "content-type":
                return value.split(";", 1)[0].strip().lower()
        return ""

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    def _take(self) -> bytes:
        buf = self._buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        self._buf = []
        self._size = 0
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        return data

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; b"" at the end."""
        while True:
            if self._buf:
                return self._take()
            if self._done:
                return b""
            if self._error is not None:
                raise UpstreamError(self._error)
            conn = self._conn
            if conn is None:
                raise UpstreamError(BROKE)
            waiter = conn.loop.create_future()
            self._waiter = waiter
            try:
                await waiter  # cancelled: the bytes stay in `_buf` for the next read
            finally:
                self._waiter = None

    def read_buffered(self) -> bytes:
        """Body bytes already received, without waiting (b"" if none yet)."""
        if self._buf:
            return self._take()
        if self._error is not None and not self._done:
            raise UpstreamError(self._error)
        return b""

    def at_eof(self) -> bool:
        return self._done and not self._buf

    async def read_all(self, limit: int = 1024 * 1024) -> bytes:
        """The whole (small) body; used only for replies the proxy discards."""
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await self.read_chunk()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Abort: close the connection now (the upstream sees its socket close)."""
        self._cancel_timer()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
            if conn.response is self:
                conn.response = None
        if not self._done and self._error is None:
            self._error = BROKE
        self._wake()

    def release(self) -> None:
        """Done with the body: the connection goes back to the pool only if the answer was read
        off the wire in full and both sides keep it alive; otherwise it is closed."""
        conn = self._conn
        if conn is None:
            return
        if not (self._done and self._keep) or conn.closed:
            self.close()
            return
        self._cancel_timer()
        self._conn = None
        conn.idle()
