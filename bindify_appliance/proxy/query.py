"""The client's query string on an MCP URL, forwarded to the upstream (DESIGN §14, a §6 relay rule).

Rules, applied to the upstream URL the relay built (the service URL with its own query, plus the
parameters the appliance injects, e.g. an API key, or the message URL of a legacy stream):
- The client's parameters follow that URL's query, in the client's order and exactly as the
  client encoded them (no decoding and re-encoding on the way).
- A client parameter whose name is already in that URL's query is dropped, every occurrence, so
  the client can neither replace nor shadow the service's parameters or its credential, whether
  the upstream reads the first or the last value. Names are compared after percent-decoding
  (with `+` as a space, and without), case-folded (some servers fold case), and each `;`-separated
  part of a parameter counts (some servers also split on `;`).
- A parameter the appliance itself reads on the route is never forwarded: the legacy `session`
  on the messages route (it names the appliance's session, not the upstream's).
- Empty parameters (`&&`) are dropped; no client query leaves the URL unchanged.

Invariant: nothing here logs or raises with the URL or the query (either may carry a secret).
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import unquote, unquote_plus

__all__ = ["client_url", "with_client_query"]

# The appliance's own query parameters, by the last segment of the route template.
_APPLIANCE_PARAMS = {"messages": frozenset({"session"})}


class _Request(Protocol):
    query: str


class _Handler(Protocol):
    """What `client_url` reads from a proxy handler (an exchange of `proxy/base.py`)."""

    route_template: str | None

    @property
    def request(self) -> _Request: ...


def client_url(upstream_url: str, handler: _Handler) -> str:
    """`upstream_url` with the handler's client query forwarded under the rules above."""
    template = handler.route_template or ""
    own = _APPLIANCE_PARAMS.get(template.rsplit("/", 1)[-1], frozenset())
    return with_client_query(upstream_url, handler.request.query, own)


def with_client_query(url: str, client_query: str, own: frozenset[str] = frozenset()) -> str:
    """`url` with the parameters of `client_query` (raw, without `?`) it may carry appended.

    `own`: names the appliance reads itself on this route, never forwarded.
    """
    if not client_query:
        return url
    base, hash_sign, fragment = url.partition("#")
    _, question, query = base.partition("?")
    taken = set().union(*(_keys(piece) for piece in query.split("&") if piece))
    taken.update(name.casefold() for name in own)
    kept = [piece for piece in client_query.split("&") if piece and not (_keys(piece) & taken)]
    if not kept:
        return url
    joiner = "" if base.endswith(("?", "&")) else ("&" if question else "?")
    return base + joiner + "&".join(kept) + hash_sign + fragment


def _keys(piece: str) -> set[str]:
    """Every form of the name(s) in one `name=value` piece an upstream might read."""
    keys: set[str] = set()
    for part in piece.split(";"):
        name = part.split("=", 1)[0]
        keys.add(unquote(name).casefold())
        keys.add(unquote_plus(name).casefold())
    return keys
