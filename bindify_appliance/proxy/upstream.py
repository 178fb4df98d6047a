"""The upstream HTTP client: one pooled aiohttp session for every relayed request.

Why aiohttp and uvloop, with the measurement: docs/decisions/0001-upstream-http-client.md.
aiohttp also lets the relay cancel a request at any point: closing the response closes the
socket at once, which is how a client that leaves cancels the upstream request.

Configuration that matters:
- No total timeout and no read timeout (`ClientTimeout(total=None, sock_read=None)`): streams
  and long tool calls run as long as the upstream keeps them open. Only connecting is bounded
  (`connect_timeout`), plus an optional per-request timeout for legacy message POSTs, which some
  upstreams never answer.
- No connection limit (`limit=0`): thousands of concurrent streams.
- Keep-alive pool with a 4 s idle expiry, below the 5 s common server default (uvicorn, Node),
  so a pooled connection is not reused just as the upstream closes it.
- Bodies untouched: no automatic decompression, no cookie jar, no redirects, and none of the
  client's automatic headers (`User-Agent`, `Accept`, `Accept-Encoding`, `Content-Type`): what
  goes upstream is exactly what `headers.request_headers` chose.

- The outbound address policy (`outbound_policy.AddressPolicy`, DESIGN §9): the connector's resolver
  and socket factory are the policy's, so every new upstream connection is checked after DNS
  and again at connect (loopback, private, link-local, CGNAT, metadata, embedded IPv4,
  non-canonical numeric names) unless `allow_private` (BINDIFY_ALLOW_PRIVATE_UPSTREAMS). It
  costs nothing per request on a pooled connection. A refusal is one warning log line (host
  and reason only) and an ordinary `UpstreamError` to the relay.
- The one exception, the payload canary's allowance (`ops/canary_allowance.py`): only when the
  socket factory refused a connection does `request` ask `allowances.permit(service, url)`; a
  live allowance for exactly that service, `127.0.0.1` and port sends the request once more
  through a second session that never pools (`force_close`, so no other service can reuse its
  connection) and whose socket factory admits that one address and port for this request only
  (a context variable), every other address still judged by the policy.

Invariant: errors raised here carry a category, never the URL (it may carry an API key in its
query) or the headers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

from bindify_appliance.errors import UnsafeDestinationError, UpstreamError
from bindify_appliance.outbound_policy import (
    AddressPolicy,
    IPAddress,
    IPNetwork,
    RefusedConnect,
    safe_host,
)

if TYPE_CHECKING:  # imported with the first session, off the start-up path (see `warm_up`)
    import aiohttp
    from aiohttp.abc import AbstractResolver

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse", "warm_up", "with_query"]

# The client-side automatic headers aiohttp would add; the relay decides every header itself.
_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})

log = logging.getLogger(__name__)

# The (address, port) a canary allowance admits for the request being sent, if any.
_PERMIT: contextvars.ContextVar[tuple[IPAddress, int] | None] = contextvars.ContextVar(
    "bindify_upstream_permit", default=None
)


class Allowances(Protocol):
    """`ops.canary_allowance.CanaryAllowances`, as the proxy sees it."""

    async def permit(self, service_id: str, url: str) -> tuple[IPAddress, int] | None: ...


def warm_up() -> None:
    """Import the HTTP client (~0.3 s) ahead of the first request; safe from a worker thread.

    Nothing on the start-up path imports it, so `/healthz` answers sooner; `serve` calls this in
    a thread once it listens, so the first proxied request does not pay for the import either.
    """
    import aiohttp  # noqa: F401


def with_query(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` appended to its query (credential injection by query parameter)."""
    if not params:
        return url
    base, _, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        joiner = ""
    out = base + joiner + urlencode(list(params.items()))
    return out + ("#" + fragment if fragment else "")


@dataclass(eq=False)
class UpstreamResponse:
    """A response whose headers are in and whose body is read chunk by chunk."""

    status: int
    headers: list[tuple[str, str]]
    _response: aiohttp.ClientResponse

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

    async def read_chunk(self) -> bytes:
        """The next bytes of the body as they arrive; b"" at the end."""
        import aiohttp

        try:
            return await self._response.content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("the upstream connection broke mid-response") from exc

    def read_buffered(self) -> bytes:
        """Body bytes already received, without waiting (b"" if none yet)."""
        import aiohttp

        try:
            return self._response.content.read_nowait(-1)
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("the upstream connection broke mid-response") from exc

    def at_eof(self) -> bool:
        return self._response.content.at_eof()

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
        self._response.close()

    def release(self) -> None:
        """Done with a fully read body: return the connection to the pool."""
        self._response.release()


