"""Sign-in pages: first-run setup, password login, logout, invite acceptance, single sign-on.

Handlers are thin: parse the form, call an `accounts` function, render or redirect. Every POST
carries Tornado's `_xsrf` token (checked before the handler runs). `/setup`, `/invite`, the
login POST, `/login/oidc` and the SSO callback count attempts per client address
(`accounts.login.IpLimiter`) and answer 429 with `Retry-After` over the limit.

Every KV write these anonymous pages make (limiter windows, SSO state, lockout counters) uses
the anonymous budget; when it is full the write raises `KVFullError` and the page answers the
same 429 (DESIGN §9) — no other record is dropped to make room.

`auth_routes(ctx)` returns the routes for the composition root.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn
from urllib.parse import urlencode

import tornado.web
from tornado.routing import URLSpec

from bindify_appliance import audit
from bindify_appliance.accounts import invites, setup
from bindify_appliance.accounts.login import (
    FULL_RETRY_AFTER,
    IpLimiter,
    authenticate_password,
)
from bindify_appliance.accounts.oidc_login import (
    CALLBACK_PATH,
    MAX_NEXT,
    STATE_COOKIE,
    STATE_TTL,
    SingleSignOn,
    safe_next,
)
from bindify_appliance.context import AppContext
from bindify_appliance.errors import (
    ConflictError,
    HTTPFacingError,
    KVFullError,
    NotFoundError,
    OidcError,
    UpstreamFailed,
)
from bindify_appliance.routes import route
from bindify_appliance.store import users as users_store
from bindify_appliance.web.pages import PageHandler, cookie_options

__all__ = [
    "InviteHandler",
    "LoginHandler",
    "LogoutHandler",
    "OidcCallbackHandler",
    "OidcStartHandler",
    "SetupHandler",
    "auth_routes",
]

log = logging.getLogger(__name__)

_LOCKED = "Too many failed sign-in attempts for this account. Try again in {minutes} minute(s)."
_INVALID = "Incorrect email or password."
_DISABLED = "This account is disabled. Ask an administrator."


class AuthPage(PageHandler):
    """A page with the per-IP limiter and (optionally) single sign-on at hand."""

    def initialize(  # type: ignore[override]
        self,
        ctx: AppContext,
        route_template: str | None = None,
        limiter: IpLimiter | None = None,
        sso: SingleSignOn | None = None,
    ) -> None:
        super().initialize(ctx, route_template)
        self.limiter = limiter or IpLimiter(ctx.kv, ctx.clock)
        self.sso = sso

    async def limit(self, scope: str) -> None:
        retry = await self.limiter.hit(scope, self.client_ip())
        if retry is not None:
            self.too_many(retry)

    def too_many(self, retry: int) -> NoReturn:
        """Answer 429 with `Retry-After` and stop the handler."""
        # Answered here, not raised: an error response would drop the Retry-After header.
        self.set_header("Retry-After", str(retry))
        self.render_error_page(
            429, "Too many attempts from your address. Wait a little and try again."
        )
        raise tornado.web.Finish()

    def arg(self, name: str, limit: int = 1024) -> str:
        return (self.get_body_argument(name, "") or "")[:limit]


class LoginHandler(AuthPage):
    async def get(self) -> None:
        next_path = safe_next(self.get_query_argument("next", None))
        if self.principal is not None:
            self.redirect(next_path)
            return
        await self._form(next_path)

    async def _form(
        self, next_path: str, status: int = 200, error: str | None = None, email: str = ""
    ) -> None:
        needs_setup = await self.ctx.store.run(users_store.active_admin_count) == 0
        self.render_page(
            "login.html",
            status=status,
            error=error,
            email=email,
            next_path=next_path,
            sso_enabled=self.sso is not None,
            sso_query=urlencode({"next": next_path}),
            needs_setup=needs_setup,
        )

    async def post(self) -> None:
        metrics = self.ctx.metrics
        try:
            await self.limit("login")
        except tornado.web.Finish:
            metrics.login("password", "rate_limited")
            raise
        email, password = self.arg("email", 254), self.arg("password")
        next_path = safe_next(self.arg("next", MAX_NEXT))
        try:
            outcome = await authenticate_password(
                self.ctx.store, self.ctx.kv, self.ctx.clock, email, password
            )
        except KVFullError:
            metrics.login("password", "rate_limited")
            self.too_many(FULL_RETRY_AFTER)
        # `error` is one of "invalid", "locked", "disabled" (accounts.login.LoginOutcome).
        metrics.login("password", outcome.error or "success")
        if outcome.user_id is None:
            await audit.login_failure(self.ctx, email, self.client_ip(), outcome.error)
            if outcome.error == "locked":
                retry = outcome.retry_after or 60
                self.set_header("Retry-After", str(retry))
                await self._form(next_path, 429, _LOCKED.format(minutes=-(-retry // 60)), email)
            elif outcome.error == "disabled":
                await self._form(next_path, 403, _DISABLED, email)
            else:
                await self._form(next_path, 400, _INVALID, email)
            return
        await self.sign_in(outcome.user_id)
        await audit.signed_in(self, outcome.user_id, "password")
        self.redirect(next_path, status=303)


class LogoutHandler(AuthPage):
    async def post(self) -> None:
        await audit.signed_out(self)
        await self.sign_out()
        self.redirect("/login", status=303)


class SetupHandler(AuthPage):
    """`/setup?token=…`: create an administrator with the printed one-time URL."""

    async def get(self) -> None:
        await self.limit("setup")
        token = self.get_query_argument("token", "") or ""
        if not await setup.setup_token_valid(self.ctx.store, self.ctx.clock, token):
            raise tornado.web.HTTPError(404)
        self.render_page("setup.html", token=token, email="", error=None)

    async def post(self) -> None:
        await self.limit("setup")
        token, email = self.arg("token", 64), self.arg("email", 254)
        try:
            user_id = await setup.complete_setup(
                self.ctx.store, self.ctx.clock, token, email, self.arg("password")
            )
        except NotFoundError:
            raise tornado.web.HTTPError(404) from None
        except (HTTPFacingError, ConflictError) as exc:
            message = exc.public_message if isinstance(exc, HTTPFacingError) else str(exc)
            self.render_page("setup.html", status=400, token=token, email=email, error=message)
            return
        log.info("administrator created through the setup URL", extra={"event": "setup_done"})
        await audit.as_user(self, "setup.complete", user_id)
        await self.sign_in(user_id)
        self.redirect("/", status=303)


class InviteHandler(AuthPage):
    """`/invite?token=…`: an invited user chooses a password and is signed in."""

    async def get(self) -> None:
        await self.limit("invite")
        token = self.get_query_argument("token", "") or ""
        email = await invites.invite_email(self.ctx.store, self.ctx.clock, token)
        if email is None:
            raise tornado.web.HTTPError(404)
        self.render_page("invite.html", token=token, email=email, error=None)

    async def post(self) -> None:
        await self.limit("invite")
        token = self.arg("token", 64)
        try:
            user_id = await invites.accept_invite(
                self.ctx.store, self.ctx.clock, token, self.arg("password")
            )
        except NotFoundError:
            raise tornado.web.HTTPError(404) from None
        except HTTPFacingError as exc:
            email = await invites.invite_email(self.ctx.store, self.ctx.clock, token)
            if email is None:
                raise tornado.web.HTTPError(404) from None
            self.render_page(
                "invite.html", status=400, token=token, email=email, error=exc.public_message
            )
            return
        await self.sign_in(user_id)
        await audit.as_user(self, "invite.accept", user_id)
        self.redirect("/", status=303)


class OidcStartHandler(AuthPage):
    """`/login/oidc`: send the browser to the identity provider."""

    async def get(self) -> None:
        if self.sso is None:
            raise tornado.web.HTTPError(404)
        # Each start stores a sign-in state: counted per address like the callback (one window).
        await self.limit("oidc")
        try:
            url, state = await self.sso.begin(self.get_query_argument("next", None))
        except KVFullError:
            self.too_many(FULL_RETRY_AFTER)
        except OidcError as exc:
            log.warning("single sign-on unavailable: %s", exc, extra={"event": "sso_failed"})
            raise UpstreamFailed("Single sign-on is unavailable right now.") from None
        options: dict[str, Any] = cookie_options(self.ctx.settings.base_url)
        options["path"] = "/login/oidc"
        self.set_signed_cookie(STATE_COOKIE, state, expires_days=None, max_age=STATE_TTL, **options)
        self.redirect(url)


class OidcCallbackHandler(AuthPage):
    """`/login/oidc/callback`: verify the provider's answer and sign in."""

    async def get(self) -> None:
        if self.sso is None:
            raise tornado.web.HTTPError(404)
        await self.limit("oidc")
        raw = self.get_signed_cookie(STATE_COOKIE, max_age_days=1)
        self.clear_cookie(STATE_COOKIE, path="/login/oidc")
        metrics = self.ctx.metrics
        if self.get_query_argument("error", None) is not None:
            metrics.login("oidc", "cancelled")
            await self._failed("Sign-in was cancelled or refused at the identity provider.")
            return
        try:
            outcome = await self.sso.finish(
                raw.decode("ascii", "replace") if raw else None,
                (self.get_query_argument("state", "") or "")[:128],
                (self.get_query_argument("code", "") or "")[:4096],
            )
        except OidcError as exc:
            metrics.login("oidc", "failed")
            log.warning("single sign-on failed: %s", exc, extra={"event": "sso_failed"})
            await self._failed("Single sign-on failed. Try again, or sign in with a password.")
            return
        except HTTPFacingError as exc:
            metrics.login("oidc", "refused")
            await self._failed(exc.public_message, exc.status)
            return
        metrics.login("oidc", "success")
        await self.sign_in(outcome.user_id)
        await audit.signed_in(self, outcome.user_id, "sso")
        self.redirect(outcome.next, status=303)

    async def _failed(self, message: str, status: int = 400) -> None:
        await audit.login_failure(self.ctx, "", self.client_ip(), "sso", method="sso")
        needs_setup = await self.ctx.store.run(users_store.active_admin_count) == 0
        self.render_page(
            "login.html",
            status=status,
            error=message,
            email="",
            next_path="/",
            sso_enabled=True,
            sso_query="next=%2F",
            needs_setup=needs_setup,
        )


def auth_routes(ctx: AppContext) -> list[URLSpec]:
    """The sign-in pages; SSO routes answer 404 unless an issuer is configured."""
    limiter = IpLimiter(ctx.kv, ctx.clock)
    sso = (
        SingleSignOn(ctx.settings, ctx.store, ctx.kv, ctx.clock)
        if SingleSignOn.configured(ctx.settings)
        else None
    )
    extra = {"limiter": limiter, "sso": sso}
    return [
        route("/login", LoginHandler, ctx, **extra),
        route("/logout", LogoutHandler, ctx, **extra),
        route("/setup", SetupHandler, ctx, **extra),
        route("/invite", InviteHandler, ctx, **extra),
        route("/login/oidc", OidcStartHandler, ctx, **extra),
        route(CALLBACK_PATH, OidcCallbackHandler, ctx, **extra),
    ]
