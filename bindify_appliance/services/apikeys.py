"""Connecting with an API key (or with nothing): assemble, validate upstream, check, create.

`connect_with_key` serves `POST /api/v1/connections` for services that take an API key or no
credential at all (DESIGN §5), in this order — every input check before any network call, and
nothing stored unless every step passed:

1. the body: storage mode, label, `replace` (must be the caller's), `auth_mode` and
   `application` (must be the service's);
2. the secret: the auth mode's fields assembled (Atlassian `personal`: e-mail + API token →
   `base64(email:token)`, or the token itself when it already is that), else a single field's
   value, else `api_key`;
3. the per-member limit on key checks (DESIGN §9): `BINDIFY_KEY_CHECKS_PER_MINUTE` (default
   10, 0 = off; a bulk import by an operator may raise it) checks that would reach the upstream
   per user per clock minute, counted with one atomic KV `incr` shared by
   every instance, BEFORE the check is sent (a guess counts whether it is right or wrong). Over
   it: 429 `rate_limited` with `retry_after` (the API's and the connect page's `Retry-After`),
   and nothing reaches the upstream — a member cannot use the appliance to test stolen keys;
4. validation against the upstream exactly as the registry describes (reference §7.4): the
   validation injection (the mode's, else the service's — never the proxy injection), the
   configured headers on top, and the status must equal `expect_status` — for an MCP
   `initialize` check of a legacy-SSE service, over that transport (`services/sse_check.py`:
   open the stream, post to its `endpoint`, read the answer). A rejection is 422
   `invalid_api_key` whose message shows the upstream's answer truncated, with every form of
   the secret redacted, and an orphan `api_key_validation/upstream_rejected` event (metadata
   only: status and service — hosted quirk Q18 kept the body; we keep none);
5. the advisory application check (Atlassian Jira/Confluence/Compass): an MCP handshake with the
   key, `tools/list`, and at least one tool name must contain the application id; a mismatch is
   422 `application_mismatch`, any failure of the check itself is ignored;
6. the connection, in the chosen storage mode; `replace` swaps in the same transaction.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

from bindify_appliance.connections.create import (
    CreatedConnection,
    check_key_storage_mode,
    create_connection,
    normalize_label,
)
from bindify_appliance.context import AppContext
from bindify_appliance.errors import (
    ApplicationMismatch,
    InvalidApiKey,
    InvalidRequest,
    NotFound,
    OutboundError,
    RateLimited,
    UnknownField,
    UpstreamFailed,
)
from bindify_appliance.outbound import OutboundClient, OutboundResponse
from bindify_appliance.services.connect_services import ConnectServices, check_replace
from bindify_appliance.services.definitions import (
    ApiKeyConfig,
    AuthMode,
    Injection,
    ServiceDefinition,
)
from bindify_appliance.services.mcp_answers import rpc_result
from bindify_appliance.services.sse_check import check_over_sse
from bindify_appliance.store.events import record_event

__all__ = [
    "MCP_PROTOCOL_VERSION",
    "assemble_secret",
    "check_key_limit",
    "connect_with_key",
    "list_tools",
    "validate_key",
]

log = logging.getLogger(__name__)

MCP_PROTOCOL_VERSION: Final = "2025-06-18"
SHOWN_BODY: Final = 300
MAX_FIELD: Final = 4096
_ACCEPT_BOTH: Final = "application/json, text/event-stream"
_KEY_CHECK_WINDOW: Final = 60


# -- the secret -----------------------------------------------------------------------------


def _atlassian_basic(values: Mapping[str, str]) -> str:
    email, token = values.get("email", ""), values.get("token", "")
    if not email or not token:
        raise InvalidRequest("fields.email and fields.token are required", field="fields")
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        decoded = ""
    if decoded.startswith(email + ":"):
        return token  # already the Basic credential
    return base64.b64encode(f"{email}:{token}".encode()).decode("ascii")


_ASSEMBLERS: Final = {"atlassian_basic": _atlassian_basic}


def assemble_secret(
    api: ApiKeyConfig, mode: AuthMode | None, api_key: object, fields: object
) -> str:
    """The upstream secret from `api_key` / `fields` (module doc step 2); 400 when missing."""
    expected = mode.fields if mode is not None and mode.fields else api.fields
    if fields is not None:
        if not isinstance(fields, dict):
            raise InvalidRequest("fields must be an object of strings", field="fields")
        known = {f.id for f in expected}
        for name, value in fields.items():
            if name not in known:
                shown = name if isinstance(name, str) and name.isidentifier() else "?"
                raise UnknownField(f"unknown field fields.{shown[:40]}", field="fields")
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD:
                raise InvalidRequest(
                    f"fields.{name} must be a non-empty string", field=f"fields.{name}"
                )
        values = {k: v.strip() for k, v in fields.items()}
        if mode is not None and mode.assemble:
            return _ASSEMBLERS[mode.assemble](values)
        missing = [f.id for f in expected if f.id not in values]
        if missing:
            raise InvalidRequest(f"fields.{missing[0]} is required", field=f"fields.{missing[0]}")
        if len(values) != 1:
            raise InvalidRequest("this service takes a single key field", field="fields")
        return str(next(iter(values.values())))
    if isinstance(api_key, str) and api_key.strip():
        if len(api_key) > MAX_FIELD:
            raise InvalidRequest("api_key is too long", field="api_key")
        return api_key.strip()
    if api_key is not None:
        raise InvalidRequest("api_key must be a non-empty string", field="api_key")
    raise InvalidRequest("send api_key (or fields) with the credential", field="api_key")


# -- validation -----------------------------------------------------------------------------


def _with_query(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    joiner = "&" if "?" in url else "?"
    return url + joiner + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())


def _initialize_body(request_id: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bindify-appliance", "version": "1"},
        },
    }


def _redacted_excerpt(text: str, secrets: Sequence[str]) -> str:
    for value in sorted(filter(None, secrets), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "[redacted]")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text[:SHOWN_BODY] + ("…" if len(text) > SHOWN_BODY else "")


def _secret_forms(secret: str, fields: object) -> list[str]:
    forms = [secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()]
    if isinstance(fields, dict):
        forms += [v for v in fields.values() if isinstance(v, str)]
    return forms


async def validate_key(
    outbound: OutboundClient,
    service: ServiceDefinition,
    secret: str,
    mode: AuthMode | None,
) -> OutboundResponse | None:
    """Check the key upstream; the response when it was NOT accepted, None when it was.

    Raises OutboundError when the upstream cannot be reached.
    """
    api = service.api_key
    assert api is not None
    rule = api.validate
    if rule is None:
        return None
    injection: Injection = (mode.injection if mode is not None else None) or api.injection
    url = _with_query(rule.url or service.mcp_url, injection.query_params(secret))
    headers = injection.headers(secret)
    headers.update(rule.headers)
    if rule.mcp_initialize and service.transport == "sse":
        # A legacy server takes no POST on its stream URL: check over its own transport.
        return await check_over_sse(
            outbound, url, headers, injection.query_params(secret), _initialize_body()
        )
    body: bytes | None = None
    if rule.mcp_initialize:
        body = json.dumps(_initialize_body()).encode()
    elif rule.body is not None:
        body = rule.body.encode("utf-8")
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Accept", _ACCEPT_BOTH)
    response = await outbound.request(rule.method, url, headers=headers, body=body)
    return None if response.status == rule.expect_status else response


async def check_key_limit(ctx: AppContext, user_id: str) -> None:
    """Count one key check for `user_id`; 429 `rate_limited` when over the limit (step 3).

    A fixed window per clock minute on the shared KV (every instance counts together). The key
    holds the user id only, never the key being checked.
    """
    limit = ctx.settings.key_checks_per_minute
    if limit <= 0:
        return
    now = ctx.clock.time()
    window = int(now // _KEY_CHECK_WINDOW)
    count = await ctx.kv.incr(f"ratelimit:keycheck:{user_id}:{window}", ttl=_KEY_CHECK_WINDOW)
    if count > limit:
        retry = max(1, math.ceil((window + 1) * _KEY_CHECK_WINDOW - now))
        raise RateLimited(
            f"Too many API keys checked in the last minute (at most {limit} a minute). "
            f"Wait {retry} s and try again.",
            retry_after=retry,
        )


# -- the application check (an MCP handshake) -----------------------------------------------


async def list_tools(
    outbound: OutboundClient, mcp_url: str, auth_headers: Mapping[str, str]
) -> list[str]:
    """Tool names of the MCP server at `mcp_url` (initialize, initialized, tools/list).

    Raises OutboundError or ValueError when the handshake fails.
    """
    headers = {**auth_headers, "Accept": _ACCEPT_BOTH, "Content-Type": "application/json"}
    first = await outbound.post(mcp_url, headers=headers, json_body=_initialize_body())
    if first.status != 200:
        raise ValueError(f"MCP initialize answered HTTP {first.status}")
    version = rpc_result(first, 1).get("protocolVersion")
    session = first.headers.get("Mcp-Session-Id")
    if isinstance(version, str):
        headers["MCP-Protocol-Version"] = version
    if session:
        headers["Mcp-Session-Id"] = session
    try:
        await outbound.post(
            mcp_url,
            headers=headers,
            json_body={"jsonrpc": "2.0", "method": "notifications/initialized"},
        )
        listed = await outbound.post(
            mcp_url,
            headers=headers,
            json_body={"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}},
        )
        if listed.status != 200:
            raise ValueError(f"MCP tools/list answered HTTP {listed.status}")
        tools = rpc_result(listed, 2).get("tools")
    finally:
        if session:
            with contextlib.suppress(OutboundError):
                await outbound.request("DELETE", mcp_url, headers=headers)
    if not isinstance(tools, list):
        raise ValueError("tools/list returned no tool list")
    return [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]


async def _check_application(
    outbound: OutboundClient,
    service: ServiceDefinition,
    secret: str,
    mode_id: str | None,
    application: str,
) -> None:
    api = service.api_key
    assert api is not None
    injection = api.proxy_injection_for(mode_id)
    label = next((a.label for a in api.applications if a.id == application), application)
    try:
        names = await list_tools(
            outbound,
            _with_query(service.mcp_url, injection.query_params(secret)),
            injection.headers(secret),
        )
    except (OutboundError, ValueError):
        # Advisory only: a check that cannot run never blocks the member.
        log.info("application check skipped", extra={"service": service.id})
        return
    if not any(application.lower() in name.lower() for name in names):
        raise ApplicationMismatch(
            f"This key doesn't appear to have access to {label}: none of the "
            f"{len(names)} tools {service.name} offers with it mentions it. Choose another "
            "application, or send skip_application_validation: true.",
            field="application",
        )


# -- the whole step -------------------------------------------------------------------------


async def connect_with_key(
    services: ConnectServices, *, user_id: str, body: Mapping[str, Any]
) -> CreatedConnection:
    """Create an API-key (or auth `none`) connection from a POST /api/v1/connections body.

    Raises HTTPFacingError: 400 bad input, 404 unknown service/`replace`, 422
    `invalid_api_key` / `application_mismatch`, 502 upstream unreachable.
    """
    ctx = services.ctx
    service = await services.registry.get(str(body.get("service", "")))
    if service is None:
        raise NotFound("no such service", field="service")
    mode_name = check_key_storage_mode(body.get("key_storage_mode"))
    label = None if body.get("label") is None else normalize_label(body.get("label"))
    replace = await check_replace(ctx, user_id, body.get("replace"))
    if service.api_key is None:
        if not service.no_auth:
            raise InvalidRequest(
                f"{service.name} connects with OAuth: "
                f"POST /api/v1/connections/{service.id}/authorize",
                field="service",
            )
        extra = [k for k in ("api_key", "fields", "auth_mode", "application") if k in body]
        if extra:
            raise InvalidRequest(f"{service.name} takes no credential", field=extra[0])
        created = await create_connection(
            ctx,
            user_id=user_id,
            service=service,
            auth_type="none",
            key_storage_mode=mode_name,
            label=label,
            replace=replace,
        )
    else:
        payload, auth_mode_id, application = await checked_key(services, service, user_id, body)
        created = await create_connection(
            ctx,
            user_id=user_id,
            service=service,
            auth_type="api_key",
            payload=payload,
            key_storage_mode=mode_name,
            label=label,
            auth_mode=auth_mode_id,
            application=application,
            replace=replace,
        )
    if replace is not None:
        services.forget(replace)  # the replaced connection is gone: drop it here at once
    return created


async def checked_key(
    services: ConnectServices, service: ServiceDefinition, user_id: str, body: Mapping[str, Any]
) -> tuple[dict[str, str], str | None, str | None]:
    """Steps 2-5 for an API-key service: (payload, auth mode id, application), key accepted.

    Shared by connecting and by reconnecting in place (`connections/reconnect.py`).
    """
    ctx = services.ctx
    api = service.api_key
    assert api is not None
    auth_mode = body.get("auth_mode")
    mode: AuthMode | None = None
    if auth_mode is not None:
        if not api.auth_modes:
            raise InvalidRequest(f"{service.name} has no auth modes", field="auth_mode")
        mode = api.mode(auth_mode) if isinstance(auth_mode, str) else None
        if mode is None:
            raise InvalidRequest("unknown auth_mode for this service", field="auth_mode")
    application = body.get("application")
    if application is not None and (
        not isinstance(application, str) or application not in {a.id for a in api.applications}
    ):
        raise InvalidRequest("unknown application for this service", field="application")
    secret = assemble_secret(api, mode, body.get("api_key"), body.get("fields"))
    if api.validate is not None:
        await check_key_limit(ctx, user_id)
    try:
        rejected = await validate_key(services.outbound, service, secret, mode)
    except OutboundError as exc:
        raise UpstreamFailed(f"could not check the key with {service.name}: {exc}") from None
    if rejected is not None:
        await ctx.store.run(
            lambda: record_event(
                None,
                user_id=user_id,
                event_type="api_key_validation",
                category="upstream_rejected",
                detail=f"service:{service.id}, status:{rejected.status}",
                upstream_status=rejected.status if 100 <= rejected.status <= 599 else None,
                now=ctx.clock.now(),
            )
        )
        said = _redacted_excerpt(rejected.text, _secret_forms(secret, body.get("fields")))
        verdict = (
            f"{service.name} rejected the key (HTTP {rejected.status})"
            if rejected.status in (401, 403)
            else f"{service.name} answered HTTP {rejected.status} while checking the key"
        )
        raise InvalidApiKey(
            f"{verdict}. Check the key and try again." + (f" It said: {said}" if said else ""),
            field="api_key",
        )
    if (
        application
        and application != "other"
        and body.get("skip_application_validation") is not True
    ):
        await _check_application(
            services.outbound, service, secret, mode.id if mode else None, application
        )
    return {"api_key": secret}, mode.id if mode else None, application
