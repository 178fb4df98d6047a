"""Client authentication at the token and revocation endpoints (RFC 6749 §2.3).

`none` (a `client_id` alone, public clients), `client_secret_basic` (HTTP Basic with the
form-encoded id and secret) and `client_secret_post` (`client_id` and `client_secret` in the
body). Secrets are compared in constant time against their stored hash. A client ID metadata
document's client is public; it is not fetched here (only the authorize step fetches it).
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from bindify_appliance.context import AppContext
from bindify_appliance.errors import StoreError
from bindify_appliance.oauth_server.clients import OAuthClient, client_from_record
from bindify_appliance.oauth_server.documents import cached_name, is_document_url
from bindify_appliance.store import oauth_server as rows

__all__ = ["ClientAuthError", "authenticate_client"]


class ClientAuthError(Exception):
    """`error` is invalid_client or invalid_request; `basic`: answer with a Basic challenge."""

    def __init__(self, error: str, description: str, basic: bool) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.basic = basic


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ClientAuthError("invalid_client", "malformed Basic credentials", True) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise ClientAuthError("invalid_client", "malformed Basic credentials", True)
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


async def authenticate_client(
    ctx: AppContext, authorization: str, form_id: str | None, form_secret: str | None
) -> OAuthClient:
    """The authenticated client, or `ClientAuthError`."""
    basic = _basic(authorization) if authorization else None
    if basic is not None and form_secret:
        raise ClientAuthError("invalid_request", "use one client authentication method", True)
    if basic is not None:
        client_id, secret = basic
        if form_id and form_id != client_id:
            raise ClientAuthError("invalid_request", "client_id does not match", True)
    else:
        client_id, secret = form_id or "", form_secret or ""
    if not client_id:
        raise ClientAuthError("invalid_client", "client authentication is required", False)
    if is_document_url(client_id):
        if secret:
            raise ClientAuthError("invalid_client", "this client has no secret", basic is not None)
        return OAuthClient(
            client_id=client_id,
            client_name=cached_name(ctx, client_id),
            redirect_uris=(),
            auth_method="none",
            self_registered=False,
            metadata_document=True,
        )
    record = None
    if client_id.startswith("bndc_") and len(client_id) <= 64:
        try:
            record = await ctx.store.run(rows.get_client, client_id, ctx.settings.base_url)
        except StoreError:
            record = None
    if record is None:
        raise ClientAuthError("invalid_client", "unknown client", basic is not None)
    client = client_from_record(record)
    if client.confidential:
        if not secret or not client.secret_matches(secret):
            raise ClientAuthError(
                "invalid_client", "client authentication failed", basic is not None
            )
    elif secret:
        raise ClientAuthError("invalid_client", "this client has no secret", basic is not None)
    return client
