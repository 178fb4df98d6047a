"""Shared pieces of the member and admin pages: the signed-in base class and the claim redirect.

`UiPage` is a `PageHandler` with the connect services at hand and two guards: `member()`
(sign-in required, else a redirect to `/login?next=…`) and `admin()` (403 page for members).
Every form posts to a page handler and answers with a redirect (303) or a re-rendered page, so
the UI works with JavaScript disabled; `static/app.js` only adds copy buttons and removes the
one-time claim from the address bar.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from bindify_appliance.connections.create import CreatedConnection
from bindify_appliance.connections.secrets import parse_presented_credentials
from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.services.claims import create_claim
from bindify_appliance.services.connect import result_json
from bindify_appliance.store.sessions import Principal
from bindify_appliance.web.session import PageHandler
from bindify_appliance.web.with_services import WithConnectServices

__all__ = ["UiPage", "pasted_credentials", "redirect_to_claim"]


class UiPage(WithConnectServices, PageHandler):
    """A signed-in page with the connect services (registry, outbound client) at hand."""

    def member(self) -> Principal:
        """The signed-in user; otherwise redirects to sign-in and stops the request."""
        if self.principal is None:
            if self.request.method in ("GET", "HEAD"):
                self.login_redirect()
            else:
                self.redirect("/login", status=303)
            raise tornado.web.Finish()
        return self.principal

    def admin(self) -> Principal:
        who = self.member()
        if who.role != "admin":
            raise HTTPFacingError("This page is for administrators.", status=403, code="forbidden")
        return who

    def form(self, name: str, limit: int = 4096) -> str:
        return (self.get_body_argument(name, "") or "")[:limit].strip()

    def nav(self) -> str:
        return self.route_template or ""

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        values.setdefault("flash", None)
        super().render_page(template, status=status, **values)


def pasted_credentials(presented: str) -> Credentials | None:
    """A pasted secret URL or `bnd_` key as credentials (None when empty); 400 when neither."""
    if not presented:
        return None
    try:
        if presented.startswith("bnd_"):
            return parse_presented_credentials(api_key=presented)
        return parse_presented_credentials(credentials=presented.rstrip("/").rsplit("/", 1)[-1])
    except HTTPFacingError:
        raise HTTPFacingError(
            "That is not this connection's secret URL or API key.",
            status=400,
            code="invalid_request",
        ) from None


async def redirect_to_claim(page: UiPage, user_id: str, created: CreatedConnection) -> None:
    """Hand the new secrets to `/connections/{id}?claim=…` (shown once, like the OAuth path)."""
    token = await create_claim(page.ctx.kv, user_id=user_id, result=result_json(created))
    page.set_header("Cache-Control", "no-store")
    page.redirect(f"/connections/{created.connection.id}?claim={token}", status=303)
