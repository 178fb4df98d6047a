"""The proxy's HTTP seam: the one exchange base every MCP route stands on.

`ProxyBaseHandler` is not a Tornado `RequestHandler`: each MCP rule's target is an
`ExchangeRoute` (a Tornado `Router`, which receives the rule's path groups and keyword
arguments), and it hands every request it matches straight to a new exchange through one small
`HTTPMessageDelegate` (`_Messages`), skipping `RequestHandler`'s per-request machinery (issue
16; the figures are in the README's Performance section). An exchange offers exactly the
handler API the proxy's handlers use, with `RequestHandler`'s meaning: `request`,
`path_kwargs`, `initialize`, `prepare`, `data_received` (the body is always streamed),
`get`/`post`/`delete`/`options`, `get_query_argument`, `set_status`, `get_status`,
`set_header`, `clear_header`, `clear`, `write`, `flush` (resolves once the client's socket
took the bytes: backpressure), `finish`, `send_error`, `on_connection_close`, `on_finish`,
`_reason`, `_finished`, `_headers_written`.

What it does itself, and nothing else:
- in-flight accounting, the open-stream gauge, the access-log route template and the
  forwarding warning, shared with the page/API base (`http.accounting.Counting`; the raw
  path, which may hold a secret URL segment, is never logged); the access line and the request
  count go through the route's `log_function` (`proxy_routes` gives the application's);
- the sandbox headers (`sandbox.SANDBOX_HEADERS`) and `Date` on every answer (never `Server`
  or a default HTML type); no cookies, XSRF, ETags, templates or output transforms;
- a method outside `SUPPORTED_METHODS` answers 405 with the route's `Allow` before anything
  else runs (HEAD too: Tornado's connection sends a HEAD answer's headers, never its body);
- an unexpected exception answers in the admin API's JSON error shape, with no exception text,
  and is logged with the route template (not the path);
- the connection closing at any time calls `on_connection_close` at once (the handlers cancel
  their upstream exchange there); a body over the server's `max_body_size` is refused by
  Tornado's HTTP/1 connection (400) before it is read, after `prepare`.

Performance work on the proxy's HTTP side changes this module only: the handlers above it
speak the API above and never reach into Tornado's connection objects except `_abort_client`.

Invariant: no log line or error body carries a credential, session id, URL query or payload.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http.client import responses
from typing import Any

import tornado.web
from tornado import httputil, iostream
from tornado.log import app_log, gen_log
from tornado.routing import Router

from bindify_appliance.errors import ErrorParts, http_parts
from bindify_appliance.http.accounting import Counting
from bindify_appliance.http.base import ErrorSeam
from bindify_appliance.sandbox import SANDBOX_HEADERS

__all__ = ["ExchangeRoute", "ProxyBaseHandler", "http_date"]

_date_second = -1
_date_text = ""
# RFC 9110 field values; a CR or LF would split the answer.
_VALID_HEADER_VALUE = re.compile(r"[\x09\x20-\x7e\x80-\xff]*")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f]")
_NO_BODY_STATUSES = frozenset({204, 304})


def http_date() -> str:
    """The current time as an HTTP `Date`, formatted once per second (not once per answer)."""
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_text = formatdate(now, usegmt=True)
        _date_second = now
    return _date_text


class _Messages(httputil.HTTPMessageDelegate):
    """What the HTTP/1 connection calls for one request, passed on to its exchange."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        return self.exchange._start()

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.exchange.data_received(chunk)

    def finish(self) -> None:
        body = self.exchange._body_future
        if not body.done():
            body.set_result(None)

    def on_connection_close(self) -> None:
        self.exchange.on_connection_close()


