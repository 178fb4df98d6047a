"""Browser side of connecting: `/oauth/callback`, `/connections/{id}`, the client metadata doc.

- `GET /oauth/callback` — where upstream authorization servers send the browser back. The
  member must be signed in as the account that started the connect (otherwise: sign-in first,
  then the same URL again). Provider errors (`error=access_denied`…), unknown or replayed
  `state`, token-endpoint failures: a readable error page, nothing stored. Success: 302 to
  `/connections/{id}?claim=TOKEN`, or `?done=reconnected` after a reconnect in place.
- `GET /connections/{id}` — a connection's page (owner only). With `?claim=TOKEN` it shows the
  new secret URL and API key once (the claim is consumed on display); the web-UI work makes
  this page complete.
- `GET /oauth/client-metadata.json` — our client ID metadata document when the base URL is
  HTTPS (404 otherwise), for authorization servers that accept CIMD client ids.

Every page is `Cache-Control: no-store` with `Referrer-Policy: no-referrer` (the claim and the
code are in URLs).
"""

from __future__ import annotations

from tornado.routing import URLSpec

from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError, NotFound
from bindify_appliance.http.base import HttpHandler
from bindify_appliance.http.services import WithConnectServices
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices, complete_authorization
from bindify_appliance.services.dcr import (
    CALLBACK_PATH,
    CLIENT_METADATA_PATH,
    client_metadata_document,
)
from bindify_appliance.web.pages import PageHandler

__all__ = [
    "ClientMetadataHandler",
    "OAuthCallbackHandler",
    "connect_web_routes",
]


class _ConnectPage(WithConnectServices, PageHandler):
    def arg(self, name: str, limit: int = 4096) -> str | None:
        value = self.get_query_argument(name, None)
        return value[:limit] if value is not None else None


class OAuthCallbackHandler(_ConnectPage):
    async def get(self) -> None:
        if self.principal is None:
            self.login_redirect()
            return
        try:
            connection_id, claim = await complete_authorization(
                self.services,
                user_id=self.principal.user_id,
                state=self.arg("state", 256),
                code=self.arg("code"),
                error=self.arg("error", 256),
                error_description=self.arg("error_description", 1024),
                iss=self.arg("iss", 2048),
            )
        except HTTPFacingError as exc:
            self.render_error_page(exc.status, exc.public_message)
            return
        self.set_header("Cache-Control", "no-store")
        if claim is None:  # reconnected in place: same URL and key, nothing to show
            self.redirect(f"/connections/{connection_id}?done=reconnected")
            return
        self.redirect(f"/connections/{connection_id}?claim={claim}")


class ClientMetadataHandler(HttpHandler):
    def get(self) -> None:
        document = client_metadata_document(self.ctx.settings.base_url)
        if document is None:
            raise NotFound("not served without an https base URL")
        self.set_header("Cache-Control", "public, max-age=3600")
        self.set_header("Content-Type", "application/json")
        self.finish(document)


def connect_web_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    return [
        route(CALLBACK_PATH, OAuthCallbackHandler, ctx, services=services),
        route(CLIENT_METADATA_PATH, ClientMetadataHandler, ctx),
    ]
