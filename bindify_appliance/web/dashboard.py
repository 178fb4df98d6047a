"""The member's pages: the dashboard (`/`) and one connection (`/connections/{id}` and actions).

- `GET /` — the member's connections (service, label, storage mode, status, last used) with
  rename, reconnect (in place: `web/reconnect.py`), change URL and delete actions.
- `GET /connections/{id}` — details and the metadata-only event history; with `?claim=TOKEN`
  the secret URL and API key are shown once (the claim is consumed on display) with
  ready-to-paste client configuration. `static/app.js` then drops the claim from the address
  bar; a reload finds the claim used and shows nothing secret.
- `POST /connections/{id}/rename`, `GET`/`POST /connections/{id}/delete` (a confirmation page
  first), `POST /connections/{id}/rotate` (new URL; zero-knowledge connections must give the
  current URL or API key, because only it unlocks the stored credential),
  `POST /connections/{id}/disable` and `/enable` (the owner cannot re-enable a connection an
  administrator disabled: 403, nothing changes; the event names who acted).

Ownership: another user's connection is "not found", administrators included (no oracle).
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance.clients import client_configs
from bindify_appliance.context import AppContext
from bindify_appliance.errors import Conflict, HTTPFacingError
from bindify_appliance.oauth_server.connected_apps import connection_page_extras
from bindify_appliance.proxy.policy import load_policy
from bindify_appliance.routes import route
from bindify_appliance.services.claims import take_claim
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import connections as rows
from bindify_appliance.store.events import list_events
from bindify_appliance.store.models import Connection
from bindify_appliance.usecases.acting import Acting, from_request
from bindify_appliance.usecases.connections import (
    check_may_enable,
    delete_connection,
    owned_connection,
    rename_connection,
    rotate_connection,
    set_connection_disabled,
)
from bindify_appliance.web.pages import UiPage
from bindify_appliance.web.policy_form import form_fields
from bindify_appliance.web.reconnect import reconnect_routes
from bindify_appliance.web.ui import pasted_credentials, redirect_to_claim

__all__ = ["dashboard_routes"]

_NOT_FOUND = "There is no such connection."


class _Owned(UiPage):
    @property
    def acting(self) -> Acting:
        """The signed-in member (a redirect to sign-in otherwise)."""
        self.member()
        return from_request(self)

    async def owned(self, id: str) -> Connection:
        return await owned_connection(self.services, self.acting, id, message=_NOT_FOUND)

    async def names(self) -> dict[str, str]:
        return {s.id: s.name for s in await self.services.registry.list()}


class DashboardHandler(_Owned):
    async def get(self) -> None:
        who = self.member()
        connections = await self.ctx.store.run(rows.list_for_user, who.user_id)
        services = {s.id: s for s in await self.services.registry.list()}
        self.render_page(
            "dashboard.html",
            connections=connections,
            services=services,
            flash=self.get_query_argument("done", None),
        )


class ConnectionView(_Owned):
    """Renders the connection page; subclasses add the verbs (`GET` here, form posts)."""

    async def show(
        self,
        row: Connection,
        *,
        secrets: dict[str, str] | None = None,
        claim_gone: bool = False,
        status: int = 200,
        policy_form: dict[str, Any] | None = None,
    ) -> None:
        """Render the page; `policy_form` replaces the stored policy's form (after an error)."""
        who = self.member()
        service = await self.services.registry.get(row.service)
        name = service.name if service is not None else row.service
        events = await self.ctx.store.run(lambda: list_events(row.id, limit=50, cursor=None))
        configs: list[dict[str, Any]] = []
        if secrets:
            api_url = self.ctx.settings.base_url.rstrip("/") + f"/mcp/{row.service}"
            configs = client_configs(
                row.label or name, secrets["secret_url"], secrets["api_key"], api_url
            )
        extras = await connection_page_extras(self, row, secrets)
        if policy_form is None:
            policy_form = form_fields(f"/connections/{row.id}/policy", load_policy(row.policy_json))
        self.render_page(
            "connection.html",
            status=status,
            connection=row,
            service_name=name,
            service=service,
            secrets=secrets,
            claim_gone=claim_gone,
            configs=configs,
            events=events.items,
            error=None,
            may_enable=who.is_admin,
            flash=self.get_query_argument("done", None),
            policy_form=policy_form,
            service_policy=service.policy if service is not None else None,
            **extras,
        )


class ConnectionPage(ConnectionView):
    async def get(self, id: str) -> None:
        row = await self.owned(id)
        who = self.member()
        secrets: dict[str, str] | None = None
        claim_gone = False
        token = self.get_query_argument("claim", None)
        if token:
            try:
                result = await take_claim(self.ctx.kv, token[:128], who.user_id)
            except HTTPFacingError as exc:
                if exc.status != 404:
                    raise
                claim_gone = True
            else:
                if (result.get("connection") or {}).get("id") == row.id:
                    secrets = {
                        "secret_url": str(result.get("secret_url", "")),
                        "api_key": str(result.get("api_key", "")),
                    }
                else:
                    claim_gone = True
        await self.show(row, secrets=secrets, claim_gone=claim_gone)


class RenameHandler(_Owned):
    async def post(self, id: str) -> None:
        row = await self.owned(id)
        await rename_connection(self.services, self.acting, row.id, self.form("label", 200))
        self.redirect("/?done=renamed", status=303)


class DeleteHandler(_Owned):
    async def get(self, id: str) -> None:
        row = await self.owned(id)
        names = await self.names()
        self.render_page(
            "confirm_delete.html", connection=row, service_name=names.get(row.service, row.service)
        )

    async def post(self, id: str) -> None:
        row = await self.owned(id)
        await delete_connection(self.services, self.acting, row)
        self.redirect("/?done=deleted", status=303)


class RotateHandler(_Owned):
    async def post(self, id: str) -> None:
        row = await self.owned(id)
        who = self.member()
        current = pasted_credentials(self.form("current", 512))
        if current is None and row.key_storage_mode == "zero_knowledge":
            raise Conflict(
                "This connection is zero-knowledge: paste its current secret URL or API key "
                "to change the URL."
            )
        rotated = await rotate_connection(self.services, self.acting, row, current)
        await redirect_to_claim(self, who.user_id, rotated)


class DisableHandler(_Owned):
    """`POST /connections/{id}/disable` or `/enable` (the route's `disabled` argument)."""

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        self.disabled = bool(kwargs.pop("disabled"))
        super().initialize(**kwargs)

    async def post(self, id: str) -> None:
        row = await self.owned(id)
        acting = self.acting
        check_may_enable(acting, row, self.disabled)
        await set_connection_disabled(self.services, acting, row.id, self.disabled)
        self.redirect(f"/connections/{row.id}", status=303)


def dashboard_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    kw: dict[str, Any] = {"services": services}
    return [
        route("/", DashboardHandler, ctx, **kw),
        route("/connections/{id}", ConnectionPage, ctx, **kw),
        route("/connections/{id}/rename", RenameHandler, ctx, **kw),
        route("/connections/{id}/delete", DeleteHandler, ctx, **kw),
        route("/connections/{id}/rotate", RotateHandler, ctx, **kw),
        route("/connections/{id}/disable", DisableHandler, ctx, disabled=True, **kw),
        route("/connections/{id}/enable", DisableHandler, ctx, disabled=False, **kw),
        *reconnect_routes(ctx, services),
    ]
