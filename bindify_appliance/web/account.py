"""The signed-in user's own account page: change the password.

- `GET /account/password` — the form (current password, new password).
- `POST /account/password` — checks the current password (scrypt, off the event loop), applies
  the password policy, stores the new hash and ends EVERY session of the user (the store does
  it in the same transaction as the change), then signs this browser in again with a fresh
  session: other browsers are signed out, this one carries on.

A user without a local password (provisioned by single sign-on) has no current password to
give: the page says the account signs in through the identity provider, and a POST is refused
with 409 and changes nothing (it does not count against the limiter either: there is no
password to guess). Setting a first password is not offered here.

The page's "Sign-in sessions" section (list, end one) is `web/account_sessions.py`.

Invariant: no password, hash or session token ever reaches a log line, a URL or the page.
The page is no faster way to guess a password than the sign-in form: every attempt counts
against the per-address limiter (scope `login`) BEFORE the password is checked, and the current
password goes through the sign-in check itself (`authenticate_password`), so wrong ones count
toward the account lockout and a locked account is refused without checking the password.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import tornado.web
from tornado.routing import URLSpec

from bindify_appliance import audit
from bindify_appliance.accounts.login import IpLimiter, authenticate_password
from bindify_appliance.accounts.passwords import check_password_policy, hash_password_async
from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError, NotFoundError
from bindify_appliance.kv.base import MEMBER
from bindify_appliance.routes import route
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store import users as users_store
from bindify_appliance.store.accounts import SignInMethods
from bindify_appliance.store.sessions import Principal
from bindify_appliance.web.account_sessions import (
    SessionsSection,
    account_session_routes,
    sessions_section,
)
from bindify_appliance.web.pages import PageHandler

__all__ = ["PasswordPage", "account_routes"]

_WRONG = "The current password is not correct."
_LOCKED = (
    "Too many failed attempts for this account. Nothing was changed. "
    "Try again in {minutes} minute(s)."
)
_SSO_ONLY = (
    "This account has no password to change: it signs in with single sign-on. Nothing was changed."
)


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

    def _signed_in(self) -> Principal:
        if self.principal is None:
            if self.request.method in ("GET", "HEAD"):
                self.login_redirect()
            else:
                self.redirect("/login", status=303)
            raise tornado.web.Finish()
        return self.principal

    def _show(
        self, status: int = 200, error: str | None = None, sessions: SessionsSection | None = None
    ) -> None:
        done = status == 200 and self.get_query_argument("done", None) == "changed"
        self.render_page(
            "account_password.html",
            status=status,
            error=error,
            done=done,
            sso_provider=None,
            sessions=sessions,
        )

    def _show_sso_only(
        self, methods: SignInMethods, status: int = 200, sessions: SessionsSection | None = None
    ) -> None:
        """The page of an account without a local password: nothing to change here."""
        self.render_page(
            "account_password.html",
            status=status,
            error=_SSO_ONLY if status != 200 else None,
            done=False,
            sso_provider=self._provider_name(methods),
            sessions=sessions,
        )

    def _provider_name(self, methods: SignInMethods) -> str:
        """The identity provider's host: the configured issuer's, else the user's identity's."""
        issuer = self.ctx.settings.oidc_issuer or (
            methods.sso_issuers[0] if methods.sso_issuers else ""
        )
        return urlsplit(issuer).hostname or ""

    async def _methods(self, principal: Principal) -> SignInMethods:
        methods = await self.ctx.store.run(accounts_store.sign_in_methods, principal.user_id)
        if methods is None:  # deleted a moment ago
            raise tornado.web.HTTPError(404)
        return methods

    async def get(self) -> None:
        methods = await self._methods(self._signed_in())
        sessions = await sessions_section(self)
        if not methods.has_password:
            self._show_sso_only(methods, sessions=sessions)
            return
        self._show(sessions=sessions)

    async def post(self) -> None:
        principal = self._signed_in()
        email = principal.email
        current = (self.get_body_argument("current_password", "") or "")[:1024]
        new = (self.get_body_argument("new_password", "") or "")[:2048]
        state = await self.ctx.store.run(accounts_store.login_state, email)
        if state is not None and state.password_hash is None:
            # No password to check against: refuse plainly rather than "not correct".
            self._show_sso_only(await self._methods(principal), status=409)
            return
        # Counted before the password is checked: past the limit a right guess is refused too.
        # Signed in: a new window goes to the member budget, which no flood fills.
        retry = await self.limiter.hit("login", self.client_ip(), budget=MEMBER)
        if retry is not None:
            self.set_header("Retry-After", str(retry))
            self.render_error_page(
                429, "Too many attempts from your address. Wait a little and try again."
            )
            return
        # The sign-in lockout, shared: failures here count toward it, and while the account is
        # locked the password is not even checked (authenticate_password does all of that).
        outcome = await authenticate_password(
            self.ctx.store, self.ctx.kv, self.ctx.clock, email, current
        )
        if outcome.error == "locked":
            retry_after = outcome.retry_after or 60
            self.set_header("Retry-After", str(retry_after))
            self._show(429, _LOCKED.format(minutes=-(-retry_after // 60)))
            return
        if outcome.user_id != principal.user_id:
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
        await audit.by_request(self, "password.change", audit.Target("user", str(user.id)))
        # update_password ended every session, this one included: start a fresh one here.
        await self.sign_in(str(user.id))
        self.redirect("/account/password?done=changed", status=303)


def account_routes(ctx: AppContext) -> list[URLSpec]:
    limiter = IpLimiter(ctx.kv, ctx.clock)
    return [
        route("/account/password", PasswordPage, ctx, limiter=limiter),
        *account_session_routes(ctx),
    ]
