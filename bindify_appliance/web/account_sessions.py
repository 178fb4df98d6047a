"""The "Sign-in sessions" section of the account page and its "End" button (DESIGN §15).

- `sessions_section(page)` — the signed-in user's unexpired sessions (created, last seen,
  address, browser), "this session" marked, for `templates/account_password.html`; the same
  store query and public ids as `GET /api/v1/sessions`.
- `POST /account/sessions/{id}` — ends one of them through `api.sessions.end_own_session`
  (the API's step: the row is deleted, so that browser's next request is signed out on every
  instance, and `session.end` is audited). Ending this browser's own session signs it out
  here and now. Another user's id, or one already gone, is "not found" (no oracle).

Invariant: only public ids appear on the page; never a cookie token or its stored hash.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import tornado.web
from tornado.routing import URLSpec

from bindify_appliance.api.sessions import end_own_session, public_session_id, session_json
from bindify_appliance.context import AppContext
from bindify_appliance.errors import NotFound
from bindify_appliance.routes import route
from bindify_appliance.store import sessions as session_store
from bindify_appliance.web.pages import PageHandler

__all__ = ["SessionsSection", "account_session_routes", "sessions_section"]


@dataclass(frozen=True)
class SessionsSection:
    sessions: list[dict[str, Any]]
    ended: bool  # the page follows a successful "End"


async def sessions_section(page: PageHandler) -> SessionsSection | None:
    """The section's content for the signed-in user (None when not signed in by session)."""
    who = page.principal
    if who is None or who.auth != "session":
        return None
    rows = await page.ctx.store.run(
        session_store.list_user_sessions, who.user_id, page.ctx.clock.now()
    )
    ended = page.get_query_argument("done", None) == "session-ended"
    return SessionsSection([session_json(r, who.credential_id) for r in rows], ended)


class EndSessionPage(PageHandler):
    async def post(self, id: str) -> None:
        who = self.principal
        if who is None:
            self.redirect("/login", status=303)
            raise tornado.web.Finish()
        current = who.credential_id if who.auth == "session" else None
        public_id = id[:64]
        this_one = current is not None and hmac.compare_digest(
            public_session_id(current), public_id
        )
        if not await end_own_session(self, who.user_id, public_id, current):
            raise NotFound("There is no such session.")
        if this_one:
            # This browser's own session: its row is gone; clear the cookie as signing out does.
            await self.sign_out()
            self.redirect("/login", status=303)
            return
        self.redirect("/account/password?done=session-ended#sessions", status=303)


def account_session_routes(ctx: AppContext) -> list[URLSpec]:
    return [route("/account/sessions/{id}", EndSessionPage, ctx)]
