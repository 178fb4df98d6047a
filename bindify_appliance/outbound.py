"""The one async HTTP client for non-proxy calls: OAuth, discovery, JWKS, API-key validation.

Why aiohttp: the proxy's upstream client (`proxy/upstream.py`) already chose it (measured: the
cheapest pooled client here), so the process carries one HTTP stack. Its connector has the two
seams an SSRF guard needs — a pluggable DNS resolver and a socket factory called with the exact
address of every connection attempt — so the guard runs at CONNECT time, after resolution,
which is what defeats DNS rebinding. Tornado's AsyncHTTPClient would need a custom resolver and
could not see the literal-IP path; httpx has no socket hook at all.

The guard (`destination_refusal`, applied three times, each a different layer):
1. before a request and before every redirect hop, the URL: `http`/`https` only (plain `http`
   only when private upstreams are allowed), no user-info, and a host that ends in a number must
   be a canonical dotted quad — `2130706433`, `0x7f.1`, `017700000001`, `127.1` are refused
   outright instead of being left to libc's lenient parser; IP literals are range-checked here;
2. the resolver: every address a name resolves to is checked; if ANY is refused the name is
   refused (a name that mixes public and private answers is an attack, not a fallback);
3. the socket factory: the address actually being connected to is checked once more, so nothing
   (a cached answer, an IP literal, a future aiohttp path) reaches a refused range.
Refused: loopback, RFC 1918 private, link-local (incl. cloud metadata 169.254.169.254), CGNAT
shared space, unique-local `fc00::/7`, site-local, unspecified `0.0.0.0`/`::`, multicast,
reserved/documentation ranges, and IPv6 forms embedding a refused IPv4 (IPv4-mapped, 6to4,
NAT64, Teredo). `allow_private=True` (BINDIFY_ALLOW_PRIVATE_UPSTREAMS, operator-only) lifts the
range check except for unspecified and multicast addresses, which are never a real server.

Redirects are followed by hand (at most `MAX_REDIRECTS`), each hop re-checked. When a redirect
leaves the origin, only harmless headers (`Accept`, `Content-Type`, `User-Agent`,
`MCP-Protocol-Version`) go along — never `Authorization`, cookies or a custom key header — and a
307/308 that would re-send a body (a client secret, an authorization code) to another origin is
refused.

Invariants:
- Errors are `OutboundError` / `UnsafeDestinationError` whose messages name at most the host:
  never a path or query (either may carry a credential), never a header or body.
- Bodies are capped (`max_body`); a larger answer is an error, never silently truncated.
- No cookies are kept, no proxy environment variables are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

if TYPE_CHECKING:  # aiohttp is imported when the first session is made (start-up time)
    import aiohttp
    from aiohttp.abc import AbstractResolver, ResolveResult

from bindify_appliance import __version__
from bindify_appliance.errors import OutboundError, UnsafeDestinationError

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "IPAddress",
    "IPNetwork",
    "OutboundClient",
    "OutboundResponse",
    "address_refusal",
    "destination_refusal",
    "same_origin",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TIMEOUT: Final = 15.0
CONNECT_TIMEOUT: Final = 5.0
DEFAULT_MAX_BODY: Final = 1024 * 1024
MAX_REDIRECTS: Final = 5
USER_AGENT: Final = f"Bindify-Appliance/{__version__}"

# Headers that may follow a redirect to another origin; everything else a caller set (auth,
# cookies, custom key headers) stays behind.
_CROSS_ORIGIN_SAFE: Final = frozenset(
    {"accept", "content-type", "user-agent", "mcp-protocol-version"}
)
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# WHATWG's "ends in a number": the last label is decimal digits or 0x-hex. Such a host is an
# IPv4 address to browsers and libc alike, so it must be spelled canonically or not at all.
_NUMERIC_LABEL: Final = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_CANONICAL_V4: Final = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
_SHARED: Final = ipaddress.ip_network("100.64.0.0/10")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")


# -- the policy -----------------------------------------------------------------------------


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why connecting to `address` is refused ("loopback", …), or None when it is allowed."""
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if allow_private:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "link-local"
        inner = _embedded_v4(address)
        if inner is not None:
            reason = address_refusal(inner)
            return f"{reason} (embedded in IPv6)" if reason else None
        if address in _NAT64_LOCAL:
            return "private"
        if address.is_site_local:
            return "site-local"
        if address in ipaddress.ip_network("fc00::/7"):
            return "unique-local"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (CGNAT)"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def _host_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def destination_refusal(
    url: str | URL,
    *,
    allow_private: bool,
    allow_http: bool | None = None,
    allowed_networks: Iterable[IPNetwork] = (),
) -> str | None:
    """Why `url` may not be fetched (syntax and literal addresses), or None.

    Names are not resolved here: the resolver and socket factory check what they resolve to.
    """
    allowed = _Allowed(allow_private, tuple(allowed_networks))
    return _url_refusal(url, allowed, allow_private if allow_http is None else allow_http)


