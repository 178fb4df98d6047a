"""The async HTTP client for non-proxy calls: OAuth, discovery, JWKS, API-key validation, the
OIDC identity provider — under the one outbound address policy (`outbound_policy.py`).

`AddressPolicy` (re-exported here) is the single address policy for every connection the
appliance opens: this client uses it through `AddressPolicy.connector_options()`, the proxy's
upstream client (`proxy/h1pool.py`) through the same checks called directly, and admin-entered
URLs are checked with `destination_refusal` when saved (`services/validation.py`). There is no
second copy of its rules.

Why aiohttp: these calls are rare and want what a general client gives (redirects followed by
hand, bodies capped, JSON), unlike the proxy's hot path, which has a lean client of its own
(docs/decisions/0001-upstream-http-client.md); aiohttp is imported with the first session, off
the proxy path and off start-up. Its connector has the two seams an SSRF guard needs — a
pluggable DNS resolver and a socket factory called with the exact address of every connection
attempt — so the guard runs at CONNECT time, after resolution, which is what defeats DNS
rebinding. Tornado's AsyncHTTPClient would need a custom resolver and
could not see the literal-IP path; httpx has no socket hook at all.

The policy's URL check runs before the request and before every redirect hop; its resolver and
socket factory guard every connection. Redirects are followed by hand (at most
`MAX_REDIRECTS`), each hop re-checked. When a redirect leaves the origin, only harmless headers
(`Accept`, `Content-Type`, `User-Agent`, `MCP-Protocol-Version`) go along — never
`Authorization`, cookies or a custom key header — and a 307/308 that would re-send a body (a
client secret, an authorization code) to another origin is refused.

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
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

if TYPE_CHECKING:  # aiohttp is imported when the first session is made (start-up time)
    import aiohttp
    from aiohttp.abc import AbstractResolver

from bindify_appliance import __version__
from bindify_appliance.errors import OutboundError, UnsafeDestinationError
from bindify_appliance.outbound_policy import (
    METADATA_ADDRESSES,
    AddressPolicy,
    IPAddress,
    IPNetwork,
    RefusedConnect,
    address_refusal,
    destination_refusal,
    numeric_host_refusal,
    safe_host,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "METADATA_ADDRESSES",
    "AddressPolicy",
    "IPAddress",
    "IPNetwork",
    "OutboundClient",
    "OutboundResponse",
    "RefusedConnect",
    "address_refusal",
    "destination_refusal",
    "numeric_host_refusal",
    "safe_host",
    "same_origin",
]

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


def same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, (a.host or "").lower(), a.port) == (b.scheme, (b.host or "").lower(), b.port)


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
        self._allowed = AddressPolicy(
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

            connector = aiohttp.TCPConnector(
                **self._allowed.connector_options(self._resolver),
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
        reason = self._allowed.url_refusal(url, allow_http=self.allow_http)
        if reason is not None:
            raise UnsafeDestinationError(f"refusing to connect to {safe_host(url)}: {reason}")

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
                    f"{safe_host(current)} sent an invalid redirect", reason="bad_url"
                ) from None
            if response.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, payload = "GET", None
                sent.popall("Content-Type", None)
            if not same_origin(current, target):
                if payload is not None:
                    raise OutboundError(
                        f"{safe_host(current)} redirected a request with a body to another "
                        "origin; refused (it could carry credentials)",
                        reason="redirect_refused",
                    )
                sent = CIMultiDict(
                    (k, v) for k, v in sent.items() if k.lower() in _CROSS_ORIGIN_SAFE
                )
            current = target
        raise OutboundError(
            f"{safe_host(url)} redirected more than {MAX_REDIRECTS} times",
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
        host = safe_host(url)
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT)
        with _client_errors(host):
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
        host = safe_host(url)
        timeout = aiohttp.ClientTimeout(total=deadline, connect=min(CONNECT_TIMEOUT, deadline))
        with _client_errors(host):
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


@contextlib.contextmanager
def _client_errors(host: str) -> Iterator[None]:
    """aiohttp's failures as this module's errors; messages name the host only."""
    import aiohttp

    try:
        yield
    except OutboundError:
        raise
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, RefusedConnect):
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
