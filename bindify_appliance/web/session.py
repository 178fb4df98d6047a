"""Browser pages: the signed-in user from the session cookie, and HTML error pages.

`PageHandler` is the base of every server-rendered page. In `prepare()` it reads the
`bindify_session` cookie (Tornado-signed with the secret key; `__Host-bindify_session` under an
https base URL without a path, see `web.base`) and looks the session up server-side, so a
signed-out, expired or disabled session is refused even though its signature is still good.
Cookies are `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` when the base URL is HTTPS.

CSRF: every state-changing request to a page must carry the `_xsrf` token (the application
runs with `xsrf_cookies=True`; `web.base.BaseHandler` binds the token to the session);
templates add it with `{% module xsrf_form_html() %}`. A failure renders a 403 page. Signing
in and out issues the token of the new state at once.

Invariant: error pages show only safe text (`HTTPFacingError.public_message` or a fixed phrase);
never input, exception text or a token.
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
from bindify_appliance.clientaddr import client_ip, trusted_networks
from bindify_appliance.errors import ConflictError, HTTPFacingError
from bindify_appliance.store.sessions import Principal
from bindify_appliance.web.base import BaseHandler

__all__ = ["PageHandler", "cookie_options", "request_ip"]

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


def request_ip(handler: tornado.web.RequestHandler, trusted_proxies: tuple[str, ...]) -> str:
    """The client address (forwarding headers believed only from BINDIFY_TRUSTED_PROXIES).

    The same rules as the proxy's limiter (`clientaddr.client_ip`); with no trusted proxy
    the peer address as Tornado reports it.
    """
    peer = handler.request.remote_ip or ""
    if not trusted_proxies:
        return peer
    headers = handler.request.headers
    return client_ip(
        peer,
        headers.get_list("Forwarded"),
        headers.get_list("X-Forwarded-For"),
        trusted_networks(trusted_proxies),
    )


class PageHandler(BaseHandler):
    """Base of the HTML pages: session lookup, sign-in/out helpers, HTML errors."""

    principal: Principal | None = None
    billing_banner: Banner | None = None

    async def prepare(self) -> None:
        self.principal = await resolve_session(self.ctx.store, self.ctx.clock, self.session_token())
        self.current_user = self.principal
        self.billing_banner = await page_banner(self.ctx, self.principal)  # None: billing off

    # -- session cookie (its name and the XSRF binding: BaseHandler) -------------------------

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
            raise HTTPFacingError(
                "This account is not available.", status=403, code="forbidden"
            ) from None
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

    def client_ip(self) -> str:
        return request_ip(self, self.ctx.settings.trusted_proxies)

    def login_redirect(self) -> None:
        target = self.request.uri or "/"
        self.redirect("/login?" + urlencode({"next": target}))

    # -- rendering ---------------------------------------------------------------------------

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.render(template, principal=self.principal, **values)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = _MESSAGES.get(status_code, "The request could not be completed.")
        if isinstance(exc, HTTPFacingError):
            status_code = exc.status
            message = exc.public_message
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(max(1, exc.retry_after)))
        elif (
            status_code == 403
            and isinstance(exc, tornado.web.HTTPError)
            and "xsrf" in (exc.log_message or "").lower()
        ):
            message = _XSRF_MESSAGE
        self.render_error_page(status_code, message)

    def render_error_page(self, status_code: int, message: str) -> None:
        self.set_status(status_code)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.render(
            "error.html",
            status_code=status_code,
            title=_TITLES.get(status_code, "Error"),
            message=message,
        )
