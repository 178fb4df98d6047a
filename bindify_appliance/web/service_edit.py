"""The service page's settings, OAuth app and delete forms (admin; DESIGN §5, §9).

- `POST /admin/services/{id}/settings` — an admin-added service's name, MCP URL, transport and
  sign-in (none / API key in a header with a prefix or in a query parameter / OAuth endpoints,
  client id and secret, scopes). The form becomes the PATCH body of `/api/v1/services/{id}`
  (`web/service_form.py`) and goes through the API's own step (`api.services.update_service`):
  the registry's validation, the `service.update` / `oauth_app.set` audit, and DESIGN §9's
  rule that moving where credentials go sends every connection to "needs reconnecting".
- `POST /admin/services/{id}/oauth-app` — a built-in's OAuth app client id and secret (the
  secret is never shown back; a blank field keeps it). Not offered where the environment
  sets the client id (`BINDIFY_{SERVICE}_CLIENT_ID` wins, DESIGN §4).
- `POST /admin/services/{id}/delete` — with `confirm=yes`, through `api.services.delete_service`
  (409 while connections use it).

A refused form re-renders the page (status of the refusal) with the message and what was typed
(never a secret); nothing is written. Success redirects (303) to the page or the list.
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance.api.services import delete_service, update_service
from bindify_appliance.context import AppContext
from bindify_appliance.errors import (
    Conflict,
    ConflictError,
    HTTPFacingError,
    InvalidRequest,
    NotFound,
    NotFoundError,
)
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.web.policies import ServiceView
from bindify_appliance.web.service_form import posted_body

__all__ = ["service_edit_routes"]

_NO_SERVICE = "There is no such service."
_CONFIRM = "Tick “Yes, delete this service” to delete it. Nothing was deleted."
_IN_USE = "Connections still use this service; they must be deleted first. Nothing was deleted."
_ENV_ID = "The environment sets this service's OAuth client id; change it there."


class _Edit(ServiceView):
    async def refused(self, id: str, exc: HTTPFacingError, **editor: Any) -> None:
        if exc.status not in (400, 409):
            raise exc
        await self.show(await self.service(id), exc.status, editor=editor)


class SettingsHandler(_Edit):
    async def post(self, id: str) -> None:
        self.admin()
        service = await self.service(id)
        if service.builtin:
            raise InvalidRequest("Built-in services are changed by configuration.")
        body, typed = posted_body(self, service)
        try:
            await update_service(self, service.id, body)
        except NotFoundError:
            raise NotFound(_NO_SERVICE) from None
        except HTTPFacingError as exc:
            await self.refused(id, exc, error=exc.public_message, values=typed)
            return
        self.redirect(f"/admin/services/{service.id}?done=saved#settings", status=303)


class OAuthAppHandler(_Edit):
    async def post(self, id: str) -> None:
        self.admin()
        service = await self.service(id)
        if not service.builtin or service.oauth is None or service.oauth.dcr:
            raise InvalidRequest("This service has no OAuth app to set here.")
        if self.ctx.settings.service_setting(service.id, "client_id") is not None:
            await self.refused(id, Conflict(_ENV_ID), oauth_error=_ENV_ID)
            return
        auth: dict[str, Any] = {"client_id": self.form("client_id", 600) or None}
        secret = (self.get_body_argument("client_secret", "", strip=False) or "")[:4096]
        if self.form("clear_secret", 8) == "yes" or auth["client_id"] is None:
            auth["client_secret"] = None
        elif secret:
            auth["client_secret"] = secret
        try:
            await update_service(self, service.id, {"auth": auth})
        except HTTPFacingError as exc:
            await self.refused(id, exc, oauth_error=exc.public_message)
            return
        self.redirect(f"/admin/services/{service.id}?done=oauth-app#oauth-app", status=303)


class DeleteHandler(_Edit):
    async def post(self, id: str) -> None:
        self.admin()
        service = await self.service(id)
        if self.form("confirm", 8) != "yes":
            await self.refused(id, InvalidRequest(_CONFIRM), delete_error=_CONFIRM)
            return
        try:
            await delete_service(self, service.id)
        except NotFoundError:
            raise NotFound(_NO_SERVICE) from None
        except ConflictError:
            await self.refused(id, Conflict(_IN_USE), delete_error=_IN_USE)
            return
        except HTTPFacingError as exc:
            await self.refused(id, exc, delete_error=exc.public_message)
            return
        self.redirect("/admin/services?done=deleted", status=303)


def service_edit_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    kw: dict[str, Any] = {"services": services}
    return [
        route("/admin/services/{id}/settings", SettingsHandler, ctx, **kw),
        route("/admin/services/{id}/oauth-app", OAuthAppHandler, ctx, **kw),
        route("/admin/services/{id}/delete", DeleteHandler, ctx, **kw),
    ]