class UpstreamClient:
    """Pooled keep-alive HTTP client for upstream MCP servers, created lazily on the loop.

    `allow_private` is BINDIFY_ALLOW_PRIVATE_UPSTREAMS (off unless the caller says so);
    `resolver` and `allowed_networks` are for tests, as in `outbound.OutboundClient`.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolver: AbstractResolver | None = None,
        allowed_networks: Iterable[IPNetwork] = (),
        connect_timeout: float = 10.0,
        keepalive_timeout: float = 4.0,
        read_bufsize: int = 64 * 1024,
    ) -> None:
        self.policy = AddressPolicy(allow_private, tuple(allowed_networks))
        self._resolver = resolver
        self._connect_timeout = connect_timeout
        self._keepalive_timeout = keepalive_timeout
        self._read_bufsize = read_bufsize
        self._session: aiohttp.ClientSession | None = None
        self._permit_session: aiohttp.ClientSession | None = None
        # Set by the composition root: the canary's one-off allowances (see the docstring).
        self.allowances: Allowances | None = None
        # Called by `relay.open_upstream` with (service id, seconds to the response headers);
        # the composition root points it at the metrics (ops/metrics.py).
        self.observe: Callable[[str, float], None] | None = None

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        """No total and no read timeout; only connecting is bounded."""
        import aiohttp

        return aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=self._connect_timeout, sock_read=None
        )

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(
                **self.policy.connector_options(self._resolver),
                limit=0,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_timeout,
                ttl_dns_cache=60,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO,
                trust_env=False,
                read_bufsize=self._read_bufsize,
            )
            self._session = session
        return session

    def _get_permit_session(self) -> aiohttp.ClientSession:
        session = self._permit_session
        if session is None or session.closed:
            import aiohttp

            options = self.policy.connector_options(self._resolver)
            options["socket_factory"] = self._permit_socket
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(**options, limit=0, force_close=True),
                timeout=self.timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO,
                trust_env=False,
                read_bufsize=self._read_bufsize,
            )
            self._permit_session = session
        return session

    def _permit_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """The policy's socket factory, except for the one address and port permitted now."""
        family, type_, proto, _, sockaddr = addr_info
        permit = _PERMIT.get()
        if permit is not None and (str(sockaddr[0]), int(sockaddr[1])) == (
            str(permit[0]),
            permit[1],
        ):
            return socket.socket(family=family, type=type_, proto=proto)
        return self.policy.socket(addr_info)

    async def _refused(
        self, service: str | None, method: str, url: str, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        """The policy refused the connection: send it only under a canary allowance."""
        import aiohttp

        permit = None
        if service is not None and self.allowances is not None:
            permit = await self.allowances.permit(service, url)
        if permit is None:
            log.warning(
                "proxy: upstream destination refused by the outbound policy "
                "(refusing to connect to %s: the address is in a refused range)",
                safe_host(url),
            )
            raise UpstreamError("the upstream address is refused") from None
        token = _PERMIT.set(permit)
        try:
            return await self._get_permit_session().request(method, url, **kwargs)
        except TimeoutError as exc:
            raise UpstreamError("the upstream did not answer in time") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError("the upstream could not be reached") from exc
        finally:
            _PERMIT.reset(token)

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout: float | None = None,
        service: str | None = None,
    ) -> UpstreamResponse:
        """Send a request and return once the response headers are in.

        `timeout` bounds the whole exchange (legacy message POSTs only); by default there is no
        total timeout at all. `service` is the id the request is for (a canary allowance is
        for one service).

        Raises:
            UpstreamError: connection refused, reset, TLS failure, or `timeout` passed.
        """
        import aiohttp

        session = self._get_session()
        request_timeout = (
            session.timeout  # no total timeout, connecting bounded
            if timeout is None
            else aiohttp.ClientTimeout(
                total=timeout, sock_connect=self._connect_timeout, sock_read=None
            )
        )
        options: dict[str, Any] = {
            "headers": headers,
            "data": body,
            "allow_redirects": False,
            "timeout": request_timeout,
        }
        try:
            response = await session.request(method, url, **options)
        except UnsafeDestinationError as exc:  # the guarded resolver
            log.warning("proxy: upstream destination refused by the outbound policy (%s)", exc)
            raise UpstreamError("the upstream address is refused") from None
        except aiohttp.InvalidURL:  # aiohttp's own refusal of `127.1`, `2130706433`, …
            log.warning(
                "proxy: upstream destination refused by the outbound policy "
                "(refusing to connect to %s: not a valid or canonical address)",
                safe_host(url),
            )
            raise UpstreamError("the upstream address is refused") from None
        except TimeoutError as exc:
            raise UpstreamError("the upstream did not answer in time") from exc
        except aiohttp.ClientConnectorError as exc:
            if not isinstance(exc.os_error, RefusedConnect):  # not the socket factory
                raise UpstreamError("the upstream could not be reached") from exc
            response = await self._refused(service, method, url, **options)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise UpstreamError("the upstream could not be reached") from exc
        return UpstreamResponse(
            status=response.status,
            headers=[(k, v) for k, v in response.headers.items()],
            _response=response,
        )

    async def close(self) -> None:
        """Close every pooled connection (shutdown)."""
        for session in (self._session, self._permit_session):
            if session is not None and not session.closed:
                await session.close()
        self._session = self._permit_session = None
        # Let the transports finish closing before the loop stops.
        await asyncio.sleep(0)
