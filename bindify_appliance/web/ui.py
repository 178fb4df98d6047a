"""Shared steps of the member pages: reading a pasted credential and the claim redirect.

`UiPage` (the signed-in page base) lives in `web.pages`; it stays importable from here.
`static/app.js` only adds copy buttons and removes the one-time claim from the address bar.
"""

from __future__ import annotations

from bindify_appliance.connections.create import CreatedConnection
from bindify_appliance.connections.secrets import parse_presented_credentials
from bindify_appliance.connections.shapes import result_json
from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.errors import HTTPFacingError, InvalidRequest
from bindify_appliance.services.claims import create_claim
from bindify_appliance.web.pages import UiPage

__all__ = ["UiPage", "pasted_credentials", "redirect_to_claim"]


def pasted_credentials(presented: str) -> Credentials | None:
    """A pasted secret URL or `bnd_` key as credentials (None when empty); 400 when neither."""
    if not presented:
        return None
    try:
        if presented.startswith("bnd_"):
            return parse_presented_credentials(api_key=presented)
        return parse_presented_credentials(credentials=presented.rstrip("/").rsplit("/", 1)[-1])
    except HTTPFacingError:
        raise InvalidRequest("That is not this connection's secret URL or API key.") from None


async def redirect_to_claim(page: UiPage, user_id: str, created: CreatedConnection) -> None:
    """Hand the new secrets to `/connections/{id}?claim=…` (shown once, like the OAuth path)."""
    token = await create_claim(page.ctx.kv, user_id=user_id, result=result_json(created))
    page.set_header("Cache-Control", "no-store")
    page.redirect(f"/connections/{created.connection.id}?claim={token}", status=303)
