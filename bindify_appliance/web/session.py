"""Old home of the page base; the names stay importable while callers move (`web.pages`)."""

from __future__ import annotations

from bindify_appliance.http.base import request_ip
from bindify_appliance.web.pages import PageHandler, cookie_options

__all__ = ["PageHandler", "cookie_options", "request_ip"]