def _url_refusal(url: str | URL, allowed: _Allowed, allow_http: bool) -> str | None:
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        host = parsed.host
        parsed.port  # noqa: B018 - raises on a malformed port
    except (ValueError, TypeError):
        return "not a valid URL"
    if parsed.scheme not in ("https", "http"):
        return "only https:// URLs are allowed"
    if parsed.scheme == "http" and not allow_http:
        return "plain http:// is refused (only https://)"
    if parsed.user is not None or parsed.password is not None:
        return "URLs with user-info are refused"
    if not host:
        return "the URL has no host"
    host = host.lower().rstrip(".")
    literal = _host_address(host)
    if literal is None:
        last = host.rsplit(".", 1)[-1]
        if _NUMERIC_LABEL.fullmatch(last):
            if not _CANONICAL_V4.fullmatch(host):
                return "numeric host in a non-standard form"
            literal = ipaddress.IPv4Address(host)
    if literal is not None:
        reason = allowed.refusal(literal)
        return f"{reason} address" if reason else None
    if not allowed.allow_private and (host == "localhost" or host.endswith(".localhost")):
        return "loopback name"
    return None


def same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, (a.host or "").lower(), a.port) == (b.scheme, (b.host or "").lower(), b.port)


# -- the connector seams --------------------------------------------------------------------


class _RefusedConnect(OSError):
    """Raised by the socket factory; aiohttp wraps it in ClientConnectorError."""


