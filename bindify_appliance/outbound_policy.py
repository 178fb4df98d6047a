"""The one outbound address policy (DESIGN §9): which destinations the appliance may connect to.

Every connection the appliance opens follows it: the outbound client (`outbound.py`: OAuth,
discovery, API-key validation, the OIDC identity provider), the proxy's upstream client
(`proxy/h1pool.py`, through `check_name`, `check_resolved` and `socket`), and the admin-entered URLs
checked when saved (`services/validation.py`, through `destination_refusal`). There is no second
copy of these rules; `outbound.py` re-exports the public names.

Three layers, each a different moment:
1. the URL (`destination_refusal`, before a request, every redirect hop, and when an admin
   saves a URL): `http`/`https` only (plain `http` only when allowed), no user-info, and a host
   that ends in a number must be a canonical dotted quad — `2130706433`, `0x7f.1`,
   `017700000001`, `127.1` are refused outright instead of being left to libc's lenient
   parser; IP literals are range-checked;
2. the resolver: a non-canonical numeric name is refused before DNS is asked; every address a
   name resolves to is checked, and if ANY is refused the name is refused (a name that mixes
   public and private answers is an attack, not a fallback);
3. the socket factory: the address actually being connected to is checked once more, so nothing
   (a cached answer, an IP literal, a future client path) reaches a refused range; this is what
   defeats DNS rebinding.
Refused: loopback, RFC 1918 private, link-local, CGNAT shared space, unique-local `fc00::/7`,
site-local, unspecified `0.0.0.0`/`::`, multicast, reserved/documentation ranges, cloud metadata
services (`METADATA_ADDRESSES`), and IPv6 forms embedding a refused IPv4 (IPv4-mapped, 6to4,
NAT64, Teredo). `allow_private=True` (BINDIFY_ALLOW_PRIVATE_UPSTREAMS, operator-only) lifts the
range check except for unspecified and multicast addresses and the metadata services (also
when embedded in IPv6), which are never an MCP server or an identity provider; non-canonical
numeric hosts are refused whatever the setting.

Cost: layers 2 and 3 run when a connection is opened (the resolver on a DNS-cache miss, the
socket factory once per new connection), never per request on a pooled keep-alive connection.

Invariant: refusal reasons and `UnsafeDestinationError` messages name at most the host, never a
path or query (either may carry a credential).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from yarl import URL

if TYPE_CHECKING:  # aiohttp is imported when the first connector is made
    from aiohttp.abc import AbstractResolver, ResolveResult

from bindify_appliance.errors import UnsafeDestinationError

__all__ = [
    "METADATA_ADDRESSES",
    "AddressPolicy",
    "IPAddress",
    "IPNetwork",
    "RefusedConnect",
    "address_refusal",
    "destination_refusal",
    "numeric_host_refusal",
    "safe_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# WHATWG's "ends in a number": the last label is decimal digits or 0x-hex. Such a host is an
# IPv4 address to browsers and libc alike, so it must be spelled canonically or not at all.
_NUMERIC_LABEL: Final = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_SHARED: Final = ipaddress.ip_network("100.64.0.0/10")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL: Final = ipaddress.ip_network("64:ff9b:1::/48")
_UNIQUE_LOCAL: Final = ipaddress.ip_network("fc00::/7")
# Cloud instance metadata services: they hand out the machine's own credentials to whoever asks
# from inside, so no setting makes them a destination.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean, Hetzner
        "169.254.170.2",  # AWS ECS task credentials
        "169.254.170.23",  # AWS EKS pod identity
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
    )
)


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
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(address, ipaddress.IPv6Address):
        # The embedded IPv4 address is where the packet ends up: judge it by the same rules
        # (also with private upstreams allowed: `::ffff:169.254.169.254` is still metadata).
        inner = _embedded_v4(address)
        if inner is not None:
            reason = address_refusal(inner, allow_private=allow_private)
            return f"{reason} (embedded in IPv6)" if reason else None
    if allow_private:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "link-local"
        if address in _NAT64_LOCAL:
            return "private"
        if address.is_site_local:
            return "site-local"
        if address in _UNIQUE_LOCAL:
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


def numeric_host_refusal(host: str) -> str | None:
    """Why `host` is refused as a number: it ends in a number but is not a canonical dotted
    quad (`2130706433`, `0x7f.1`, `127.1`, `127.0.0.01`); None for any other host.

    Such names are IPv4 addresses to libc and browsers alike; refused whatever the private
    setting, since nobody means a server that way.
    """
    host = host.lower().rstrip(".")
    if _host_address(host) is not None:
        return None  # a literal (IPv6, or a canonical dotted quad)
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        return "numeric host in a non-standard form"
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
    allowed = AddressPolicy(allow_private, tuple(allowed_networks))
    return _url_refusal(url, allowed, allow_private if allow_http is None else allow_http)


def _url_refusal(url: str | URL, allowed: AddressPolicy, allow_http: bool) -> str | None:
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
    numeric = numeric_host_refusal(host)
    if numeric is not None:
        return numeric
    literal = _host_address(host)
    if literal is not None:
        reason = allowed.refusal(literal)
        return f"{reason} address" if reason else None
    if not allowed.allow_private and (host == "localhost" or host.endswith(".localhost")):
        return "loopback name"
    return None


# -- the connector seams --------------------------------------------------------------------


class RefusedConnect(OSError):
    """Raised by the socket factory; aiohttp wraps it in ClientConnectorError (`os_error`)."""


def _guarded_resolver(inner: AbstractResolver, allowed: AddressPolicy) -> AbstractResolver:
    """`inner`'s answers, refusing a name if ANY of its addresses is in a refused range.

    A non-canonical numeric name is refused before `inner` is asked (libc would accept it).
    """
    from aiohttp.abc import AbstractResolver

    class GuardedResolver(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            allowed.check_name(host)
            results = await inner.resolve(host, port, family)
            allowed.check_resolved(host, [str(result["host"]) for result in results])
            return results

        async def close(self) -> None:
            await inner.close()

    return GuardedResolver()


@dataclass(frozen=True)
class AddressPolicy:
    """The outbound address policy: `allow_private` is BINDIFY_ALLOW_PRIVATE_UPSTREAMS (or the
    OIDC choice, see `accounts/oidc.py`); `networks` are exact exemptions (tests only)."""

    allow_private: bool
    networks: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        if any(address in net for net in self.networks if net.version == address.version):
            return None
        return address_refusal(address, allow_private=self.allow_private)

    def url_refusal(self, url: str | URL, *, allow_http: bool) -> str | None:
        """Why `url` may not be fetched under this policy (syntax and literals), or None."""
        return _url_refusal(url, self, allow_http)

    def check_name(self, host: str) -> None:
        """Layer 2, before DNS: UnsafeDestinationError for a non-canonical numeric name."""
        numeric = numeric_host_refusal(host)
        if numeric is not None:
            raise UnsafeDestinationError(f"refusing to connect to {_printable(host)}: {numeric}")

    def check_resolved(self, host: str, addresses: Iterable[str]) -> None:
        """Layer 2, after DNS: UnsafeDestinationError if ANY address `host` resolved to is
        refused (or unparseable)."""
        for text in addresses:
            address = _host_address(text)
            reason = "unparseable" if address is None else self.refusal(address)
            if reason is not None:
                raise UnsafeDestinationError(
                    f"refusing to connect to {_printable(host)}: it resolves to a {reason} address"
                )

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's `socket_factory`: called with the exact address of every connect attempt."""
        family, type_, proto, _, sockaddr = addr_info
        address = _host_address(str(sockaddr[0]))
        if address is None or self.refusal(address) is not None:
            raise RefusedConnect("destination refused by the SSRF guard")
        return socket.socket(family=family, type=type_, proto=proto)

    def connector_options(self, resolver: AbstractResolver | None = None) -> dict[str, Any]:
        """The guarded `resolver` and `socket_factory` for an `aiohttp.TCPConnector`.

        `resolver` replaces DNS (tests); by default the threaded libc resolver, guarded.
        """
        import aiohttp

        inner = resolver or aiohttp.ThreadedResolver()
        return {"resolver": _guarded_resolver(inner, self), "socket_factory": self.socket}


def _printable(host: str) -> str:
    return "".join(ch for ch in host[:255] if ch.isprintable())


def safe_host(url: str | URL) -> str:
    """The host of `url` for messages (never its path or query); "the server" if unparseable."""
    try:
        host = (url if isinstance(url, URL) else URL(url)).host
    except (ValueError, TypeError):
        host = None
    if not host:
        return "the server"
    return _printable(host)
