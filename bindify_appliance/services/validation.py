"""Validation of admin API bodies that add or change a service (DESIGN §5), before any write.

A service an admin adds is `{id, name, mcp_url, auth, transport?}`. `parse_service_body` checks
such a body and returns a normalised `ServiceSpec` (`store/services.py`), which the store's units
of work then write; `parse_service_patch` and `parse_builtin_patch` do the same for a PATCH. The
`auth` object is normalised here exactly as `auth_json` stores it, minus the OAuth client
credentials (the client id and the plaintext secret travel beside it for the caller to store and
seal).

Rules:
- ids are slugs `^[a-z][a-z0-9-]{1,31}$`; built-in ids (`config.BUILTIN_SERVICE_IDS`) are reserved,
  and so is the `canary-` prefix: only the payload canary's endpoint (`api/ops.py`) makes those.
- URLs are checked with the one outbound policy (`outbound_policy.destination_refusal`,
  DESIGN §9): absolute `https://` (plain `http://`, `localhost` and loopback/private/link-local/
  CGNAT IP literals, embedded IPv4 included, only with `BINDIFY_ALLOW_PRIVATE_UPSTREAMS`); a
  non-canonical numeric host (`0x7f.1`, `127.1`, `2130706433`), an unspecified, multicast or
  cloud-metadata address is refused whatever the setting. Host names that merely resolve to
  refused addresses are the connect-time guard's business (the same policy, at resolve and
  connect time).
- AUTH is one of `{"type": "none"}`, `{"type": "api_key", "header": H, "prefix"?: P}`,
  `{"type": "api_key", "query": Q}`, `{"type": "oauth", ...optional endpoints and client}`.

Invariants:
- Every bad body raises `HTTPFacingError` (400, `invalid_request` with `field`, or `unknown_field`)
  before anything is written; messages name the field, never echo a value.
- Pure functions: no database, no network, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from bindify_appliance.config import BUILTIN_SERVICE_IDS
from bindify_appliance.errors import HTTPFacingError, InvalidRequest, UnknownField
from bindify_appliance.header_names import NOT_INJECTABLE
from bindify_appliance.outbound_policy import destination_refusal
from bindify_appliance.store.models import TRANSPORTS
from bindify_appliance.store.services import (
    AUTH_KINDS,
    CANARY_ID_PREFIX,
    KEEP,
    SERVICE_ID_RE,
    KeepType,
    ServiceSpec,
)

__all__ = [
    "MAX_NAME",
    "MAX_URL",
    "check_url",
    "parse_builtin_patch",
    "parse_service_body",
    "parse_service_patch",
]

MAX_URL = 2048
MAX_NAME = 100

_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_QUERY_NAME_RE: Final = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_SCOPE_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,200}")  # RFC 6749 scope-token
_PREFIX_RE: Final = re.compile(r"[\x20-\x7e]{0,64}")
_SAFE_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}")
# Authorization-request parameters the OAuth client sets itself; extras may not override them.
_RESERVED_AUTHORIZE_PARAMS: Final = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "resource",
    }
)


def _unknown(prefix: str, names: set[str]) -> HTTPFacingError:
    shown = sorted(n for n in names if _SAFE_NAME_RE.fullmatch(n))
    where = f"{prefix}{shown[0]}" if shown else prefix.rstrip(".") or "body"
    return UnknownField(f"unknown field {where}", field=where)


def _text(value: object, field_name: str, *, max_len: int) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field_name} must be a string", field=field_name)
    text = value.strip()
    if not text or len(text) > max_len:
        raise InvalidRequest(f"{field_name} must be 1-{max_len} characters", field=field_name)
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise InvalidRequest(f"{field_name} must not contain control characters", field=field_name)
    return text


def check_url(value: object, field_name: str, *, allow_private: bool) -> str:
    """An absolute upstream URL, checked against the outbound policy (see the module rules)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field_name} must be a string", field=field_name)
    text = value.strip()
    if not text or len(text) > MAX_URL:
        raise InvalidRequest(
            f"{field_name} must be a URL of at most {MAX_URL} characters", field=field_name
        )
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in text) or not text.isascii():
        raise InvalidRequest(
            f"{field_name} must not contain spaces or non-ASCII characters", field=field_name
        )
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a bad port
    except ValueError:
        raise InvalidRequest(f"{field_name} is not a valid URL", field=field_name) from None
    del port
    if parts.fragment:
        raise InvalidRequest(f"{field_name} must not contain a fragment", field=field_name)
    reason = destination_refusal(text, allow_private=allow_private)
    if reason is not None:
        # The reason names the rule, never the URL (which may carry a credential).
        hint = ""
        if not allow_private and destination_refusal(text, allow_private=True) is None:
            hint = " (allowed only with BINDIFY_ALLOW_PRIVATE_UPSTREAMS=true)"
        elif "numeric host" in reason:
            hint = " (write an IPv4 address as four decimal numbers, a.b.c.d)"
        raise InvalidRequest(f"{field_name} is refused: {reason}{hint}", field=field_name)
    return text


