"""A block of routes whose modules load on the first request that reaches it.

Invariants:
- The block stands in the application's table as one rule matching anything. The first request
  that reaches it (no rule before it claimed the request) runs `build()` once; the rules it
  returns replace the block in place, so from then on the table is exactly the eager one.
- Routing after the splice starts from the top of the table again: the rules before the block
  did not match this request, so the answer is the one the eager table would give (a handler,
  or the application's default handler when nothing matches).
- The block is not built when `build()` raises: the error reaches this request, and the next
  request that reaches the block tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tornado.web
from tornado import httputil
from tornado.routing import AnyMatches, Router, Rule

__all__ = ["DeferredRoutes"]


class DeferredRoutes(Router):
    def __init__(self, build: Callable[[], list[Any]]) -> None:
        self._build: Callable[[], list[Any]] | None = build
        self._application: tornado.web.Application | None = None

    def rule(self) -> Rule:
        """The placeholder rule to put in the application's table."""
        return Rule(AnyMatches(), self)

    def attach(self, application: tornado.web.Application) -> None:
        """The application whose table holds this block (set once, right after it is built)."""
        self._application = application

    @property
    def built(self) -> bool:
        return self._build is None

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate | None:
        application = self._application
        assert application is not None, "DeferredRoutes.attach() was not called"
        table = application.wildcard_router
        if self._build is not None:
            rules = [table.process_rule(rule) for rule in self._build()]
            at = next(i for i, rule in enumerate(table.rules) if rule.target is self)
            table.rules[at : at + 1] = rules
            self._build = None
        return table.find_handler(request, **kwargs)
