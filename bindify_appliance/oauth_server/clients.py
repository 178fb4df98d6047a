"""OAuth clients: dynamically registered ones (RFC 7591) and client ID metadata documents.

Invariants: a registered client belongs to the issuer it was registered under (a base-URL
change makes it unknown); client secrets are stored only as hashes and compared in constant
time; a client ID metadata document is fetched only when `find_client` is called (after the
member signed in), through the outbound policy, with size and time caps, and cached.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

from bindify_appliance.context import AppContext
from bindify_appliance.errors import StoreError
from bindify_appliance.oauth_server.documents import fetch_document, is_document_url
from bindify_appliance.oauth_server.redirects import redirect_uris_match
from bindify_appliance.oauth_server.tokens import token_hash
from bindify_appliance.store import oauth_server as rows
from bindify_appliance.store.models import OAuthClientRecord

__all__ = ["OAuthClient", "client_from_record", "find_client", "redirect_uri_allowed"]


@dataclass(frozen=True)
class OAuthClient:
    """A client as the authorize and token endpoints see it."""

    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    auth_method: str  # "none" | "client_secret_basic" | "client_secret_post"
    self_registered: bool  # registered anonymously: shown as "unverified"
    metadata_document: bool  # client_id is an https URL whose document described it
    secret_hash: str | None = None  # confidential clients only; never shown

    @property
    def confidential(self) -> bool:
        return self.secret_hash is not None

    def secret_matches(self, secret: str) -> bool:
        """Constant-time check of a presented client secret."""
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(token_hash(secret).encode(), self.secret_hash.encode())


def client_from_record(record: OAuthClientRecord) -> OAuthClient:
    try:
        uris = tuple(str(u) for u in json.loads(record.redirect_uris))
    except ValueError:
        uris = ()
    return OAuthClient(
        client_id=record.id,
        client_name=record.client_name,
        redirect_uris=uris,
        auth_method=record.auth_method,
        self_registered=True,
        metadata_document=False,
        secret_hash=record.secret_hash,
    )


async def find_client(ctx: AppContext, client_id: str) -> OAuthClient | None:
    """The client `client_id` names, or None (unknown, expired, other issuer, bad document).

    An https-URL `client_id` is fetched (or taken from the cache); anything else is looked up
    among this issuer's registrations.
    """
    if not isinstance(client_id, str) or not client_id or len(client_id) > 2000:
        return None
    if is_document_url(client_id):
        document = await fetch_document(ctx, client_id)
        if document is None:
            return None
        return OAuthClient(
            client_id=client_id,
            client_name=document.client_name,
            redirect_uris=document.redirect_uris,
            auth_method="none",
            self_registered=False,
            metadata_document=True,
        )
    if not client_id.startswith("bndc_"):
        return None
    try:
        record = await ctx.store.run(rows.get_client, client_id, ctx.settings.base_url)
    except StoreError:
        return None
    return client_from_record(record) if record is not None else None


def redirect_uri_allowed(client: OAuthClient, redirect_uri: str) -> bool:
    """True when `redirect_uri` is one of the client's, exactly (loopback: any port)."""
    if not isinstance(redirect_uri, str):
        return False
    return any(redirect_uris_match(uri, redirect_uri) for uri in client.redirect_uris)