def _check_id(value: object) -> str:
    if not isinstance(value, str) or not SERVICE_ID_RE.fullmatch(value):
        raise InvalidRequest(
            "id must match ^[a-z][a-z0-9-]{1,31}$ (lower-case letters, digits, '-')", field="id"
        )
    if value in BUILTIN_SERVICE_IDS:
        raise InvalidRequest("id is reserved for a built-in service", field="id")
    if value.startswith(CANARY_ID_PREFIX):
        # A one-off loopback allowance is tied to such an id (ops/canary_allowance.py).
        raise InvalidRequest(
            f"ids starting with {CANARY_ID_PREFIX!r} are reserved for the canary", field="id"
        )
    return value


def _check_transport(value: object) -> str:
    if value not in TRANSPORTS:
        raise InvalidRequest("transport must be 'streamable-http' or 'sse'", field="transport")
    return str(value)


def _parse_api_key_auth(auth: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(auth) - {"type", "header", "prefix", "query"}
    if extra:
        raise _unknown("auth.", extra)
    header, query = auth.get("header"), auth.get("query")
    if (header is None) == (query is None):
        raise InvalidRequest(
            "api_key auth needs exactly one of header or query", field="auth.header"
        )
    if header is not None:
        if not isinstance(header, str) or not _TOKEN_RE.fullmatch(header):
            raise InvalidRequest("auth.header must be an HTTP header name", field="auth.header")
        if header.lower() in NOT_INJECTABLE:
            raise InvalidRequest(
                "auth.header names a header the proxy manages itself", field="auth.header"
            )
        prefix = auth.get("prefix", "")
        if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
            raise InvalidRequest(
                "auth.prefix must be at most 64 printable ASCII characters", field="auth.prefix"
            )
        return {"type": "api_key", "header": header, "prefix": prefix}
    if "prefix" in auth:
        raise InvalidRequest("auth.prefix applies only to header injection", field="auth.prefix")
    if not isinstance(query, str) or not _QUERY_NAME_RE.fullmatch(query):
        raise InvalidRequest("auth.query must be a query parameter name", field="auth.query")
    return {"type": "api_key", "query": query}


def _parse_oauth_auth(
    auth: Mapping[str, Any], *, allow_private: bool
) -> tuple[dict[str, Any], str | None, str | KeepType | None]:
    allowed = {
        "type",
        "authorization_url",
        "token_url",
        "registration_url",
        "client_id",
        "client_secret",
        "scopes",
        "resource",
        "extra_authorize_params",
    }
    extra = set(auth) - allowed
    if extra:
        raise _unknown("auth.", extra)
    out: dict[str, Any] = {"type": "oauth"}
    for name in ("authorization_url", "token_url", "registration_url"):
        if auth.get(name) is not None:
            out[name] = check_url(auth[name], f"auth.{name}", allow_private=allow_private)
    if ("authorization_url" in out) != ("token_url" in out):
        raise InvalidRequest(
            "give both auth.authorization_url and auth.token_url, or neither (discovery)",
            field="auth.token_url",
        )
    scopes = auth.get("scopes", [])
    if not isinstance(scopes, list) or len(scopes) > 50:
        raise InvalidRequest(
            "auth.scopes must be a list of at most 50 scope strings", field="auth.scopes"
        )
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE_RE.fullmatch(scope):
            raise InvalidRequest(
                "each scope must be a non-empty string without spaces", field="auth.scopes"
            )
    out["scopes"] = list(dict.fromkeys(scopes))
    resource = auth.get("resource", True)
    if not isinstance(resource, bool):
        raise InvalidRequest("auth.resource must be true or false", field="auth.resource")
    out["resource"] = resource
    params = auth.get("extra_authorize_params", {})
    if not isinstance(params, dict) or len(params) > 20:
        raise InvalidRequest(
            "must be an object of at most 20 strings", field="auth.extra_authorize_params"
        )
    for key, value in params.items():
        if not isinstance(value, str) or not _QUERY_NAME_RE.fullmatch(key) or len(value) > 500:
            raise InvalidRequest(
                "must map parameter names to strings", field="auth.extra_authorize_params"
            )
        if key in _RESERVED_AUTHORIZE_PARAMS:
            raise InvalidRequest(
                "must not set a parameter the client sets", field="auth.extra_authorize_params"
            )
    out["extra_authorize_params"] = dict(params)
    client_id = auth.get("client_id")
    if client_id is not None:
        client_id = _text(client_id, "auth.client_id", max_len=500)
    secret: str | KeepType | None = KEEP
    if "client_secret" in auth:
        raw = auth["client_secret"]
        if raw is not None and (not isinstance(raw, str) or not raw or len(raw) > 2000):
            raise InvalidRequest(
                "auth.client_secret must be a non-empty string", field="auth.client_secret"
            )
        secret = raw
    if client_id is None and isinstance(secret, str):
        raise InvalidRequest("auth.client_secret needs auth.client_id", field="auth.client_secret")
    return out, client_id, secret


def _parse_auth(
    value: object, *, allow_private: bool
) -> tuple[dict[str, Any], str | None, str | KeepType | None]:
    if not isinstance(value, dict):
        raise InvalidRequest("auth must be an object with a type", field="auth")
    kind = value.get("type")
    if kind not in AUTH_KINDS:
        raise InvalidRequest(
            "auth.type must be one of 'none', 'api_key', 'oauth'", field="auth.type"
        )
    if kind == "none":
        extra = set(value) - {"type"}
        if extra:
            raise _unknown("auth.", extra)
        return {"type": "none"}, None, None
    if kind == "api_key":
        return _parse_api_key_auth(value), None, None
    return _parse_oauth_auth(value, allow_private=allow_private)


_BODY_FIELDS: Final = frozenset({"id", "name", "mcp_url", "auth", "transport"})


def parse_service_body(body: object, *, allow_private: bool) -> ServiceSpec:
    """Validate a POST body for a new admin-added service."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    extra = set(body) - _BODY_FIELDS
    if extra:
        raise _unknown("", extra)
    for required in ("id", "name", "mcp_url", "auth"):
        if required not in body:
            raise InvalidRequest(f"{required} is required", field=required)
    service_id = _check_id(body["id"])
    name = _text(body["name"], "name", max_len=MAX_NAME)
    mcp_url = check_url(body["mcp_url"], "mcp_url", allow_private=allow_private)
    transport = _check_transport(body.get("transport", "streamable-http"))
    auth, client_id, secret = _parse_auth(body["auth"], allow_private=allow_private)
    return ServiceSpec(
        id=service_id,
        name=name,
        mcp_url=mcp_url,
        transport=transport,
        auth=auth,
        client_id=client_id,
        client_secret=None if isinstance(secret, KeepType) else secret,
    )


def parse_service_patch(body: object, current: ServiceSpec, *, allow_private: bool) -> ServiceSpec:
    """Validate a PATCH of an admin-added service; `auth`, when given, replaces the whole object.

    An OAuth `auth` without `client_secret` keeps the stored secret (`client_secret` KEEP), so an
    admin can change scopes without re-entering it; `"client_secret": null` clears it.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    extra = set(body) - _BODY_FIELDS
    if extra:
        raise _unknown("", extra)
    if "id" in body and body["id"] != current.id:
        raise InvalidRequest("id cannot be changed", field="id")
    name = _text(body["name"], "name", max_len=MAX_NAME) if "name" in body else current.name
    mcp_url = (
        check_url(body["mcp_url"], "mcp_url", allow_private=allow_private)
        if "mcp_url" in body
        else current.mcp_url
    )
    transport = _check_transport(body["transport"]) if "transport" in body else current.transport
    auth, client_id = dict(current.auth), current.client_id
    secret: str | KeepType | None = KEEP
    if "auth" in body:
        auth, client_id, secret = _parse_auth(body["auth"], allow_private=allow_private)
        if auth["type"] != "oauth":
            client_id, secret = None, None
    return ServiceSpec(current.id, name, mcp_url, transport, auth, client_id, secret)


def parse_builtin_patch(body: object) -> tuple[str | KeepType | None, str | KeepType | None]:
    """A built-in accepts only OAuth app credentials: `{"auth": {"client_id"?, "client_secret"?}}`.

    Returns (client_id, client_secret), each KEEP when absent; null clears.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    extra = set(body) - {"auth"}
    if extra:
        raise InvalidRequest(
            "a built-in service accepts only OAuth app credentials (auth.client_id, "
            "auth.client_secret)",
            field=sorted(extra)[0] if all(_SAFE_NAME_RE.fullmatch(n) for n in extra) else "body",
        )
    auth = body.get("auth")
    if not isinstance(auth, dict):
        raise InvalidRequest(
            "auth must be an object with client_id and/or client_secret", field="auth"
        )
    extra = set(auth) - {"client_id", "client_secret"}
    if extra:
        raise _unknown("auth.", extra)
    client_id: str | KeepType | None = KEEP
    secret: str | KeepType | None = KEEP
    if "client_id" in auth:
        client_id = (
            None
            if auth["client_id"] is None
            else _text(auth["client_id"], "auth.client_id", max_len=500)
        )
    if "client_secret" in auth:
        raw = auth["client_secret"]
        if raw is not None and (not isinstance(raw, str) or not raw or len(raw) > 2000):
            raise InvalidRequest(
                "auth.client_secret must be a non-empty string", field="auth.client_secret"
            )
        secret = raw
    return client_id, secret
