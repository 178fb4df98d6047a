"""Route templates: `/mcp/{service}/{credentials}` style patterns turned into Tornado rules.

The template itself travels with the handler so the access log can name it instead of the raw
path (which may hold a secret URL segment).
"""

from __future__ import annotations

import re
from typing import Any

from tornado.routing import URLSpec

__all__ = ["route", "template_to_regex"]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def template_to_regex(template: str) -> str:
    """`/a/{b}` → `/a/(?P<b>[^/]+)$`; placeholders never span a slash."""
    out = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[last : match.start()]))
        out.append(f"(?P<{match.group(1)}>[^/]+)")
        last = match.end()
    out.append(re.escape(template[last:]))
    return "".join(out) + "$"


def route(template: str, handler: Any, ctx: Any, **kwargs: Any) -> URLSpec:
    return URLSpec(
        template_to_regex(template),
        handler,
        {"ctx": ctx, "route_template": template, **kwargs},
        name=None,
    )
