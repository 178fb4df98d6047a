"""Old home of the handler base; the names stay importable while callers move.

The neutral base is `http.base.HttpHandler`, the session cookie and CSRF binding
`http.cookies.SessionCookies`, the 404 handler `http.not_found.NotFoundHandler`.
"""

from __future__ import annotations

from bindify_appliance.http.base import CSP, HttpHandler, access_log_function
from bindify_appliance.http.cookies import XSRF_COOKIE, cookie_name, host_only_cookies
from bindify_appliance.http.not_found import NotFoundHandler

__all__ = [
    "CSP",
    "XSRF_COOKIE",
    "BaseHandler",
    "NotFoundHandler",
    "access_log_function",
    "cookie_name",
    "host_only_cookies",
]

BaseHandler = HttpHandler
