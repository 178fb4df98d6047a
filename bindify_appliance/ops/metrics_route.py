"""`GET /metrics`: the Prometheus text, for a bearer of the metrics token or from loopback.

Access (DESIGN §5, §12):
- `BINDIFY_METRICS_TOKEN` set: `Authorization: Bearer {token}` is required from every address,
  loopback included; a missing or wrong token is 401 (`WWW-Authenticate: Bearer`). The
  comparison is constant-time.
- No token: only loopback is served; anything else is 403. "Loopback" means the peer address is
  loopback and no forwarding header (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) is present —
  a local reverse proxy relaying an outside client is not loopback. When the peer is one of
  `BINDIFY_TRUSTED_PROXIES`, the forwarded client address (`clientaddr.client_ip`) is what must
  be loopback instead.

Invariant: a refusal says which rule refused and nothing else; it never echoes the presented
token or a header.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from bindify_appliance.clientaddr import IPNetwork, client_ip, parse_networks
from bindify_appliance.context import AppContext
from bindify_appliance.http.base import HttpHandler

__all__ = ["MetricsHandler", "is_loopback_request"]

_FORWARDING = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
_BEARER_REQUIRED = "A valid metrics token is required: send 'Authorization: Bearer <token>'."
_LOOPBACK_ONLY = (
    "Metrics are served to loopback only; set BINDIFY_METRICS_TOKEN to scrape from elsewhere."
)


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def is_loopback_request(
    peer: str,
    forwarded: Sequence[str],
    x_forwarded_for: Sequence[str],
    forwarding_present: bool,
    trusted: tuple[IPNetwork, ...],
) -> bool:
    """Whether a request counts as coming from this host (see the module docstring)."""
    # Normalised first (IPv4-mapped IPv6 peers become IPv4), with no proxy believed.
    address = client_ip(peer, (), (), ())
    try:
        peer_address = ipaddress.ip_address(address)
    except ValueError:
        return False  # a Unix socket or anything else that is not an address: not loopback
    if any(peer_address.version == n.version and peer_address in n for n in trusted):
        # The peer is a trusted proxy: the client it forwards for is what counts.
        return _loopback(client_ip(address, forwarded, x_forwarded_for, trusted))
    return not forwarding_present and peer_address.is_loopback


class MetricsHandler(HttpHandler):
    """Serves `Metrics.exposition()` of the application's `ctx.metrics`."""

    def initialize(self, ctx: AppContext, route_template: str | None = None) -> None:
        super().initialize(ctx, route_template)
        self._trusted = parse_networks(ctx.settings.trusted_proxies)

    def get(self) -> None:
        if not self._allowed():
            return
        body = self.ctx.metrics.exposition()
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)

    def _allowed(self) -> bool:
        """True to serve; otherwise the refusal has been written."""
        headers = self.request.headers
        token = self.ctx.settings.metrics_token
        if token:
            scheme, _, presented = headers.get("Authorization", "").partition(" ")
            good = hmac.compare_digest(presented.strip().encode(), token.encode())
            if scheme.lower() == "bearer" and good:
                return True
            self.set_header("WWW-Authenticate", 'Bearer realm="metrics"')
            self.write_json({"error": "unauthorized", "message": _BEARER_REQUIRED}, 401)
            return False
        if is_loopback_request(
            self.request.remote_ip or "",
            headers.get_list("Forwarded"),
            headers.get_list("X-Forwarded-For"),
            any(name in headers for name in _FORWARDING),
            self._trusted,
        ):
            return True
        self.write_json({"error": "forbidden", "message": _LOOPBACK_ONLY}, 403)
        return False
