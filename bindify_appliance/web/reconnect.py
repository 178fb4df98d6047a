"""The reconnect page: `GET`/`POST /connections/{id}/reconnect` (DESIGN §15).

Where the "needs reconnect" link leads (the connection page, the dashboard; the proxy's
-32003 message links to the connection page). The form asks for what the connection's auth
type needs — signing in again (OAuth), a new key (API key), nothing (auth none) — and, for a
zero-knowledge connection, its current secret URL or API key (only it can lock the new
credential so that the same URL opens it). The same id, secret URL, key and history stay;
`services/reconnect.py` does the work. OAuth answers 303 to the provider (its callback comes
back to `/connections/{id}?done=reconnected`); the others redirect there at once. A refusal
re-renders the form with the reason, never echoing what was pasted.
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.services.reconnect import reconnect
from bindify_appliance.services.registry import ServiceDefinition
from bindify_appliance.store.models import Connection
from bindify_appliance.usecases.acting import from_request
from bindify_appliance.usecases.connections import owned_connection
from bindify_appliance.web.connect import allow_redirect_to_provider, key_fields, mode_fields
from bindify_appliance.web.pages import UiPage
from bindify_appliance.web.ui import pasted_credentials

__all__ = ["ReconnectPage", "reconnect_routes"]


class ReconnectPage(UiPage):
    async def _owned(self, id: str) -> tuple[Connection, ServiceDefinition | None]:
        self.member()
        row = await owned_connection(
            self.services, from_request(self), id, message="There is no such connection."
        )
        return row, await self.services.registry.get(row.service)

    def _render(
        self,
        row: Connection,
        service: ServiceDefinition | None,
        *,
        status: int = 200,
        error: str | None = None,
    ) -> None:
        if row.auth_type == "oauth":
            allow_redirect_to_provider(self)
        self.render_page(
            "reconnect.html",
            status=status,
            connection=row,
            service=service,
            service_name=service.name if service else row.service,
            key_modes=mode_fields(service) if service and row.auth_type == "api_key" else [],
            error=error,
        )

    async def get(self, id: str) -> None:
        row, service = await self._owned(id)
        self._render(row, service)

    async def post(self, id: str) -> None:
        row, service = await self._owned(id)
        who = self.member()
        try:
            current = pasted_credentials(self.form("current", 512))
            body: dict[str, Any] = {}
            if row.auth_type == "api_key" and service is not None and service.api_key:
                body = key_fields(self, service, self.form("auth_mode", 64))
            done = await reconnect(
                self.services,
                user_id=who.user_id,
                connection_id=row.id,
                current=current,
                body=body,
            )
        except HTTPFacingError as exc:
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(max(1, exc.retry_after)))
            self._render(row, service, status=exc.status, error=exc.public_message)
            return
        if done.url is not None:
            self.redirect(done.url, status=303)
            return
        self.redirect(f"/connections/{row.id}?done=reconnected", status=303)


def reconnect_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    return [route("/connections/{id}/reconnect", ReconnectPage, ctx, services=services)]
