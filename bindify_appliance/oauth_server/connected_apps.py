""" "Connected apps" on the connection page: which clients hold grants, and revoking one.

- `connection_page_extras(page, row, secrets)` — what the connection page adds: the grants
  (`apps`), and, when the page shows a new connection's secrets while an authorization is
  pending (the member chose "connect a new account first"), the way back to the consent page
  (`oauth_return`). A zero-knowledge connection's credentials are then remembered in the pending
  request (sealed, `consent.remember_fresh`) so the member need not paste them.
- `POST /connections/{id}/apps/{grant_id}/revoke` (CSRF-checked) — ends one grant of the
  member's own connection; another member's connection or grant is "not found".

Invariant: the answer's redirect is the connection page or a pending consent page of this
appliance (`/oauth/authorize?request=…`), never an address from the form.
"""

from __future__ import annotations

import re
from typing import Any, Final

from tornado.routing import URLSpec

from bindify_appliance import audit
from bindify_appliance.context import AppContext
from bindify_appliance.errors import CredentialFormatError, HTTPFacingError, NotFound
from bindify_appliance.http.cookies import cookie_name
from bindify_appliance.oauth_server import grants
from bindify_appliance.oauth_server.consent import RETURN_COOKIE, remember_fresh
from bindify_appliance.oauth_server.settings import oauth_server_enabled
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import connections as rows
from bindify_appliance.store.models import Connection
from bindify_appliance.web.pages import UiPage
from bindify_appliance.web.ui import pasted_credentials

__all__ = ["RevokeAppHandler", "connected_app_routes", "connection_page_extras"]

_BACK: Final = re.compile(r"/oauth/authorize\?request=[A-Za-z0-9_-]{43}")


async def connection_page_extras(
    page: UiPage, row: Connection, secrets: dict[str, str] | None
) -> dict[str, Any]:
    """`apps` (the connection's grants) and `oauth_return` (a consent page to go back to)."""
    if not oauth_server_enabled(page.ctx.settings):
        return {"apps": [], "oauth_return": None}
    apps = await grants.list_grants(page.ctx, row.id)
    oauth_return = None
    if secrets and page.principal is not None:
        raw = page.get_signed_cookie(
            cookie_name(RETURN_COOKIE, page.ctx.settings.base_url), max_age_days=1
        )
        request_id = raw.decode("ascii", "replace") if raw else ""
        credentials = ""
        if row.key_storage_mode == "zero_knowledge":
            try:
                opened = pasted_credentials(secrets.get("secret_url", ""))
            except (HTTPFacingError, CredentialFormatError):
                opened = None
            credentials = opened.text if opened is not None else ""
        if request_id:
            pending = await remember_fresh(
                page.ctx, request_id, page.principal.user_id, row.id, credentials
            )
            if pending is not None:
                oauth_return = {
                    "href": f"/oauth/authorize?request={pending.request_id}",
                    "client_name": pending.client_name,
                }
    return {"apps": apps, "oauth_return": oauth_return}


class RevokeAppHandler(UiPage):
    async def post(self, id: str, grant_id: str) -> None:
        who = self.member()
        row = await self.ctx.store.run(rows.get_connection, id[:64], who.user_id)
        if row is None or not oauth_server_enabled(self.ctx.settings):
            raise NotFound("There is no such connection.")
        if not await grants.revoke_grant(self.ctx, row.id, grant_id[:64]):
            raise NotFound("There is no such connected app.")
        # The same entry as the API's DELETE …/grants/{id} (a member ended one grant).
        await audit.by_request(
            self,
            "oauth.revoke",
            audit.Target("connection", row.id),
            detail={"reason": "member", "count": 1, "grant": grant_id[:64]},
        )
        back = self.form("back", 128)
        if _BACK.fullmatch(back):
            self.redirect(back, status=303)
        else:
            self.redirect(f"/connections/{row.id}?done=app-revoked", status=303)


def connected_app_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    if not oauth_server_enabled(ctx.settings):
        return []
    return [
        route("/connections/{id}/apps/{grant_id}/revoke", RevokeAppHandler, ctx, services=services)
    ]
