"""Client ID metadata documents: an https `client_id` that is the URL of the client's metadata.

Fetched only on demand (after the member signed in), through the outbound policy (the SSRF
guard of every other outbound call), at most `MAX_DOCUMENT_BYTES` within `FETCH_TIMEOUT`
seconds, and cached per instance (`CACHE_TTL`; failures for `FAILURE_TTL`). A document must be
a JSON object whose `client_id` is exactly its URL, with valid `redirect_uris`, and (as it can
hold no secret) `token_endpoint_auth_method` absent or `none`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from bindify_appliance.config import Settings
from bindify_appliance.context import AppContext
from bindify_appliance.errors import OutboundError
from bindify_appliance.oauth_server.redirects import MAX_REDIRECT_URIS, redirect_uri_problem
from bindify_appliance.outbound import OutboundClient

__all__ = [
    "ClientDocument",
    "cached_name",
    "fetch_document",
    "is_document_url",
    "set_outbound",
]

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES: Final = 16 * 1024
FETCH_TIMEOUT: Final = 5.0
CACHE_TTL: Final = 600.0
FAILURE_TTL: Final = 60.0
_CACHE_SIZE: Final = 1000


@dataclass(frozen=True)
class ClientDocument:
    client_name: str
    redirect_uris: tuple[str, ...]


class _State:
    """Per-context: the outbound client (made on first use) and the cache."""

    def __init__(self) -> None:
        self.client: OutboundClient | None = None
        self.cache: dict[str, tuple[float, ClientDocument | None]] = {}


_ATTR: Final = "_oauth_client_documents"


def _state(ctx: AppContext) -> _State:
    state = getattr(ctx, _ATTR, None)
    if not isinstance(state, _State):
        state = _State()
        setattr(ctx, _ATTR, state)
    return state


def set_outbound(ctx: AppContext, client: OutboundClient) -> None:
    """Use `client` for this context's fetches (the composition root's, or a test's)."""
    _state(ctx).client = client


def is_document_url(client_id: str) -> bool:
    """An https URL with a path and no fragment or user information."""
    if not client_id.startswith("https://"):
        return False
    try:
        parts = urlsplit(client_id)
    except ValueError:
        return False
    return bool(
        parts.hostname
        and parts.path not in ("", "/")
        and not parts.fragment
        and parts.username is None
        and parts.password is None
    )


def _parse(settings: Settings, url: str, value: Any) -> ClientDocument | None:
    if not isinstance(value, dict) or value.get("client_id") != url:
        return None
    if value.get("token_endpoint_auth_method", "none") != "none":
        return None
    uris = value.get("redirect_uris")
    if not isinstance(uris, list) or not uris or len(uris) > MAX_REDIRECT_URIS:
        return None
    if any(redirect_uri_problem(settings, uri) for uri in uris):
        return None
    name = value.get("client_name")
    if not isinstance(name, str) or not name.strip():
        name = urlsplit(url).hostname or url
    return ClientDocument(client_name=name.strip()[:100], redirect_uris=tuple(uris))


async def fetch_document(ctx: AppContext, url: str) -> ClientDocument | None:
    """The validated document at `url`, from the cache or fetched; None when unusable."""
    state = _state(ctx)
    cache = state.cache
    now = ctx.clock.monotonic()
    hit = cache.get(url)
    if hit is not None and hit[0] > now:
        return hit[1]
    client = state.client
    if client is None:
        client = OutboundClient(allow_private=ctx.settings.allow_private_upstreams)
        state.client = client
    document: ClientDocument | None = None
    try:
        response = await client.get(
            url,
            headers={"Accept": "application/json"},
            max_body=MAX_DOCUMENT_BYTES,
            timeout=FETCH_TIMEOUT,
        )
        if response.status == 200:
            document = _parse(ctx.settings, url, response.json())
    except (OutboundError, ValueError):
        log.info("client metadata document unavailable", extra={"event": "oauth_client_doc"})
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[url] = (now + (CACHE_TTL if document is not None else FAILURE_TTL), document)
    return document


def cached_name(ctx: AppContext, url: str) -> str:
    """The client name of a cached document (never fetches); else the URL's host."""
    hit = _state(ctx).cache.get(url)
    if hit is not None and hit[1] is not None:
        return hit[1].client_name
    return urlsplit(url).hostname or url
