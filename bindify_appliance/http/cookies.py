"""The browser session's cookie and its CSRF binding, for the routes a session authenticates
(the pages, and the admin API when no bearer token is sent).

Cookies and CSRF (security review):
- With an https base URL without a path, the session and XSRF cookies are named with the
  `__Host-` prefix (`__Host-bindify_session`, `__Host-_xsrf`): browsers then accept them only
  Secure, with Path=/ and no Domain, so a sibling subdomain can neither set nor overwrite
  them. With http, or a base URL with a path (Path=/ would reach other apps on the host), the
  plain names are kept.
- The XSRF token is bound to the session: for a request carrying a session cookie the expected
  token is HMAC(secret key, session token), so a token of another session, or one planted in
  the browser before it signed in, is refused (403). Without a session (the sign-in, setup and
  invite forms) it is a random value kept in the XSRF cookie (double submit). Tokens are sent
  masked with a fresh random mask on every page (BREACH); the XSRF cookie carries the current
  token so API clients can copy it into `X-XSRFToken`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final
from urllib.parse import urlsplit

import tornado.web

from bindify_appliance.accounts.sessions import SESSION_COOKIE, SESSION_LIFETIME
from bindify_appliance.http.base import HttpHandler

__all__ = ["XSRF_COOKIE", "SessionCookies", "cookie_name", "host_only_cookies"]

XSRF_COOKIE: Final = "_xsrf"
_XSRF_CONTEXT: Final = b"bindify-xsrf-v1\x00"
_XSRF_VERSION: Final = "b1"
_XSRF_BYTES: Final = 16


def host_only_cookies(base_url: str) -> bool:
    """Whether cookies get the `__Host-` prefix: https, and the appliance owns the whole host."""
    parts = urlsplit(base_url)
    return parts.scheme == "https" and parts.path in ("", "/")


def cookie_name(name: str, base_url: str) -> str:
    """The name `name` is sent under for this base URL (`__Host-name` or `name`)."""
    return f"__Host-{name}" if host_only_cookies(base_url) else name


def _mask_xsrf(raw: bytes) -> str:
    """`b1|mask|raw XOR mask` in hex, with a fresh mask: never the same bytes twice (BREACH)."""
    mask = secrets.token_bytes(len(raw))
    masked = bytes(a ^ b for a, b in zip(mask, raw, strict=True))
    return f"{_XSRF_VERSION}|{mask.hex()}|{masked.hex()}"


def _unmask_xsrf(token: str | bytes | None) -> bytes | None:
    """The raw token inside a masked one; None when it is not one of ours."""
    if token is None:
        return None
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    parts = text.split("|")
    if len(parts) != 3 or parts[0] != _XSRF_VERSION or len(parts[1]) != 2 * _XSRF_BYTES:
        return None
    try:
        mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        return None
    if len(masked) != len(mask):
        return None
    return bytes(a ^ b for a, b in zip(mask, masked, strict=True))


class SessionCookies(HttpHandler):
    """The session cookie's name and token, and the XSRF token bound to it."""

    @property
    def session_cookie_name(self) -> str:
        return cookie_name(SESSION_COOKIE, self.ctx.settings.base_url)

    @property
    def xsrf_cookie_name(self) -> str:
        return cookie_name(XSRF_COOKIE, self.ctx.settings.base_url)

    def session_token(self) -> str | None:
        """The session token from a validly signed session cookie (not yet looked up)."""
        raw = self.get_signed_cookie(
            self.session_cookie_name, max_age_days=SESSION_LIFETIME.days + 1
        )
        if raw is None:
            return None
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return None

    def _session_xsrf(self, session_token: str) -> bytes:
        digest = hmac.new(
            self.ctx.secret_key, _XSRF_CONTEXT + session_token.encode("ascii"), hashlib.sha256
        ).digest()
        return digest[:_XSRF_BYTES]

    def _expected_xsrf(self) -> bytes | None:
        """The raw token this request must carry: the session's, else the XSRF cookie's."""
        session = self.session_token()
        if session is not None:
            return self._session_xsrf(session)
        return _unmask_xsrf(self.get_cookie(self.xsrf_cookie_name))

    def _issue_xsrf(self, raw: bytes, *, signed_in: bool) -> None:
        """Use `raw` for this response's forms and put it in the XSRF cookie (masked)."""
        token = _mask_xsrf(raw)
        options = dict(self.settings.get("xsrf_cookie_kwargs", {}))
        if signed_in:
            options["expires_days"] = SESSION_LIFETIME.days
        self.set_cookie(self.xsrf_cookie_name, token, **options)
        self._xsrf_token = token.encode("ascii")

    def bind_xsrf(self, session_token: str | None) -> None:
        """After signing in (a new session) or out (None): a token for the new state."""
        if session_token is None:
            self._issue_xsrf(secrets.token_bytes(_XSRF_BYTES), signed_in=False)
        else:
            self._issue_xsrf(self._session_xsrf(session_token), signed_in=True)

    @property
    def xsrf_token(self) -> bytes:
        """The masked token for forms (replaces Tornado's double-submit-only token)."""
        if not hasattr(self, "_xsrf_token"):
            raw = self._expected_xsrf()
            signed_in = self.session_token() is not None
            if raw is None:  # no session and no usable cookie yet: start one
                raw = secrets.token_bytes(_XSRF_BYTES)
            if _unmask_xsrf(self.get_cookie(self.xsrf_cookie_name)) != raw:
                self._issue_xsrf(raw, signed_in=signed_in)
            else:
                self._xsrf_token = _mask_xsrf(raw).encode("ascii")
        token: bytes = self._xsrf_token
        return token

    def check_xsrf_cookie(self) -> None:
        """403 unless the request carries this session's token (or, signed out, the cookie's)."""
        sent = (
            self.get_argument("_xsrf", None)
            or self.request.headers.get("X-Xsrftoken")
            or self.request.headers.get("X-Csrftoken")
        )
        if not sent:
            raise tornado.web.HTTPError(403, "'_xsrf' argument missing from POST")
        got, expected = _unmask_xsrf(sent), self._expected_xsrf()
        if got is None or expected is None or not hmac.compare_digest(got, expected):
            raise tornado.web.HTTPError(403, "XSRF token does not match this session")
