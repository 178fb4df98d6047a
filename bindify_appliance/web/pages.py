"""Browser pages: the page base classes, the signed-in user, HTML errors.

`PageHandler` is the base of every server-rendered page. In `prepare()` it reads the
`bindify_session` cookie (Tornado-signed with the secret key; `__Host-bindify_session` under an
https base URL without a path, see `http.cookies`) and looks the session up server-side, so a
signed-out, expired or disabled session is refused even though its signature is still good.
Cookies are `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` when the base URL is HTTPS.

CSRF: every state-changing request to a page must carry the `_xsrf` token (the application
runs with `xsrf_cookies=True`; `http.cookies.SessionCookies` binds the token to the session);
templates add it with `{% module xsrf_form_html() %}`. A failure renders a 403 page. Signing
in and out issues the token of the new state at once. Every page carries the strict
Content-Security-Policy and anti-framing headers of `http.base`.

`UiPage` is a `PageHandler` with the connect services at hand and two guards: `member()`
(sign-in required, else a redirect to `/login?next=…`) and `admin()` (403 page for members).
Every form posts to a page handler and answers with a redirect (303) or a re-rendered page, so
the UI works with JavaScript disabled.

Invariant: error pages show only safe text (the error's public message or a fixed phrase);
never input, exception text or a token. Store refusals render as their status (404/409).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import tornado.web

from bindify_appliance.accounts.sessions import (
    SESSION_LIFETIME,
    end_session,
    resolve_session,
    start_session,
)
from bindify_appliance.billing.banners import Banner, page_banner
from bindify_appliance.errors import ConflictError, ErrorParts, Forbidden
from bindify_appliance.http.cookies import SessionCookies
from bindify_appliance.http.services import WithConnectServices
from bindify_appliance.store.sessions import Principal

__all__ = ["PageHandler", "UiPage", "cookie_options", "render_error_page"]

_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    429: "Too many attempts",
    500: "Something went wrong",
    502: "Upstream problem",
    503: "Unavailable",
}
_MESSAGES = {
    403: "This page is not available to you.",
    404: "There is nothing here. A one-time link may have been used or may have expired.",
    405: "That is not something this page does.",
    429: "Too many attempts. Wait a little and try again.",
    500: "The server could not complete the request.",
}
_XSRF_MESSAGE = "The form expired or was sent from another site. Reload the page and try again."


def cookie_options(base_url: str) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "Lax",
        "secure": base_url.startswith("https://"),
        "path": "/",
    }


def _clear_options(base_url: str) -> dict[str, Any]:
    # A `__Host-` cookie is only replaced (here: expired) by a Set-Cookie that is Secure too.
    return {"path": "/", "secure": base_url.startswith("https://")}


def render_error_page(handler: tornado.web.RequestHandler, status_code: int, message: str) -> None:
    handler.set_status(status_code)
    handler.set_header("Content-Type", "text/html; charset=UTF-8")
    handler.set_header("Cache-Control", "no-store")
    handler.render(
        "error.html",
        status_code=status_code,
        title=_TITLES.get(status_code, "Error"),
        message=message,
    )


class PageHandler(SessionCookies):
    """Base of the HTML pages: session lookup, sign-in/out helpers, HTML errors."""

    principal: Principal | None = None
    billing_banner: Banner | None = None

    async def prepare(self) -> None:
        self.principal = await resolve_session(self.ctx.store, self.ctx.clock, self.session_token())
        self.current_user = self.principal
        self.billing_banner = await page_banner(self.ctx, self.principal)  # None: billing off

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        # Billing (DESIGN §11): the nav link and the banner; both absent when billing is off.
        namespace["billing_on"] = bool(self.ctx.settings.stripe_webhook_secret)
        namespace["billing_banner"] = self.billing_banner
        return namespace

    async def sign_in(self, user_id: str) -> None:
        """Start a fresh session (new id: fixation-safe) and set its cookie."""
        try:
            token = await start_session(
                self.ctx.store,
                self.ctx.clock,
                user_id,
                ip=self.client_ip(),
                user_agent=self.request.headers.get("User-Agent"),
                replaces=self.session_token(),
            )
        except ConflictError:  # disabled or deleted a moment ago
            raise Forbidden("This account is not available.") from None
        self.set_signed_cookie(
            self.session_cookie_name,
            token,
            expires_days=SESSION_LIFETIME.days,
            **cookie_options(self.ctx.settings.base_url),
        )
        self.bind_xsrf(token)  # the token of the old (or no) session stops working here

    async def sign_out(self) -> None:
        await end_session(self.ctx.store, self.session_token())
        self.clear_cookie(self.session_cookie_name, **_clear_options(self.ctx.settings.base_url))
        self.bind_xsrf(None)
        self.principal = None

    def login_redirect(self) -> None:
        target = self.request.uri or "/"
        self.redirect("/login?" + urlencode({"next": target}))

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.render(template, principal=self.principal, **values)

    def render_error(
        self, status_code: int, parts: ErrorParts | None, exc: BaseException | None
    ) -> None:
        if parts is not None:
            self.render_error_page(parts.status, parts.message)
            return
        message = _MESSAGES.get(status_code, "The request could not be completed.")
        if (
            status_code == 403
            and isinstance(exc, tornado.web.HTTPError)
            and "xsrf" in (exc.log_message or "").lower()
        ):
            message = _XSRF_MESSAGE
        self.render_error_page(status_code, message)

    def render_error_page(self, status_code: int, message: str) -> None:
        render_error_page(self, status_code, message)


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
            raise Forbidden("This page is for administrators.")
        return who

    def form(self, name: str, limit: int = 4096) -> str:
        return (self.get_body_argument(name, "") or "")[:limit].strip()

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        values.setdefault("flash", None)
        super().render_page(template, status=status, **values)
