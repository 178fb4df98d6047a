"""The lean upstream client: a keep-alive pool of `h1conn.H1Connection`s, connected under the
outbound address policy (DESIGN §9).

Pool: per (scheme, host, port), last in first out, a connection idle more than `keepalive`
seconds (4 s, below the common 5 s server default) is closed; one closed by the peer while idle
is seen (its `connection_lost`) and skipped. A request on a reused connection that the peer
closed before any byte of the answer is sent once more on a fresh connection when the method is
idempotent; never a POST (the upstream may have acted on it). No connection limit.

Connecting (`_connect`), every new connection: the URL's host must not be a non-canonical number
(`AddressPolicy.check_name`), a name is resolved (threaded libc, or the test resolver) and
refused if ANY of its addresses is (`check_resolved`), then the socket for each address comes
from the socket factory (`AddressPolicy.socket`: the address actually connected to, checked
again — DNS rebinding and IP literals). `connect_timeout` bounds the TCP connect and the TLS
handshake of each address; addresses are raced as in RFC 8305 (the next one after 0.25 s or a
failure, the first connection made wins), so a blackholed IPv6 route is no 10 s stall. TLS
verifies the certificate chain and the host name, with the system's CA bundle
(`default_tls_context`; the frozen binary's run-time hook finds it) and SNI.

`request(timeout=…)` bounds the whole exchange, body included (legacy message POSTs); without
it nothing but connecting is bounded. A canary allowance (`proxy/upstream.py`) passes its own
`socket_factory` and `fresh=True`: a connection of its own, never pooled, never reused.

Errors: `UpstreamError` categories; `RefusedConnect` (the socket factory refused every address)
and `UnsafeDestinationError` (the name) pass through for the caller to log and decide;
ValueError for a URL or header that is not valid HTTP. None names a path, query or header.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from bindify_appliance.errors import UpstreamError
from bindify_appliance.outbound_policy import AddressPolicy, RefusedConnect
from bindify_appliance.proxy.h1client import TIMED_OUT, Response, StaleConnection
from bindify_appliance.proxy.h1conn import H1Connection
from bindify_appliance.proxy.h1request import serialize

__all__ = ["H1Client", "Resolver", "ThreadedResolver", "default_tls_context"]

UNREACHABLE: Final = "the upstream could not be reached"
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_DNS_TTL: Final = 60.0
_MEMO_SIZE: Final = 1024
_STAGGER: Final = 0.25  # seconds before the next address is tried alongside (RFC 8305)

SocketFactory = Callable[[tuple[Any, ...]], socket.socket]


class Resolver(Protocol):
    """DNS: `aiohttp.abc.AbstractResolver` fits (the tests' `MapResolver`); answers are
    mappings with at least "host", "port" and "family"."""

    async def resolve(self, host: str, port: int = ..., family: Any = ...) -> Sequence[Any]: ...


class ThreadedResolver:
    """libc's `getaddrinfo` in the loop's thread pool (what aiohttp's default does)."""

    async def resolve(
        self, host: str, port: int = 0, family: Any = socket.AF_UNSPEC
    ) -> list[dict[str, Any]]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
        )
        return [{"host": sa[0], "port": sa[1], "family": fam} for fam, _, _, _, sa in infos]


_TLS: ssl.SSLContext | None = None


def default_tls_context() -> ssl.SSLContext:
    """The verifying client context (chain and host name, system CAs), made once: loading the
    CA bundle is blocking I/O, done by `warm_up` in a worker thread."""
    global _TLS
    if _TLS is None:
        context = ssl.create_default_context()
        context.set_alpn_protocols(["http/1.1"])
        _TLS = context
    return _TLS


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a URL's requests go; `key` names its pool."""

    key: tuple[str, str, int]
    host: str  # for DNS, SNI and the certificate check (IDNA, no brackets)
    port: int
    host_header: str
    tls: bool
    literal: bool  # an IP address: no DNS


def _origin(scheme: str, authority: str) -> Origin:
    parts = urlsplit(f"{scheme}://{authority}/")
    if parts.scheme not in ("http", "https") or parts.username is not None:
        raise ValueError("unsupported URL")
    host = parts.hostname or ""
    if not host:
        raise ValueError("URL without a host")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = parts.port or default
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    shown = f"[{host}]" if address is not None and address.version == 6 else host
    header = shown if port == default else f"{shown}:{port}"
    return Origin((parts.scheme, host, port), host, port, header, tls, address is not None)


class _Pool:
    """Idle connections per origin key, newest last; expired ones closed by one timer."""

    def __init__(self, keepalive: float) -> None:
        self.keepalive = keepalive
        self.idle: dict[object, list[H1Connection]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def take(self, key: object) -> H1Connection | None:
        stack = self.idle.get(key)
        if not stack:
            return None
        now = stack[-1].loop.time()
        while stack:
            conn = stack.pop()
            if not conn.closed and conn.expires > now:
                return conn
            conn.abort()
        return None

    def put(self, conn: H1Connection) -> None:
        loop = conn.loop
        conn.expires = loop.time() + self.keepalive
        self.idle.setdefault(conn.key, []).append(conn)
        if self._sweep is None:
            self._sweep = loop.call_at(conn.expires, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = None
        now = loop.time()
        soonest = float("inf")
        for key, stack in list(self.idle.items()):
            fresh = [c for c in stack if not c.closed and c.expires > now]
            for conn in stack:
                if conn.closed or conn.expires <= now:
                    conn.abort()
            if fresh:
                self.idle[key] = fresh
                soonest = min(soonest, fresh[0].expires)
            else:
                del self.idle[key]
        if soonest != float("inf"):
            self._sweep = loop.call_at(soonest, self._expire, loop)

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for stack in self.idle.values():
            for conn in stack:
                conn.abort()
        self.idle.clear()


class H1Client:
    """Keep-alive HTTP/1.1 requests under `policy`; see the module docstring."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        connect_timeout: float = 10.0,
        keepalive_timeout: float = 4.0,
        high_water: int = 64 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self._resolver: Resolver = resolver or ThreadedResolver()
        self._connect_timeout = connect_timeout
        self._high_water = high_water
        self._tls = tls
        self._pool = _Pool(keepalive_timeout)
        self._origins: dict[tuple[str, str], Origin] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[tuple[int, tuple[Any, ...]]]]] = {}
        self._live: weakref.WeakSet[H1Connection] = weakref.WeakSet()

    def _split(self, url: str) -> tuple[Origin, str]:
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError("not an absolute URL")
        end = len(rest)
        for mark in "/?#":
            at = rest.find(mark, 0, end)
            if at != -1:
                end = at
        authority, target = rest[:end], rest[end:]
        if not target.startswith("/"):
            target = "/" + target
        memo_key = (scheme, authority)
        origin = self._origins.get(memo_key)
        if origin is None:
            origin = _origin(scheme.lower(), authority)
            if len(self._origins) >= _MEMO_SIZE:
                self._origins.clear()
            self._origins[memo_key] = origin
        return origin, target

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        timeout: float | None = None,
        socket_factory: SocketFactory | None = None,
        fresh: bool = False,
    ) -> Response:
        """Send the request; return once the answer's headers are in (body unread).

        Raises:
            UpstreamError: unreachable, TLS failure, broken or invalid answer, `timeout` passed.
            RefusedConnect, UnsafeDestinationError: the outbound policy refused the destination.
            ValueError: the URL, method or a header is not valid HTTP.
        """
        origin, target = self._split(url)
        data = serialize(method, target, origin.host_header, headers, body)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        for attempt in (0, 1):
            conn = None if fresh else self._pool.take(origin.key)
            if conn is None:
                conn = await self._connect(origin, socket_factory or self.policy.socket, deadline)
                if not fresh:
                    conn.on_idle = self._pool.put
            response = conn.start(data, method == "HEAD")
            if deadline is not None:
                response.set_deadline(deadline)
            waiter = response.headers_in
            if waiter is None:
                return response
            try:
                await waiter
            except StaleConnection:
                if attempt == 0 and method in _IDEMPOTENT:
                    continue
                raise UpstreamError(UNREACHABLE) from None
            except BaseException:
                response.close()  # cancelled or failed before the headers: the socket goes now
                raise
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _addresses(self, origin: Origin) -> list[tuple[int, tuple[Any, ...]]]:
        """(family, sockaddr) for each address of `origin`, policy-checked at layer 2."""
        if origin.literal:
            family = socket.AF_INET6 if ":" in origin.host else socket.AF_INET
            return [(family, (origin.host, origin.port))]
        loop = asyncio.get_running_loop()
        key = (origin.host, origin.port)
        cached = self._dns.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        self.policy.check_name(origin.host)
        results = await self._resolver.resolve(origin.host, origin.port, socket.AF_UNSPEC)
        self.policy.check_resolved(origin.host, [str(r["host"]) for r in results])
        found = [(int(r["family"]), (str(r["host"]), int(r["port"]))) for r in results]
        if not found:
            raise OSError("no address")
        if len(self._dns) >= _MEMO_SIZE:
            self._dns.clear()
        self._dns[key] = (loop.time() + _DNS_TTL, found)
        return found

    async def _connect(
        self, origin: Origin, make_socket: SocketFactory, deadline: float | None
    ) -> H1Connection:
        loop = asyncio.get_running_loop()
        try:
            addresses = await self._addresses(origin)
        except OSError as exc:
            raise UpstreamError(UNREACHABLE) from exc
        # Happy eyeballs (RFC 8305): the next address is tried when the previous one failed or
        # has not connected within `_STAGGER`, so a blackholed IPv6 route costs 0.25 s, not the
        # connect timeout; the first connection made wins, every other one is closed.
        queue = iter(addresses)
        pending: set[asyncio.Task[H1Connection]] = set()
        errors: list[BaseException] = []
        try:
            while True:
                address = next(queue, None)
                if address is not None:
                    attempt = self._attempt(loop, origin, make_socket, address, deadline)
                    pending.add(asyncio.ensure_future(attempt))
                if not pending:
                    break
                done, pending = await asyncio.wait(
                    pending,
                    timeout=_STAGGER if address is not None else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                made = [t.result() for t in done if t.exception() is None]
                errors += [e for t in done if (e := t.exception()) is not None]
                if made:
                    for extra in made[1:]:
                        extra.abort()
                    return made[0]
        finally:
            for task in pending:
                task.cancel()
            for result in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(result, H1Connection):
                    result.abort()
        failures = [e for e in errors if not isinstance(e, RefusedConnect)]
        if not failures and errors:
            raise errors[0]  # every address refused by the socket factory
        failure = failures[-1] if failures else None
        if isinstance(failure, TimeoutError):
            raise UpstreamError(TIMED_OUT) from failure
        raise UpstreamError(UNREACHABLE) from failure

    async def _attempt(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        make_socket: SocketFactory,
        address: tuple[int, tuple[Any, ...]],
        deadline: float | None,
    ) -> H1Connection:
        family, sockaddr = address
        sock = make_socket((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        try:
            return await self._open(loop, origin, sock, sockaddr, deadline)
        except BaseException:
            sock.close()
            raise

    async def _open(
        self,
        loop: asyncio.AbstractEventLoop,
        origin: Origin,
        sock: socket.socket,
        sockaddr: tuple[Any, ...],
        deadline: float | None,
    ) -> H1Connection:
        until = loop.time() + self._connect_timeout
        if deadline is not None:
            until = min(until, deadline)
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout_at(until):
            await loop.sock_connect(sock, sockaddr)
            tls = None
            if origin.tls:
                tls = self._tls or default_tls_context()
            _, conn = await loop.create_connection(
                lambda: H1Connection(loop, origin.key, self._high_water),
                sock=sock,
                ssl=tls,
                server_hostname=origin.host if tls is not None else None,
                ssl_handshake_timeout=self._connect_timeout if tls is not None else None,
            )
        self._live.add(conn)
        return conn

    async def close(self) -> None:
        """Close every connection, idle or in use (shutdown)."""
        self._pool.close()
        for conn in list(self._live):
            conn.abort()
        self._live.clear()
        await asyncio.sleep(0)
