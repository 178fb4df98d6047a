"""The answer to a path no route matches: 404 in the shape of the path's area."""

from __future__ import annotations

from typing import Final

import tornado.web

from bindify_appliance.http.base import HttpHandler
from bindify_appliance.sandbox import SANDBOX_HEADERS

__all__ = ["NotFoundHandler"]

_MCP_NOT_FOUND: Final = (
    "No MCP endpoint at this path: use /mcp/{service}/{credentials} (your secret URL) or "
    "/mcp/{service} with 'Authorization: Bearer bnd_…'."
)
_PAGE_NOT_FOUND: Final = "There is nothing here. Check the address, or go back to the start page."


class _AnyMethod(tuple[str, ...]):
    """`SUPPORTED_METHODS` that contains every method: an unmatched path is 404 whatever the
    verb (Tornado would answer 405 for a verb outside its usual list before `prepare`)."""

    def __contains__(self, item: object) -> bool:
        return True


class NotFoundHandler(HttpHandler):
    """Default handler for paths no route matches (logged as `<unmatched>`).

    Every method gets 404 in the shape of the path's area: the admin API's JSON envelope under
    `/api/`, a JSON-RPC error (id null) under `/mcp`, an HTML page elsewhere. It never reads a
    cookie, a credential or the body: there is no state to protect here (no CSRF check).
    """

    SUPPORTED_METHODS = _AnyMethod()

    def prepare(self) -> None:
        path = self.request.path
        if path == "/api" or path.startswith("/api/"):
            self.write_json({"error": "not_found", "message": "no such API route"}, 404)
        elif path == "/mcp" or path.startswith("/mcp/"):
            self._mcp_not_found()
        else:
            self.set_status(404)
            self.set_header("Content-Type", "text/html; charset=UTF-8")
            self.set_header("Cache-Control", "no-store")
            self.render("error.html", status_code=404, title="Not found", message=_PAGE_NOT_FOUND)
        raise tornado.web.Finish()

    def _mcp_not_found(self) -> None:
        # The proxy's answer headers (DESIGN §9): nothing here can act on the UI's origin.
        self.clear_header("Referrer-Policy")
        for name, value in SANDBOX_HEADERS:
            self.set_header(name, value)
        error = {"code": -32600, "message": _MCP_NOT_FOUND}
        self.write_json({"jsonrpc": "2.0", "id": None, "error": error}, 404)
