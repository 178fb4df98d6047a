"""The administrators' "Connections" page: every member's connections as metadata (DESIGN §15).

- `GET /admin/connections` — owner, service, label, status, last used; `?user_id=` keeps one
  member's (a select of the users). The rows come from `store.overview.list_all_connections`,
  the query `GET /api/v1/admin/connections` uses, which selects metadata columns only: no
  secret, hash or sealed credential can reach this page.
- `POST /admin/connections/{id}` — `action` = `disable` | `enable` through the step the API's
  `PATCH /api/v1/admin/connections/{id}` uses (`usecases.connections`): the owner cannot
  re-enable what an administrator disabled; the event and the audit entry name the
  administrator. Answers 303 back to the list (with the filter it came from).

Members get the 403 page; anonymous visitors are sent to sign in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from tornado.routing import URLSpec

from bindify_appliance.context import AppContext
from bindify_appliance.errors import InvalidRequest
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store.overview import list_all_connections
from bindify_appliance.usecases.acting import from_request
from bindify_appliance.usecases.connections import any_connection, set_connection_disabled
from bindify_appliance.web.pages import UiPage

__all__ = ["admin_connection_routes"]

# One page shows at most this many; past it the page says so (the API pages through all).
_LIMIT = 500
_DONE = {"disabled": "Connection disabled.", "enabled": "Connection enabled."}


class ConnectionsOverviewPage(UiPage):
    async def get(self) -> None:
        self.admin()
        owner = (self.get_query_argument("user_id", "") or "")[:64] or None
        listed = await self.ctx.store.run(
            lambda: list_all_connections(None, _LIMIT + 1, user_id=owner)
        )
        users = await self.ctx.store.run(accounts_store.list_users, None, 500)
        self.render_page(
            "admin_connections.html",
            connections=listed[:_LIMIT],
            more=len(listed) > _LIMIT,
            users=users,
            owner=owner,
            done=_DONE.get(self.get_query_argument("done", "") or ""),
        )


class ConnectionAdminActionPage(UiPage):
    async def post(self, id: str) -> None:
        self.admin()
        action = self.form("action", 16)
        if action not in ("disable", "enable"):
            raise InvalidRequest("Unknown action.", field="action")
        row = await any_connection(self.services, id, message="There is no such connection.")
        disabled = action == "disable"
        await set_connection_disabled(self.services, from_request(self), row.id, disabled)
        query: dict[str, Any] = {"done": "disabled" if disabled else "enabled"}
        owner = self.form("user_id", 64)
        if owner:
            query["user_id"] = owner
        self.redirect(f"/admin/connections?{urlencode(query)}", status=303)


def admin_connection_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    kw: dict[str, Any] = {"services": services}
    return [
        route("/admin/connections", ConnectionsOverviewPage, ctx, **kw),
        route("/admin/connections/{id}", ConnectionAdminActionPage, ctx, **kw),
    ]
