"""`/oauth/authorize`: the member signs in, then answers the consent page (DESIGN §10).

- `GET /oauth/authorize?client_id=…` — checks the request (`authorize_request`); signed out,
  sends the browser through the usual sign-in (password or SSO) and back here; signed in, keeps
  the checked request server-side (`consent.save_pending`) and shows the consent page, every
  time (no remembered consent).
- `GET /oauth/authorize?request=ID` — the consent page again for a pending request (after
  connecting a new account, or revoking an app from the page).
- `POST /oauth/authorize` (CSRF-checked) — `action` = `approve` (with `connection`, and for a
  zero-knowledge connection its pasted secret URL or `bnd_` key in `secret`), `deny`, or
  `connect` (connect a new account first, then come back).

Invariants:
- A refusal before the client and its redirect URI are verified is a page, never a redirect.
- A client ID metadata document (an https `client_id`) is fetched only once the member is
  signed in.
- The code is bound to what the record says, never to form fields; the record is consumed by
  the answer, so a request is answered once.
- A pasted secret is checked against the chosen connection, then dropped: never echoed into
  the page, logged or stored.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from tornado.routing import URLSpec

from bindify_appliance.connections.secrets import credentials_match
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.credentials import Credentials
from bindify_appliance.errors import HTTPFacingError
from bindify_appliance.http.base import CSP
from bindify_appliance.http.cookies import cookie_name
from bindify_appliance.oauth_server import clients as oauth_clients
from bindify_appliance.oauth_server import codes, grants
from bindify_appliance.oauth_server.authorize_request import (
    Refusal,
    check_params,
    client_and_redirect,
    error_redirect,
    read_query,
    success_redirect,
)
from bindify_appliance.oauth_server.consent import (
    PENDING_TTL,
    RETURN_COOKIE,
    Pending,
    form_action_source,
    load_pending,
    redirect_host,
    save_pending,
    take_pending,
)
from bindify_appliance.oauth_server.settings import oauth_server_enabled
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import connections as rows
from bindify_appliance.store.models import Connection
from bindify_appliance.web.pages import UiPage, cookie_options
from bindify_appliance.web.ui import pasted_credentials

__all__ = ["AuthorizeHandler", "authorize_routes"]

_UNKNOWN_CLIENT = (
    "This application is not registered with this appliance, or its registration expired. "
    "Try connecting again from the application."
)
_BAD_REDIRECT = (
    "This application asked to send you back to an address it did not register, so the "
    "request was stopped here. Nothing was shared."
)
_GONE = (
    "This authorization request was already answered or has expired. Start again from the "
    "application."
)
_WRONG_SECRET = "That is not this connection's secret URL or API key."  # noqa: S105
_PICK = "Choose one of your connections."
_DISABLED = "This connection is disabled: enable it first, or choose another."


class AuthorizeHandler(UiPage):
    """The authorization endpoint and its consent page."""

    async def prepare(self) -> None:
        if not oauth_server_enabled(self.ctx.settings):
            raise tornado.web.HTTPError(404)
        await super().prepare()

    @property
    def issuer(self) -> str:
        return self.ctx.settings.base_url.rstrip("/")

    def refuse_page(self, message: str, status: int = 400) -> None:
        self.render_page("oauth_refused.html", status=status, message=message)

    # -- GET ---------------------------------------------------------------------------------

    async def get(self) -> None:
        request_id = self.get_query_argument("request", None)
        if request_id is not None and "client_id" not in self.request.query_arguments:
            who = self.member()
            pending = await load_pending(self.ctx, request_id[:64], who.user_id)
            if pending is None:
                self.refuse_page(_GONE)
                return
            await self.consent(pending)
            return
        try:
            query = read_query(self.request.query_arguments)
            client_id, redirect_uri = client_and_redirect(query)
        except Refusal as refusal:
            self.refuse_page(refusal.message)
            return
        client: oauth_clients.OAuthClient | None = None
        # A metadata document is fetched only for a signed-in member (no anonymous fetches).
        if self.principal is not None or not client_id.lower().startswith("https://"):
            client = await oauth_clients.find_client(self.ctx, client_id)
            if client is None:
                self.refuse_page(_UNKNOWN_CLIENT)
                return
            if not oauth_clients.redirect_uri_allowed(client, redirect_uri):
                self.refuse_page(_BAD_REDIRECT)
                return
        services = {s.id for s in await self.services.registry.list()}
        try:
            params = check_params(query, base_url=self.issuer, services=services)
        except Refusal as refusal:
            if client is None:  # the redirect URI is not verified yet: never redirect
                self.refuse_page(refusal.message)
            else:
                self.redirect(
                    error_redirect(
                        redirect_uri,
                        refusal.error,
                        refusal.message,
                        query.get("state"),
                        self.issuer,
                    )
                )
            return
        if self.principal is None or client is None:
            self.login_redirect()
            return
        pending = await save_pending(
            self.ctx,
            user_id=self.principal.user_id,
            params=params,
            client_name=client.client_name or client.client_id,
            unverified=client.self_registered,
        )
        await self.consent(pending)

    async def consent(
        self, pending: Pending, *, status: int = 200, error: str | None = None
    ) -> None:
        """Render the consent page for `pending` (the member's connections and their apps)."""
        who = self.member()
        service = pending.params.service
        connections: list[Connection] = await self.ctx.store.run(
            lambda: rows.list_for_user(who.user_id, service=service)
        )
        definitions = {s.id: s for s in await self.services.registry.list()}
        apps = {row.id: await grants.list_grants(self.ctx, row.id) for row in connections}
        source = form_action_source(pending.params.redirect_uri)
        if source is not None:
            self.set_header(
                "Content-Security-Policy",
                CSP.replace("form-action 'self'", f"form-action 'self' {source}"),
            )
        self.render_page(
            "consent.html",
            status=status,
            pending=pending,
            redirect_host=redirect_host(pending.params.redirect_uri),
            service=definitions.get(service) if service else None,
            services=definitions,
            connections=connections,
            apps=apps,
            error=error,
        )

    # -- POST --------------------------------------------------------------------------------

    async def post(self) -> None:
        who = self.member()
        request_id = self.form("request", 64)
        pending = await load_pending(self.ctx, request_id, who.user_id)
        if pending is None:
            self.refuse_page(_GONE)
            return
        action = self.form("action", 16)
        if action == "connect":
            await self._connect_first(pending)
        elif action == "deny":
            await self._deny(pending)
        elif action == "approve":
            await self._approve(pending)
        else:
            await self.consent(pending, status=400, error="Choose Allow or Deny.")

    async def _connect_first(self, pending: Pending) -> None:
        service = pending.params.service or self.form("service", 64)
        definition = await self.services.registry.get(service) if service else None
        options: dict[str, Any] = cookie_options(self.ctx.settings.base_url)
        self.set_signed_cookie(
            cookie_name(RETURN_COOKIE, self.ctx.settings.base_url),
            pending.request_id,
            expires_days=None,
            max_age=int(PENDING_TTL),
            **options,
        )
        target = f"/connect/{definition.id}" if definition is not None else "/connect"
        self.redirect(target, status=303)

    async def _deny(self, pending: Pending) -> None:
        taken = await take_pending(self.ctx, pending.request_id, pending.user_id)
        if taken is None:
            self.refuse_page(_GONE)
            return
        self._answered()
        params = taken.params
        self.redirect(
            error_redirect(
                params.redirect_uri,
                "access_denied",
                "The member declined the request.",
                params.state,
                self.issuer,
            ),
            status=303,
        )

    async def _approve(self, pending: Pending) -> None:
        params = pending.params
        connection_id = self.form("connection", 64)
        row: Connection | None = (
            await self.ctx.store.run(rows.get_connection, connection_id, pending.user_id)
            if connection_id
            else None
        )
        if row is None or (params.service is not None and row.service != params.service):
            await self.consent(pending, status=400, error=_PICK)
            return
        if row.disabled_at is not None or row.status == "disabled":
            await self.consent(pending, status=409, error=_DISABLED)
            return
        opener: bytes | None = None
        if row.key_storage_mode == "zero_knowledge":
            creds = self._opener(pending, row)
            if creds is None:
                await self.consent(pending, status=400, error=_WRONG_SECRET)
                return
            opener = creds.text.encode("ascii")
        taken = await take_pending(self.ctx, pending.request_id, pending.user_id)
        if taken is None:
            self.refuse_page(_GONE)
            return
        code = await codes.issue_code(
            self.ctx,
            client_id=params.client_id,
            redirect_uri=params.redirect_uri,
            code_challenge=params.code_challenge,
            service=row.service,
            resource=params.resource,
            connection_id=row.id,
            user_id=pending.user_id,
            opener=opener,
        )
        self._answered()
        self.redirect(
            success_redirect(params.redirect_uri, code, params.state, self.issuer), status=303
        )

    def _opener(self, pending: Pending, row: Connection) -> Credentials | None:
        """The credentials that open `row`: remembered from connecting it during this
        authorization, else pasted on the page; None unless they are this connection's."""
        fresh = pending.fresh_credentials(row.id)
        if fresh is not None and credentials_match(row, fresh):
            return fresh
        try:
            pasted = pasted_credentials(self.form("secret", 512))
        except HTTPFacingError:
            return None
        if pasted is None or not credentials_match(row, pasted):
            return None
        return pasted

    def _answered(self) -> None:
        base_url = self.ctx.settings.base_url
        self.clear_cookie(
            cookie_name(RETURN_COOKIE, base_url), path="/", secure=base_url.startswith("https://")
        )


def authorize_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    if not oauth_server_enabled(ctx.settings):
        return []
    return [route("/oauth/authorize", AuthorizeHandler, ctx, services=services)]
