"""Connecting an account from the browser: the catalogue and one service's connect form.

- `GET /connect` — every service (built-in and admin-added) and what it needs: OAuth sign-in,
  an API key (with the service's instructions), or nothing.
- `GET /connect/{service}` — the form: the storage mode (each explained in one sentence), a
  label, and for API-key services the fields; `?replace={id}` reconnects an existing
  connection (its URL keeps working until the new one is made, then stops).
- `POST /connect/{service}` — API key / no auth: the key is checked upstream, the connection
  made, and the browser sent to `/connections/{id}?claim=…` (secrets shown once). OAuth: a
  303 to the upstream authorization page; `/oauth/callback` finishes.

A rejected key re-renders the form with the service's own message, never echoing the key.
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance.context import AppContext
from bindify_appliance.errors import HTTPFacingError, InvalidRequest, NotFound
from bindify_appliance.http.base import CSP
from bindify_appliance.routes import route
from bindify_appliance.services.apikeys import connect_with_key
from bindify_appliance.services.connect import ConnectServices, start_authorization
from bindify_appliance.services.registry import ApiKeyField, ServiceDefinition
from bindify_appliance.web.ui import UiPage, redirect_to_claim

__all__ = [
    "STORAGE_MODES",
    "allow_redirect_to_provider",
    "connect_routes",
    "key_fields",
    "mode_fields",
    "needs",
]

STORAGE_MODES = (
    (
        "zero_knowledge",
        "Zero-knowledge (recommended)",
        "The stored credential can only be unlocked with your secret URL, so nobody with "
        "access to this server, administrators included, can use it without that URL.",
    ),
    (
        "managed",
        "Managed key",
        "The credential is encrypted with the server's master key, which lets the server "
        "refresh it in the background and change your URL without asking for the old one.",
    ),
)


def oauth_ready(service: ServiceDefinition) -> bool:
    """Whether signing in with the service works now (a client id, DCR or discovery)."""
    return service.oauth is not None and service.oauth.configured


def needs(service: ServiceDefinition) -> str:
    """One phrase saying what connecting takes, as a member can do it now.

    A sign-in whose OAuth app is not configured is never offered: it would end in the
    operator's set-up instructions (`oauth_app_hint` is what administrators are shown).
    """
    if oauth_ready(service):
        if service.api_key is not None:
            return "Sign in with the service, or paste an API key"
        return "Sign in with the service (OAuth)"
    if service.api_key is not None:
        if service.oauth is not None:
            return "API key only (sign-in with the service is not set up here)"
        return "An API key or token from the service"
    if service.oauth is not None:
        return "Sign-in with the service, which is not set up here yet: ask your administrator"
    return "Nothing: the server needs no credentials"


def oauth_app_hint(service: ServiceDefinition) -> str | None:
    """For administrators: the options that make the service's sign-in work, when missing."""
    if service.oauth is None or service.oauth.configured:
        return None
    env = "BINDIFY_" + service.id.upper().replace("-", "_")
    return f"{env}_CLIENT_ID and {env}_CLIENT_SECRET"


def unready_sign_in(service: ServiceDefinition) -> HTTPFacingError:
    """A member's answer to a sign-in whose OAuth app is missing (not the operator's steps)."""
    alternative = "connect with an API key, or " if service.api_key is not None else ""
    return InvalidRequest(
        f"Sign-in with {service.name} is not set up on this appliance yet: {alternative}"
        "ask your administrator to configure it.",
        field="service",
    )


def mode_fields(service: ServiceDefinition) -> list[tuple[str, str, str, tuple[ApiKeyField, ...]]]:
    """(mode id, label, instructions, fields); one pseudo-mode "" when there are no modes."""
    api = service.api_key
    if api is None:
        return []
    if not api.auth_modes:
        return [("", "", api.instructions, api.fields)]
    return [(m.id, m.label, m.instructions, m.fields or api.fields) for m in api.auth_modes]