class _Exchange(ErrorSeam):
    """One request and its answer (see the module doc for the API and its meaning)."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "POST", "DELETE", "OPTIONS")
    ALLOW = "GET, POST, DELETE, OPTIONS"  # the `Allow` of a 405; each route sets its own
    path_kwargs: dict[str, str]

    def __init__(
        self,
        log_function: Callable[[Any], None],
        request: httputil.HTTPServerRequest,
        path_kwargs: dict[str, bytes],
        **kwargs: Any,
    ) -> None:
        self._log_function = log_function
        self.request = request
        self._raw_path_kwargs = path_kwargs
        self._headers_written = False
        self._finished = False
        self._exchange_task: asyncio.Task[None] | None = None
        self._prepared: asyncio.Future[None] | None = None
        self._body_future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.clear()
        request.connection.set_close_callback(self.on_connection_close)  # type: ignore[union-attr]
        self.initialize(**kwargs)

    # -- hooks (RequestHandler's names and meaning) -----------------------------------------

    def _initialize(self) -> None:
        pass

    initialize: Callable[..., None] = _initialize

    def prepare(self) -> Awaitable[None] | None:
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None

    def on_connection_close(self) -> None:
        body = self._body_future
        if not body.done():
            body.set_exception(iostream.StreamClosedError())
            body.exception()  # retrieved: a request cut short is not an error to report

    def on_finish(self) -> None:
        pass

    # -- the answer -------------------------------------------------------------------------

    def clear(self) -> None:
        """No content, status 200 and the headers of every answer: the sandbox's and `Date`."""
        headers = httputil.HTTPHeaders()
        for name, value in SANDBOX_HEADERS:
            headers[name] = value
        headers["Date"] = http_date()
        self._headers = headers
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def set_status(self, status_code: int, reason: str | None = None) -> None:
        self._status_code = status_code
        self._reason = reason or responses.get(status_code, "Unknown")

    def get_status(self) -> int:
        return self._status_code

    def set_header(self, name: str, value: str | int) -> None:
        if isinstance(value, int):
            self._headers[name] = str(value)
            return
        if _VALID_HEADER_VALUE.fullmatch(value) is None:
            raise ValueError("unsafe header value")  # never echo it: it may be anything
        self._headers[name] = value

    def clear_header(self, name: str) -> None:
        if name in self._headers:
            del self._headers[name]

    def write(self, chunk: bytes | str) -> None:
        if self._finished:
            raise RuntimeError("Cannot write() after finish()")
        self._write_buffer.append(chunk.encode() if isinstance(chunk, str) else chunk)

    def flush(self, include_footers: bool = False) -> asyncio.Future[None]:
        """Send what was written; the future resolves once the client's socket took it."""
        connection = self.request.connection
        assert connection is not None
        buffer = self._write_buffer
        chunk = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        self._write_buffer = []
        head = self.request.method == "HEAD"
        if not self._headers_written:
            self._headers_written = True
            start_line = httputil.ResponseStartLine("", self._status_code, self._reason)
            return connection.write_headers(start_line, self._headers, b"" if head else chunk)  # type: ignore[return-value]
        if head:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return connection.write(chunk)  # type: ignore[return-value]

    def finish(self, chunk: bytes | str | None = None) -> asyncio.Future[None]:
        if self._finished:
            raise RuntimeError("finish() called twice")
        if chunk is not None:
            self.write(chunk)
        if not self._headers_written:
            status = self._status_code
            if status in _NO_BODY_STATUSES or 100 <= status < 200:
                if any(self._write_buffer):
                    raise RuntimeError(f"Cannot send body with status code HTTP{status}")
                for name in ("Content-Encoding", "Content-Language", "Content-Type"):
                    self.clear_header(name)
            elif "Content-Length" not in self._headers:
                self._headers["Content-Length"] = str(sum(map(len, self._write_buffer)))
        connection = self.request.connection
        assert connection is not None
        connection.set_close_callback(None)  # type: ignore[attr-defined]
        future = self.flush(include_footers=True)
        connection.finish()
        self._log_function(self)
        self._finished = True
        self.on_finish()
        return future

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """Answer `status_code` through `write_error`, or end a response already under way."""
        if self._headers_written:
            gen_log.error("Cannot send error response after headers written")
            if not self._finished:
                try:
                    self.finish()
                except Exception:
                    gen_log.error("Failed to flush partial response", exc_info=True)
            return
        self.clear()
        self.set_status(status_code)
        try:
            self.write_error(status_code, **kwargs)
        except Exception:
            app_log.error("Uncaught exception in write_error", exc_info=True)
        if not self._finished:
            self.finish()

    def render_error(
        self, status_code: int, parts: ErrorParts | None, exc: BaseException | None
    ) -> None:
        """The shared JSON shape (`http.base.ErrorSeam`); a 405 names the route's methods."""
        if status_code == 405:
            self.set_header("Allow", self.ALLOW)
        super().render_error(status_code, parts, exc)  # type: ignore[misc]

    # -- the request ------------------------------------------------------------------------

    def get_query_argument(self, name: str, default: str) -> str:
        """The last value of a query parameter, control characters blanked and stripped."""
        values = self.request.query_arguments.get(name)
        if not values:
            return default
        try:
            text = values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise tornado.web.HTTPError(400) from None
        return _CONTROL_CHARS.sub(" ", text).strip()

    # -- running one exchange ---------------------------------------------------------------

    def _start(self) -> asyncio.Future[None]:
        """Headers are in: run the exchange; the connection reads the body once `prepare` ran."""
        loop = asyncio.get_running_loop()
        self._prepared = loop.create_future()
        self._exchange_task = loop.create_task(self._execute())
        return self._prepared

    def _ready_for_body(self) -> None:
        prepared = self._prepared
        if prepared is not None and not prepared.done():
            prepared.set_result(None)

    async def _execute(self) -> None:
        method = self.request.method or ""
        try:
            if method not in self.SUPPORTED_METHODS:
                raise tornado.web.HTTPError(405)
            try:
                self.path_kwargs = {
                    name: value.decode("utf-8")
                    for name, value in self._raw_path_kwargs.items()
                    if value is not None
                }
            except UnicodeDecodeError:
                raise tornado.web.HTTPError(400) from None
            prepared = self.prepare()
            if prepared is not None:
                await prepared
            self._ready_for_body()
            if self._finished:
                return
            try:
                await self._body_future
            except iostream.StreamClosedError:
                return
            result = getattr(self, method.lower())(**self.path_kwargs)
            if result is not None:
                await result
            if not self._finished:
                self.finish()
        except (Exception, asyncio.CancelledError) as exc:
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
                # This exchange's own task was cancelled: answer if nothing was, then let the
                # cancellation propagate.
                if not self._finished:
                    try:
                        self.send_error(500)
                    except Exception:
                        app_log.error("Exception in exception handler", exc_info=True)
                raise
            try:
                self._answer_exception(exc)
            except Exception:
                app_log.error("Exception in exception handler", exc_info=True)
        finally:
            self._ready_for_body()

    def _answer_exception(self, exc: BaseException) -> None:
        # An error raised on purpose (`errors.http_parts` knows it) answers its own status and
        # is not a server error; anything else is logged and answers a bare 500.
        if not isinstance(exc, tornado.web.HTTPError) and http_parts(exc) is None:
            # Named by its route template: the path may carry a secret URL segment.
            app_log.error(
                "uncaught exception in %s %s",
                self.request.method,
                getattr(self, "route_template", None) or "<unmatched>",
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        if self._finished:
            return
        status = exc.status_code if isinstance(exc, tornado.web.HTTPError) else 500
        self.send_error(status, exc_info=(type(exc), exc, exc.__traceback__))


class ProxyBaseHandler(Counting, _Exchange):
    """Accounting, access-log template, stream gauge and sandbox headers for MCP routes."""


class ExchangeRoute(Router):
    """A route's target: each request it matches goes straight to a new `exchange` (no
    `RequestHandler` in between). Tornado passes a rule's path groups and keyword arguments
    to a `Router` target; they reach the exchange's `path_kwargs` and `initialize`.

    `log_function` writes the access line and counts the request (the application's own
    `log_function` is not reachable from a router).
    """

    def __init__(self, exchange: type[_Exchange], log_function: Callable[[Any], None]) -> None:
        self.handler_class = exchange
        self.log_function = log_function

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate:
        exchange = self.handler_class(
            self.log_function,
            request,
            kwargs.get("path_kwargs") or {},
            **(kwargs.get("target_kwargs") or {}),
        )
        return _Messages(exchange)
