"""OAuth clients: dynamically registered ones (RFC 7591) and client ID metadata documents.

Invariants: a registered client belongs to the issuer it was registered under (a base-URL
change makes it unknown); client secrets are stored only as hashes; a client ID metadata
document is fetched only when `find_client` is called (after the member signed in), through
the outbound policy, with size and time caps, and cached.
"""

from __future__ import annotations

from dataclasses import dataclass

from bindify_appliance.context import AppContext

__all__ = ["OAuthClient", "find_client", "redirect_uri_allowed"]


@dataclass(frozen=True)
class OAuthClient:
    """A client as the authorize and token endpoints see it."""

    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    auth_method: str  # "none" | "client_secret_basic" | "client_secret_post"
    self_registered: bool  # registered anonymously: shown as "unverified"
    metadata_document: bool  # client_id is an https URL whose document described it


async def find_client(ctx: AppContext, client_id: str) -> OAuthClient | None:
    """The client `client_id` names, or None (unknown, expired, other issuer, bad document)."""
    raise NotImplementedError


def redirect_uri_allowed(client: OAuthClient, redirect_uri: str) -> bool:
    """True when `redirect_uri` is one of the client's, exactly (loopback: any port)."""
    raise NotImplementedError