def _guarded_resolver(inner: AbstractResolver, allowed: _Allowed) -> AbstractResolver:
    """`inner`'s answers, refusing a name if ANY of its addresses is in a refused range."""
    from aiohttp.abc import AbstractResolver

    class GuardedResolver(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            results = await inner.resolve(host, port, family)
            for result in results:
                address = _host_address(str(result["host"]))
                reason = "unparseable" if address is None else allowed.refusal(address)
                if reason is not None:
                    raise UnsafeDestinationError(
                        f"refusing to connect to {host}: it resolves to a {reason} address"
                    )
            return results

        async def close(self) -> None:
            await inner.close()

    return GuardedResolver()


@dataclass(frozen=True)
class _Allowed:
    allow_private: bool
    networks: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        if any(address in net for net in self.networks if net.version == address.version):
            return None
        return address_refusal(address, allow_private=self.allow_private)

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = _host_address(str(sockaddr[0]))
        if address is None or self.refusal(address) is not None:
            raise _RefusedConnect("destination refused by the SSRF guard")
        return socket.socket(family=family, type=type_, proto=proto)


# -- responses ------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class OutboundResponse:
    """A complete answer (body read, at most `max_body` bytes)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    url: str = field(default="")

    def __repr__(self) -> str:
        return f"OutboundResponse(status={self.status}, bytes={len(self.body)})"

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (the message never quotes the body)."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ValueError("the response body is not JSON") from None


# -- the client -----------------------------------------------------------------------------


class OutboundClient:
    """Pooled, SSRF-guarded HTTP for everything that is not proxy traffic.

    `resolver` replaces DNS (tests map names to loopback); `allowed_networks` exempts exact
    networks from the range check (tests: "this loopback port plays a public server") without
    lifting it for anything else. Create one per process; `close()` at shutdown.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        allow_http: bool | None = None,
        resolver: AbstractResolver | None = None,
        allowed_networks: Iterable[IPNetwork | str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.allow_private = allow_private
        self.allow_http = allow_private if allow_http is None else allow_http
        self._allowed = _Allowed(
            allow_private, tuple(ipaddress.ip_network(n) for n in allowed_networks)
        )
        self._resolver = resolver
        self._timeout = timeout
        self._max_body = max_body
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise OutboundError("the outbound client is closed", reason="unreachable")
        if self._session is None:
            import aiohttp

            inner = self._resolver or aiohttp.ThreadedResolver()
            connector = aiohttp.TCPConnector(
                resolver=_guarded_resolver(inner, self._allowed),
                socket_factory=self._allowed.socket,
                limit=100,
                keepalive_timeout=4.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def check(self, url: str | URL) -> None:
        """Raise `UnsafeDestinationError` when `url` may not be fetched (syntax, literals)."""
        reason = _url_refusal(url, self._allowed, self.allow_http)
        if reason is not None:
            raise UnsafeDestinationError(f"refusing to connect to {_safe_host(url)}: {reason}")

    async def get(self, url: str, **kwargs: Any) -> OutboundResponse:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> OutboundResponse:
        return await self.request("POST", url, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        form: Mapping[str, str] | None = None,
        json_body: Any = None,
        follow_redirects: bool = True,
        max_body: int | None = None,
        timeout: float | None = None,
    ) -> OutboundResponse:
        """Send one request (following guarded redirects) and read the whole answer.

        Raises:
            UnsafeDestinationError: the URL or any hop is refused by the SSRF guard.
            OutboundError: unreachable, timed out, too large, too many or refused redirects.
        """
        sent: CIMultiDict[str] = CIMultiDict(headers or {})
        payload: bytes | None
        if form is not None:
            payload = urlencode(list(form.items())).encode("ascii")
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json_body is not None:
            payload = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            sent.setdefault("Content-Type", "application/json")
        else:
            payload = body.encode("utf-8") if isinstance(body, str) else body
        limit = self._max_body if max_body is None else max_body
        deadline = self._timeout if timeout is None else timeout
        current = URL(url)
        method = method.upper()
        for _hop in range(MAX_REDIRECTS + 1):
            self.check(current)
            response = await self._send(method, current, sent, payload, limit, deadline)
            location = response.headers.get("Location")
            if not follow_redirects or response.status not in _REDIRECTS or not location:
                return response
            try:
                target = current.join(URL(location))
            except (ValueError, TypeError):
                raise OutboundError(
                    f"{_safe_host(current)} sent an invalid redirect", reason="bad_url"
                ) from None
            if response.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, payload = "GET", None
                sent.popall("Content-Type", None)
            if not same_origin(current, target):
                if payload is not None:
                    raise OutboundError(
                        f"{_safe_host(current)} redirected a request with a body to another "
                        "origin; refused (it could carry credentials)",
                        reason="redirect_refused",
                    )
                sent = CIMultiDict(
                    (k, v) for k, v in sent.items() if k.lower() in _CROSS_ORIGIN_SAFE
                )
            current = target
        raise OutboundError(
            f"{_safe_host(url)} redirected more than {MAX_REDIRECTS} times",
            reason="too_many_redirects",
        )

    @contextlib.asynccontextmanager
    async def stream(
        self, url: str, *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """GET `url` and hold the answer open: (status, its body line by line).

        For event streams (the legacy MCP transport's key check). No redirect is followed; the
        same SSRF guard as `request`; the caller bounds the time it reads. Leaving the context
        closes the connection. Raises like `request`.
        """
        import aiohttp

        self.check(url)
        host = _safe_host(url)
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT)
        try:
            async with session.get(
                URL(url), headers=dict(headers or {}), allow_redirects=False, timeout=timeout
            ) as response:

                async def lines() -> AsyncIterator[bytes]:
                    try:
                        while line := await response.content.readline():
                            yield line
                    except (aiohttp.ClientError, OSError, ValueError):
                        raise OutboundError(
                            f"the stream from {host} failed", reason="unreachable"
                        ) from None

                yield response.status, lines()
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _RefusedConnect):
                raise UnsafeDestinationError(
                    f"refusing to connect to {host}: the address is in a refused range"
                ) from None
            raise OutboundError(f"could not connect to {host}", reason="unreachable") from None
        except aiohttp.InvalidURL:
            raise UnsafeDestinationError(
                f"refusing to connect to {host}: not a valid or canonical address"
            ) from None
        except (aiohttp.ClientError, OSError):
            raise OutboundError(f"the connection to {host} failed", reason="unreachable") from None

    async def _send(
        self,
        method: str,
        url: URL,
        headers: CIMultiDict[str],
        payload: bytes | None,
        limit: int,
        deadline: float,
    ) -> OutboundResponse:
        import aiohttp

        session = self._get_session()
        host = _safe_host(url)
        timeout = aiohttp.ClientTimeout(total=deadline, connect=min(CONNECT_TIMEOUT, deadline))
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=payload,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > limit:
                        raise OutboundError(
                            f"the answer from {host} is larger than {limit} bytes",
                            reason="too_large",
                        )
                    chunks.append(chunk)
                return OutboundResponse(
                    status=response.status,
                    headers=CIMultiDictProxy(CIMultiDict(response.headers)),
                    body=b"".join(chunks),
                    url=str(response.url),
                )
        except OutboundError:
            raise
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _RefusedConnect):
                raise UnsafeDestinationError(
                    f"refusing to connect to {host}: the address is in a refused range"
                ) from None
            raise OutboundError(f"could not connect to {host}", reason="unreachable") from None
        except aiohttp.InvalidURL:
            raise UnsafeDestinationError(
                f"refusing to connect to {host}: not a valid or canonical address"
            ) from None
        except TimeoutError:
            raise OutboundError(f"{host} did not answer in time", reason="timeout") from None
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError):
            raise OutboundError(f"the connection to {host} failed", reason="unreachable") from None


def _safe_host(url: str | URL) -> str:
    """The host of `url` for messages (never its path or query); "the server" if unparseable."""
    try:
        host = (url if isinstance(url, URL) else URL(url)).host
    except (ValueError, TypeError):
        host = None
    if not host:
        return "the server"
    return "".join(ch for ch in host[:255] if ch.isprintable())
