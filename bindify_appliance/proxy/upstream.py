"""The upstream HTTP client: one keep-alive pool (`h1pool.H1Client`) for every relayed request.

Why a client of our own (asyncio protocols, llhttp through `httptools`) instead of aiohttp, with
the measurement: docs/decisions/0001-upstream-http-client.md. Closing a response closes its
socket at once, which is how a client that leaves cancels the upstream request; cancelling a
waiting read loses no bytes (the relay's keep-alive timer relies on it).

Configuration that matters (each one tested in tests/proxy/test_h1client*.py):
- No total timeout and no read timeout: streams and long tool calls run as long as the upstream
  keeps them open. Only connecting is bounded (`connect_timeout`: TCP connect and TLS
  handshake), plus an optional whole-exchange timeout for legacy message POSTs, which some
  upstreams never answer.
- No connection limit: thousands of concurrent streams.
- Keep-alive pool with a 4 s idle expiry, below the 5 s common server default (uvicorn, Node),
  so a pooled connection is not reused just as the upstream closes it; a connection is pooled
  only after its answer was read in full, and a GET-like request whose pooled socket turns out
  dead is sent once more on a fresh one.
- Bodies untouched: no decompression, no cookies, no redirects, and no automatic headers but
  `Host` and `Content-Length`: what goes upstream is exactly what `headers.request_headers`
  chose. A header name or value that could end the head early (CR, LF, NUL) is refused.

- The outbound address policy (`outbound_policy.AddressPolicy`, DESIGN §9): every new upstream
  connection is checked before DNS (non-canonical numeric names), after DNS (every address) and
  again at connect (the policy's socket factory: loopback, private, link-local, CGNAT,
  metadata, embedded IPv4) unless `allow_private` (BINDIFY_ALLOW_PRIVATE_UPSTREAMS). It costs
  nothing per request on a pooled connection. A refusal is one warning log line (host and
  reason only) and an ordinary `UpstreamError` to the relay.
- The one exception, the payload canary's allowance (`ops/canary_allowance.py`): only when the
  socket factory refused a connection does `request` ask `allowances.permit(service, url)`; a
  live allowance for exactly that service, `127.0.0.1` and port sends the request once more on
  a connection of its own that is never pooled (so no other service can reuse it), whose socket
  factory admits that one address and port for this request only, every other address still
  judged by the policy.

Invariant: errors raised here carry a category, never the URL (it may carry an API key in its
query) or the headers.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

from bindify_appliance.errors import UnsafeDestinationError, UpstreamError
from bindify_appliance.outbound_policy import (
    AddressPolicy,
    IPAddress,
    IPNetwork,
    RefusedConnect,
    safe_host,
)
from bindify_appliance.proxy.h1client import Response as UpstreamResponse
from bindify_appliance.proxy.h1pool import H1Client, Resolver, default_tls_context

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamResponse", "warm_up", "with_query"]

log = logging.getLogger(__name__)


class Allowances(Protocol):
    """`ops.canary_allowance.CanaryAllowances`, as the proxy sees it."""

    async def permit(self, service_id: str, url: str) -> tuple[IPAddress, int] | None: ...


def warm_up() -> None:
    """Load the CA bundle for upstream TLS (blocking file reads) ahead of the first request;
    safe from a worker thread. `serve` calls it in a thread once it listens."""
    default_tls_context()


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


class UpstreamClient:
    """Pooled keep-alive HTTP client for upstream MCP servers, created lazily on the loop.

    `allow_private` is BINDIFY_ALLOW_PRIVATE_UPSTREAMS (off unless the caller says so);
    `resolver` and `allowed_networks` are for tests, as in `outbound.OutboundClient`.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        allowed_networks: Iterable[IPNetwork] = (),
        connect_timeout: float = 10.0,
        keepalive_timeout: float = 4.0,
        read_bufsize: int = 64 * 1024,
    ) -> None:
        self.policy = AddressPolicy(allow_private, tuple(allowed_networks))
        self._client = H1Client(
            self.policy,
            resolver=resolver,
            connect_timeout=connect_timeout,
            keepalive_timeout=keepalive_timeout,
            high_water=read_bufsize,
        )
        # Set by the composition root: the canary's one-off allowances (see the docstring).
        self.allowances: Allowances | None = None
        # Called by `relay.open_upstream` with (service id, seconds to the response headers);
        # the composition root points it at the metrics (ops/metrics.py).
        self.observe: Callable[[str, float], None] | None = None

    def _permit_socket(
        self, permit: tuple[IPAddress, int]
    ) -> Callable[[tuple[Any, ...]], socket.socket]:
        """The policy's socket factory, except for the one address and port permitted."""
        allowed = (str(permit[0]), permit[1])

        def make(addr_info: tuple[Any, ...]) -> socket.socket:
            family, type_, proto, _, sockaddr = addr_info
            if (str(sockaddr[0]), int(sockaddr[1])) == allowed:
                return socket.socket(family=family, type=type_, proto=proto)
            return self.policy.socket(addr_info)

        return make

    async def _refused(
        self,
        service: str | None,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float | None,
    ) -> UpstreamResponse:
        """The policy refused the connection: send it only under a canary allowance."""
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
        try:
            return await self._client.request(
                method,
                url,
                headers,
                body,
                timeout=timeout,
                socket_factory=self._permit_socket(permit),
                fresh=True,
            )
        except RefusedConnect:
            raise UpstreamError("the upstream address is refused") from None
        except ValueError as exc:
            raise UpstreamError("the upstream request is not valid HTTP") from exc

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

        `timeout` bounds the whole exchange, body included (legacy message POSTs only); by
        default there is no total timeout at all. `service` is the id the request is for (a
        canary allowance is for one service).

        Raises:
            UpstreamError: connection refused, reset, TLS failure, or `timeout` passed.
        """
        try:
            return await self._client.request(method, url, headers, body, timeout=timeout)
        except UnsafeDestinationError as exc:  # the name: non-canonical, or resolves inside
            log.warning("proxy: upstream destination refused by the outbound policy (%s)", exc)
            raise UpstreamError("the upstream address is refused") from None
        except RefusedConnect:  # the socket factory: an address in a refused range
            return await self._refused(service, method, url, headers, body, timeout)
        except ValueError as exc:
            raise UpstreamError("the upstream request is not valid HTTP") from exc

    async def close(self) -> None:
        """Close every upstream connection (shutdown)."""
        await self._client.close()
