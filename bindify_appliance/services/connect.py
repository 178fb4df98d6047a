"""Connecting by OAuth: the authorize step and the callback step.

`ConnectServices` (`services/connect_services.py`, re-exported here) bundles the collaborators
both steps use; the composition root builds one per process and closes it at shutdown.

`start_authorization` (POST /api/v1/connections/{service}/authorize):
1. checks everything the caller sent (storage mode, label, that `replace` is theirs) before any
   network call;
2. works out the OAuth client: a static app (environment or admin-stored), else — for
   discovered services — RFC 9728/8414 discovery, then a client ID metadata document (HTTPS base
   URL and a server that supports it) or dynamic registration; a missing app is a plain 400
   saying what the operator must configure, never a failure at the callback;
3. keeps a one-shot `state` for 10 minutes (sealed in the KV, `claims.put_sealed`) with the
   PKCE verifier and everything the callback needs, and returns the upstream authorize URL.

`complete_authorization` (GET /oauth/callback), for the signed-in user who started it:
- state unknown, expired or used → 400; another user's state → 403, not consumed;
- the state is consumed before anything else happens (a replayed callback finds nothing);
- a provider error (`error=access_denied`…) → a readable 400 (hosted quirk Q7);
- a mismatching `iss` (RFC 9207) → 400; then the code exchange (502 on refusal or junk);
- the connection is created in the chosen storage mode; `replace` deletes the old connection
  in the same transaction as the insert, so the swap happens only once the new one is stored;
- the secrets go into a one-time claim; the caller redirects to `/connections/{id}?claim=…`;
- a reconnect in place (DESIGN §15) instead stores the tokens in the existing row through
  `connections/reconnect.py` (same id, URL and key; no claim).
Nothing is stored unless every step succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bindify_appliance.billing import check_allowance
from bindify_appliance.connections.create import (
    check_key_storage_mode,
    create_connection,
    normalize_label,
)
from bindify_appliance.connections.reconnect import reconnect_in_place
from bindify_appliance.connections.shapes import public_connection, result_json
from bindify_appliance.crypto.credentials import Credentials, parse_credentials
from bindify_appliance.errors import (
    Conflict,
    DecryptError,
    Forbidden,
    HTTPFacingError,
    InvalidRequest,
    KeyringError,
    NotFound,
    OAuthError,
    OutboundError,
    UpstreamFailed,
)
from bindify_appliance.kv.base import MEMBER
from bindify_appliance.services import claims, oauth
from bindify_appliance.services.connect_services import ConnectServices, Forgetter, check_replace
from bindify_appliance.services.dcr import callback_url, client_metadata_url
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.services.discovery import discover
from bindify_appliance.store.models import Connection

__all__ = [
    "STATE_PREFIX",
    "STATE_TTL",
    "ConnectServices",
    "Forgetter",
    "complete_authorization",
    "public_connection",
    "result_json",
    "start_authorization",
]

log = logging.getLogger(__name__)

STATE_TTL: Final = 600.0
STATE_PREFIX: Final = "oauth_state:"


# -- authorize ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    authorize_url: str
    endpoint: oauth.TokenEndpoint
    scopes: tuple[str, ...]
    pkce: bool
    issuer: str | None
    extra: Mapping[str, str]


def _missing_app(service: ServiceDefinition, base_url: str) -> HTTPFacingError:
    env = "BINDIFY_" + service.id.upper().replace("-", "_")
    return InvalidRequest(
        f"{service.name} has no OAuth app configured. The operator must register one at "
        f"{service.name} with the callback URL {callback_url(base_url)} and set "
        f"{env}_CLIENT_ID and {env}_CLIENT_SECRET (or store them in the admin UI).",
        field="service",
    )


async def _static_secret(services: ConnectServices, service: ServiceDefinition) -> str | None:
    try:
        return await services.registry.client_secret(service.id, services.ctx.keys.keyring)
    except (KeyringError, DecryptError):
        raise Conflict(
            f"the stored OAuth client secret of {service.name} cannot be opened (its master "
            "key is missing); an administrator must enter it again"
        ) from None


async def _plan(services: ConnectServices, service: ServiceDefinition) -> _Plan:
    config = service.oauth
    assert config is not None
    base_url = services.ctx.settings.base_url
    redirect = callback_url(base_url)
    if not config.configured:
        raise _missing_app(service, base_url)
    issuer: str | None = None
    scopes = tuple(config.scopes)
    resource = service.mcp_url if config.resource else None
    authorize: str | None
    token_url: str | None
    registration: str | None
    if config.discover:
        found = await discover(services.outbound, service.mcp_url)
        server = found.server
        authorize, token_url = server.authorization_endpoint, server.token_endpoint
        registration, methods = server.registration_endpoint, server.token_auth_methods
        issuer = server.issuer if server.from_document else None
        scopes = scopes or found.scopes
        resource = found.resource if config.resource else None
        cimd = server.client_id_metadata_document_supported
    else:
        authorize, token_url = config.authorize_url, config.token_url
        registration, methods, cimd = config.register_url, (), False
    if not authorize or not token_url:
        raise _missing_app(service, base_url)
    client: oauth.ClientAuth
    if config.client_id and not config.dcr:
        secret = await _static_secret(services, service) if config.client_secret_source else None
        client = oauth.ClientAuth(
            config.client_id,
            method="client_secret_post" if secret else "none",
            client_secret=secret,
            kind="static",
        )
    elif cimd and client_metadata_url(base_url):
        client = oauth.ClientAuth(str(client_metadata_url(base_url)), kind="cimd")
    elif registration:
        client = await services.registrar.client_for(
            service.id,
            issuer=issuer or registration,
            registration_endpoint=registration,
            scopes=scopes,
            auth_methods=methods,
        )
    else:
        raise InvalidRequest(
            f"{service.name}'s authorization server offers no dynamic registration; an "
            f"administrator must give the service a client_id (callback URL {redirect})",
            field="service",
        )
    return _Plan(
        authorize_url=authorize,
        endpoint=oauth.TokenEndpoint(token_url, client, resource),
        scopes=scopes,
        pkce=config.pkce or config.discover,
        issuer=issuer,
        extra=config.extra_authorize_params,
    )


async def _oauth_service(services: ConnectServices, service_id: str) -> ServiceDefinition:
    service = await services.registry.get(service_id)
    if service is None:
        raise NotFound("no such service")
    if service.oauth is None:
        raise InvalidRequest(
            f"{service.name} does not connect with OAuth; create the connection with "
            "POST /api/v1/connections instead",
            field="service",
        )
    return service


async def start_authorization(
    services: ConnectServices,
    *,
    user_id: str,
    service_id: str,
    key_storage_mode: object = None,
    label: object = None,
    replace: object = None,
    reconnect: Connection | None = None,
    current: Credentials | None = None,
) -> str:
    """The upstream authorization URL for `user_id` to visit (state kept 10 minutes).

    `reconnect` (a row the caller owns, already checked with `check_current`): the callback
    gives that connection the new tokens in place. A zero-knowledge connection's `current`
    credentials ride in the state record, which is sealed under a key derived from the state
    value and stored under its hash (`claims.put_sealed`) — never in clear in the KV.

    Raises HTTPFacingError: 400 bad input or unconfigured app, 404 unknown service or
    `replace`, 409 unreadable stored secret, 502 discovery/registration/network failures.
    """
    ctx = services.ctx
    if reconnect is not None:
        service_id = reconnect.service
    mode = check_key_storage_mode(key_storage_mode)
    checked_label = None if label is None else normalize_label(label)
    replace_id = await check_replace(ctx, user_id, replace)
    service = await _oauth_service(services, service_id)
    if replace_id is None and reconnect is None:
        await check_allowance(ctx, user_id)  # 402 before the trip to the provider
    try:
        plan = await _plan(services, service)
    except OAuthError as exc:
        raise UpstreamFailed(f"{service.name}: {exc}") from None
    except OutboundError as exc:
        raise UpstreamFailed(
            f"could not reach {service.name}'s authorization server: {exc}"
        ) from None
    state = claims.new_token()
    verifier, challenge = oauth.pkce_pair() if plan.pkce else (None, None)
    client = plan.endpoint.client
    redirect = callback_url(ctx.settings.base_url)
    record = {
        "user_id": user_id,
        "service": service.id,
        "key_storage_mode": mode,
        "label": checked_label,
        "replace": replace_id,
        "verifier": verifier,
        "redirect_uri": redirect,
        "issuer": plan.issuer,
        "token_endpoint": plan.endpoint.url,
        "resource": plan.endpoint.resource,
        "client_id": client.client_id,
        "client_auth": client.method,
        "client_kind": client.kind,
        # A registered client's secret rides in the sealed state; a static app's is re-read.
        "client_secret": client.client_secret if client.kind == "dcr" else None,
    }
    if reconnect is not None:
        record["reconnect"] = reconnect.id
        record["key_storage_mode"] = reconnect.key_storage_mode
        record["credentials"] = current.text if current is not None else None
    # Started by a signed-in member: the member budget (DESIGN §9).
    await claims.put_sealed(ctx.kv, STATE_PREFIX, state, record, STATE_TTL, budget=MEMBER)
    return oauth.authorization_url(
        plan.authorize_url,
        client_id=client.client_id,
        redirect_uri=redirect,
        state=state,
        scopes=plan.scopes,
        code_challenge=challenge,
        resource=plan.endpoint.resource,
        extra=plan.extra,
    )


# -- callback -------------------------------------------------------------------------------


# The authorization error codes of RFC 6749 §4.1.2.1, each explained in our own words. The
# callback's query is attacker-controlled (anyone can send a signed-in member a crafted
# `/oauth/callback?error=…&error_description=…` link), so the page names only a code from this
# list and never shows `error_description`, `error_uri` or an unknown code.
_AUTHORIZATION_ERRORS: Final[dict[str, str]] = {
    "invalid_request": "{service} found the authorization request malformed",
    "unauthorized_client": "{service} does not allow this appliance to request authorization",
    "access_denied": "You declined the request at {service}",
    "unsupported_response_type": "{service} does not support this kind of authorization",
    "invalid_scope": "{service} did not accept the requested permissions",
    "server_error": "{service} had an internal error",
    "temporarily_unavailable": "{service} is unavailable for a moment",
}


def _provider_error(service_name: str, error: str, description: str | None) -> HTTPFacingError:
    """The page for an `error=` callback; `description` is deliberately never shown."""
    del description  # attacker-controlled text: see _AUTHORIZATION_ERRORS
    explained = _AUTHORIZATION_ERRORS.get(error)
    if error == "access_denied":
        message = f"You declined the request at {service_name}, so nothing was connected."
    elif explained is not None:
        message = (
            f"{explained.format(service=service_name)} ({error}). Nothing was connected; try again."
        )
    else:
        message = f"{service_name} reported an error. Nothing was connected; try again."
    return InvalidRequest(message)


_UNKNOWN_STATE = (
    "This sign-in link is unknown, expired (after 10 minutes) or was already used. "
    "Start connecting again from the Connections page."
)


async def _token_endpoint(
    services: ConnectServices, service: ServiceDefinition, record: Mapping[str, Any]
) -> oauth.TokenEndpoint:
    kind = record.get("client_kind")
    method = record.get("client_auth")
    secret = record.get("client_secret")
    if kind == "static" and method != "none":
        secret = await _static_secret(services, service)
        if not secret:
            raise _missing_app(service, services.ctx.settings.base_url)
    return oauth.TokenEndpoint(
        url=str(record["token_endpoint"]),
        client=oauth.ClientAuth(
            client_id=str(record["client_id"]),
            method=method if method in oauth.CLIENT_AUTH_METHODS else "none",
            client_secret=secret if method != "none" and isinstance(secret, str) else None,
            kind=kind if kind in ("static", "dcr", "cimd") else "static",
        ),
        resource=record.get("resource") or None,
    )


async def complete_authorization(
    services: ConnectServices,
    *,
    user_id: str,
    state: str | None,
    code: str | None,
    error: str | None = None,
    error_description: str | None = None,
    iss: str | None = None,
) -> tuple[str, str | None]:
    """Finish an OAuth connect: (the connection id, its claim token). See the module doc.

    A reconnect in place (the state names a connection) has no claim (None): the URL and key
    the member's clients hold stay the same.

    Raises HTTPFacingError (400/403/404/409/502) with a message for the member; nothing is
    stored unless this returns.
    """
    ctx = services.ctx
    record = await claims.peek_sealed(ctx.kv, STATE_PREFIX, state or "")
    if record is None:
        if error:
            raise _provider_error("The service", error, error_description)
        raise InvalidRequest(_UNKNOWN_STATE)
    if record.get("user_id") != user_id:
        raise Forbidden(
            "This sign-in was started by another account. Sign in as that account to finish it."
        )
    record = await claims.take_sealed(ctx.kv, STATE_PREFIX, state or "")
    if record is None or record.get("user_id") != user_id:  # consumed by a concurrent callback
        raise InvalidRequest(_UNKNOWN_STATE)
    service = await services.registry.get(str(record.get("service")))
    if service is None or service.oauth is None:
        raise NotFound("This service no longer exists on the appliance.")
    if error:
        raise _provider_error(service.name, error, error_description)
    if not code or len(code) > 4096:
        raise InvalidRequest(
            f"{service.name} sent no authorization code back. Nothing was connected."
        )
    issuer = record.get("issuer")
    if iss is not None and issuer is not None and iss != issuer:
        raise InvalidRequest(
            "The authorization answer came from an unexpected server (issuer mismatch). "
            "Nothing was connected."
        )
    endpoint = await _token_endpoint(services, service, record)
    try:
        tokens = await oauth.exchange_code(
            services.outbound,
            endpoint,
            code=code,
            redirect_uri=str(record["redirect_uri"]),
            code_verifier=record.get("verifier"),
        )
    except OAuthError as exc:
        raise UpstreamFailed(f"{service.name} did not issue tokens: {exc}") from None
    except OutboundError as exc:
        raise UpstreamFailed(f"could not reach {service.name}'s token endpoint: {exc}") from None
    payload = oauth.connection_payload(tokens, endpoint, ctx.clock.time())
    if record.get("reconnect"):
        carried = record.get("credentials")
        row = await reconnect_in_place(
            ctx,
            str(record["reconnect"]),
            user_id=user_id,
            payload=payload,
            current=parse_credentials(carried) if isinstance(carried, str) else None,
        )
        services.forget(row.id)
        return row.id, None
    created = await create_connection(
        ctx,
        user_id=user_id,
        service=service,
        auth_type="oauth",
        payload=payload,
        key_storage_mode=record.get("key_storage_mode"),
        label=record.get("label"),
        replace=record.get("replace"),
    )
    if record.get("replace"):
        services.forget(str(record["replace"]))
    if tokens.refresh_token is None and service.oauth.requires_refresh and tokens.expires_in:
        log.warning(
            "upstream issued an expiring token without a refresh token",
            extra={"service": service.id, "connection": created.connection.id},
        )
    token = await claims.create_claim(ctx.kv, user_id=user_id, result=result_json(created))
    return created.connection.id, token
