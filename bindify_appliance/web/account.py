"""The signed-in user's own account page: change the password.

- `GET /account/password` — the form (current password, new password).
- `POST /account/password` — checks the current password (scrypt, off the event loop), applies
  the password policy, stores the new hash and ends EVERY session of the user (the store does
  it in the same transaction as the change), then signs this browser in again with a fresh
  session: other browsers are signed out, this one carries on.

Invariant: no password, hash or session token ever reaches a log line, a URL or the page.
Wrong current passwords count against the per-address limiter (scope `login`), so the page is
no faster way to guess a password than the sign-in form.
"""

from __future__ import annotations

import tornado.web
from tornado.routing import URLSpec

from bindify_appliance.accounts.login import IpLimiter
from bindify_appliance.accounts.passwords import (
    check_password_policy,
    hash_password_async,
    verify_password_async,
)
from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError, NotFoundError
from bindify_appliance.routes import route
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store import users as users_store
from bindify_appliance.web.session import PageHandler

__all__ = ["PasswordPage", "account_routes"]

_WRONG = "The current password is not correct."


class PasswordPage(PageHandler):
    """`/account/password`: the signed-in user changes their own password."""

    def initialize(
        self,
        ctx: AppContext,
        route_template: str | None = None,
        limiter: IpLimiter | None = None,
    ) -> None:
        super().initialize(ctx, route_template)
        self.limiter = limiter or IpLimiter(ctx.kv, ctx.clock)

    def _signed_in(self) -> str:
        if self.principal is None:
            if self.request.method in ("GET", "HEAD"):
                self.login_redirect()
            else:
                self.redirect("/login", status=303)
            raise tornado.web.Finish()
        return self.principal.email

    def _show(self, status: int = 200, error: str | None = None) -> None:
        done = status == 200 and self.get_query_argument("done", None) == "changed"
        self.render_page("account_password.html", status=status, error=error, done=done)

    def get(self) -> None:
        self._signed_in()
        self._show()

    async def post(self) -> None:
        email = self._signed_in()
        current = (self.get_body_argument("current_password", "") or "")[:1024]
        new = (self.get_body_argument("new_password", "") or "")[:2048]
        state = await self.ctx.store.run(accounts_store.login_state, email)
        if state is None or not await verify_password_async(current, state.password_hash):
            retry = await self.limiter.hit("login", self.client_ip())
            if retry is not None:
                self.set_header("Retry-After", str(retry))
                self.render_error_page(
                    429, "Too many attempts from your address. Wait a little and try again."
                )
                return
            self._show(400, _WRONG)
            return
        try:
            check_password_policy(new)
        except HTTPFacingError as exc:
            self._show(400, f"The new {exc.public_message}.")
            return
        password_hash = await hash_password_async(new)
        try:
            user = await self.ctx.store.run(
                users_store.update_password, email, password_hash, self.ctx.clock.now()
            )
        except NotFoundError:  # deleted a moment ago
            raise tornado.web.HTTPError(404) from None
        # update_password ended every session, this one included: start a fresh one here.
        await self.sign_in(str(user.id))
        self.redirect("/account/password?done=changed", status=303)


def account_routes(ctx: AppContext) -> list[URLSpec]:
    limiter = IpLimiter(ctx.kv, ctx.clock)
    return [route("/account/password", PasswordPage, ctx, limiter=limiter)]
