"""The client address a request is attributed to, behind trusted reverse proxies.

Shared by the proxy (limits, logs) and the web pages (login limits), so neither layer depends
on the other for it.

- `parse_networks`: `BINDIFY_TRUSTED_PROXIES` CIDRs → networks (host bits allowed).
- `client_ip`: the peer address, or — only when the peer is a trusted proxy — the forwarded
  client address: `Forwarded: for=` or `X-Forwarded-For`, walked right to left skipping trusted
  hops.
- `ip_bucket`: the address a per-client limit counts: IPv4 as is, IPv6 by its /64 (one host or
  home usually holds a whole /64, so counting single addresses would let it rotate through them).
- `warn_untrusted_forwarding`: one warning per process when forwarding headers arrive from a
  peer that is not a trusted proxy (behind a reverse proxy without `BINDIFY_TRUSTED_PROXIES`,
  every client looks like the proxy and shares its limits).

Invariant: forwarding headers are believed only from a trusted peer; the answer is an IP
address (or the peer string as given when it is not one), never header text otherwise.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Iterable, Sequence

__all__ = [
    "IPNetwork",
    "client_ip",
    "ip_bucket",
    "parse_networks",
    "trusted_networks",
    "warn_untrusted_forwarding",
]

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@functools.lru_cache(maxsize=8)
def trusted_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """`parse_networks` of the configured `BINDIFY_TRUSTED_PROXIES`, parsed once."""
    return parse_networks(cidrs)


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = text.strip().strip('"')
    if value.startswith("["):  # [v6]:port or [v6]
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[IPNetwork]
) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _forwarded_for(values: Iterable[str]) -> list[str]:
    """The `for=` values of RFC 7239 `Forwarded` headers, in order."""
    out: list[str] = []
    for header in values:
        for element in header.split(","):
            for pair in element.split(";"):
                name, sep, value = pair.strip().partition("=")
                if sep and name.strip().lower() == "for":
                    out.append(value.strip())
    return out


def client_ip(
    peer: str,
    forwarded: Sequence[str],
    x_forwarded_for: Sequence[str],
    trusted: Sequence[IPNetwork],
) -> str:
    """The address limits and logs attribute a request to.

    `forwarded` and `x_forwarded_for` are every value of those headers, in order. They are
    believed only when the peer itself is trusted; the rightmost hop that is not a trusted proxy
    is the client. If every hop is trusted, the leftmost one is.
    """
    peer_address = _parse_ip(peer)
    if peer_address is None:
        return peer
    if not trusted or not _trusted(peer_address, trusted):
        return str(peer_address)
    if forwarded:
        hops = _forwarded_for(forwarded)
    else:
        hops = [h for value in x_forwarded_for for h in value.split(",") if h.strip()]
    candidate = peer_address
    for hop in reversed(hops):
        address = _parse_ip(hop)
        if address is None:  # "unknown", an obfuscated identifier, garbage: stop believing
            break
        candidate = address
        if not _trusted(address, trusted):
            break
    return str(candidate)


def ip_bucket(ip: str) -> str:
    """The key a per-client limit counts `ip` under: IPv4 as is, IPv6 by /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return "unknown"  # not an address: every such peer shares one bucket
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    return str(address)


_warned_untrusted_forwarding = False


def warn_untrusted_forwarding(peer: str, trusted: Sequence[IPNetwork]) -> None:
    """Call when a request carried `X-Forwarded-For` or `Forwarded`: unless `peer` is a trusted
    proxy, log one warning per process. Neither the peer nor the header values are logged."""
    global _warned_untrusted_forwarding
    if _warned_untrusted_forwarding:
        return
    address = _parse_ip(peer)
    if address is not None and trusted and _trusted(address, trusted):
        return
    _warned_untrusted_forwarding = True
    log.warning(
        "a request carried X-Forwarded-For or Forwarded from a peer that is not a trusted proxy; "
        "the headers are ignored and every client behind that proxy shares its address for rate "
        "limits. Set BINDIFY_TRUSTED_PROXIES to the reverse proxy's address.",
        extra={"event": "untrusted_forwarding"},
    )