def allow_redirect_to_provider(page: UiPage) -> None:
    """Widen `form-action` on this page only: browsers apply it to the redirects that follow a
    form submission, and the OAuth form's answer is a 303 to the provider's authorization page,
    whose origin is only known after discovery. Plain http only when the operator allows
    private upstreams (the only way an http provider can exist)."""
    schemes = "https: http:" if page.ctx.settings.allow_private_upstreams else "https:"
    page.set_header(
        "Content-Security-Policy",
        CSP.replace("form-action 'self'", f"form-action 'self' {schemes}"),
    )


def key_fields(page: UiPage, service: ServiceDefinition, auth_mode: str) -> dict[str, Any]:
    """`{auth_mode?, fields}` from the API-key part of the connect (or reconnect) form."""
    modes = mode_fields(service)
    chosen = next((m for m in modes if m[0] == auth_mode), modes[0])
    body: dict[str, Any] = {"auth_mode": chosen[0]} if chosen[0] else {}
    prefix = f"f_{chosen[0]}_" if chosen[0] else "f__"
    body["fields"] = {f.id: page.get_body_argument(prefix + f.id, "") or "" for f in chosen[3]}
    return body


class CatalogueHandler(UiPage):
    async def get(self) -> None:
        who = self.member()
        services = sorted(await self.services.registry.list(), key=lambda s: s.name.lower())
        # The operator's hint is for administrators; members see what they can do now.
        hint = oauth_app_hint if who.role == "admin" else (lambda _service: None)
        self.render_page("catalogue.html", services=services, needs=needs, oauth_app_hint=hint)


class ConnectHandler(UiPage):
    async def _service(self, service_id: str) -> ServiceDefinition:
        service = await self.services.registry.get(service_id[:64])
        if service is None:
            raise NotFound("There is no such service.")
        return service

    def _render(
        self,
        service: ServiceDefinition,
        *,
        status: int = 200,
        error: str | None = None,
        values: dict[str, str] | None = None,
    ) -> None:
        values = values or {}
        replace = values.get("replace") or self.get_query_argument("replace", "") or ""
        self.render_page(
            "connect.html",
            status=status,
            service=service,
            needs=needs(service),
            modes=STORAGE_MODES,
            key_modes=mode_fields(service),
            error=error,
            label=values.get("label", ""),
            chosen_mode=values.get("key_storage_mode", "zero_knowledge"),
            chosen_auth_mode=values.get("auth_mode", ""),
            replace=replace[:64],
            oauth_ready=oauth_ready(service),
        )

    async def get(self, service: str) -> None:
        self.member()
        definition = await self._service(service)
        if definition.oauth is not None:
            self._allow_redirect_to_provider()
        self._render(definition)

    def _allow_redirect_to_provider(self) -> None:
        allow_redirect_to_provider(self)

    async def post(self, service: str) -> None:
        who = self.member()
        definition = await self._service(service)
        values = {
            "label": self.form("label", 200),
            "key_storage_mode": self.form("key_storage_mode", 32) or "zero_knowledge",
            "replace": self.form("replace", 64),
            "auth_mode": self.form("auth_mode", 64),
            "method": self.form("method", 16),
        }
        common: dict[str, Any] = {"key_storage_mode": values["key_storage_mode"]}
        if values["label"]:
            common["label"] = values["label"]
        if values["replace"]:
            common["replace"] = values["replace"]
        use_oauth = definition.oauth is not None and (
            definition.api_key is None or values["method"] != "api_key"
        )
        try:
            if use_oauth and not oauth_ready(definition) and who.role != "admin":
                raise unready_sign_in(definition)
            if use_oauth:
                url = await start_authorization(
                    self.services, user_id=who.user_id, service_id=definition.id, **common
                )
                self.redirect(url, status=303)
                return
            body: dict[str, Any] = {"service": definition.id, **common}
            if definition.api_key is not None:
                body.update(key_fields(self, definition, values["auth_mode"]))
            created = await connect_with_key(self.services, user_id=who.user_id, body=body)
        except HTTPFacingError as exc:
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(max(1, exc.retry_after)))
            self._render(definition, status=exc.status, error=exc.public_message, values=values)
            return
        await redirect_to_claim(self, who.user_id, created)


def connect_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    kw: dict[str, Any] = {"services": services}
    return [
        route("/connect", CatalogueHandler, ctx, **kw),
        route("/connect/{service}", ConnectHandler, ctx, **kw),
    ]
