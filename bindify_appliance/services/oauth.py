"""OAuth 2.1 client pieces: PKCE, authorization URLs, token requests, token-set validation.

Everything the connect flow and the token-refresh work need to talk to an upstream's
authorization server, and nothing about users or storage:

- `pkce_pair()` — verifier (64 random bytes, base64url: 86 chars) and its S256 challenge;
- `authorization_url()` — the upstream authorize URL with `response_type=code`, `client_id`,
  `redirect_uri`, `state`, `scope` (space-joined, omitted when empty), `code_challenge` +
  `code_challenge_method=S256`, `resource` (RFC 8707, when the service sends it) and the
  service's extra parameters (e.g. `audience`);
- `exchange_code()` / `refresh_tokens()` — POST the token endpoint (form body, `Accept:
  application/json`), authenticating as the client says (`none`: client_id in the form;
  `client_secret_post`; `client_secret_basic`), never following redirects;
- `parse_token_response()` — JSON or form bodies, and OAuth errors even when delivered with
  HTTP 200 (GitHub's `error=bad_verification_code`), per reference §2.6.4;
- `validate_token_set()` — a usable bearer access token, sane `expires_in`, string refresh
  token and scope;
- `connection_payload()` / `endpoint_from_payload()` — the stored token payload and back.

The payload of an OAuth connection (sealed; `connections/secrets.py`) is a flat JSON object:
`access_token`, `refresh_token` ("" when none), `expires_at` (unix seconds or null = does not
expire), optional `token_type` and `scope`, and how to refresh it — `token_endpoint`,
`client_id`, `client_auth` (`none` | `client_secret_post` | `client_secret_basic`),
`client_kind` (`static` | `dcr` | `cimd`), `resource` (when sent) and, for dynamically
registered confidential clients only, `client_secret`. A static app's secret is never copied
into a connection: refresh reads it from the registry (the environment wins, admins rotate it).

Invariants:
- No token, code, verifier or client secret appears in an exception message; provider error
  descriptions are truncated to 200 printable characters with any such value redacted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from bindify_appliance.errors import OAuthError
from bindify_appliance.outbound import OutboundClient, OutboundResponse

__all__ = [
    "ClientAuth",
    "ClientAuthMethod",
    "TokenEndpoint",
    "TokenSet",
    "authorization_url",
    "connection_payload",
    "endpoint_from_payload",
    "exchange_code",
    "parse_token_response",
    "pkce_pair",
    "refresh_tokens",
    "validate_token_set",
]

ClientAuthMethod = Literal["none", "client_secret_post", "client_secret_basic"]
CLIENT_AUTH_METHODS: Final = ("none", "client_secret_post", "client_secret_basic")
MAX_TOKEN: Final = 16_384
MAX_EXPIRES_IN: Final = 10 * 365 * 24 * 3600
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_ERROR_CODE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class ClientAuth:
    """Who we are at a token endpoint."""

    client_id: str
    method: ClientAuthMethod = "none"
    client_secret: str | None = field(default=None, repr=False)
    kind: Literal["static", "dcr", "cimd"] = "static"

    def __post_init__(self) -> None:
        if self.method != "none" and not self.client_secret:
            raise ValueError("a client_secret_* method needs a client secret")


@dataclass(frozen=True)
class TokenEndpoint:
    """A token endpoint and how to call it."""

    url: str
    client: ClientAuth
    resource: str | None = None


@dataclass(frozen=True, repr=False)
class TokenSet:
    """A validated token-endpoint answer."""

    access_token: str
    refresh_token: str | None = None
    expires_in: int | None = None
    token_type: str | None = None
    scope: str | None = None
    refresh_token_expires_in: int | None = None

    def __repr__(self) -> str:
        return f"TokenSet(refresh={self.refresh_token is not None}, expires_in={self.expires_in})"


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge): 86-char verifier from 64 random bytes."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    base: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    scopes: Sequence[str] = (),
    code_challenge: str | None = None,
    resource: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The upstream authorize URL (parameters appended to any it already has)."""
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
    ]
    if scopes:
        params.append(("scope", " ".join(scopes)))
    if code_challenge is not None:
        params += [("code_challenge", code_challenge), ("code_challenge_method", "S256")]
    if resource is not None:
        params.append(("resource", resource))
    ours = {name for name, _ in params}
    params += [(k, v) for k, v in (extra or {}).items() if k not in ours]
    parts = urlsplit(base)
    existing = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    query = urlencode(existing + params, quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


# -- token responses ------------------------------------------------------------------------


def _clean(text: object, redact: Iterable[str] = (), limit: int = 200) -> str:
    out = str(text)
    for value in redact:
        if value and len(value) >= 4:
            out = out.replace(value, "[redacted]")
    out = _CONTROL.sub(" ", out).strip()
    return out[:limit] + ("…" if len(out) > limit else "")


def _error_code(value: object) -> str:
    text = str(value) if value is not None else ""
    return text if _ERROR_CODE.fullmatch(text) else "invalid_response"


def _oauth_error(body: Mapping[str, Any], status: int | None, redact: Iterable[str]) -> OAuthError:
    code = _error_code(body.get("error"))
    description = body.get("error_description")
    shown = f"{code}: {_clean(description, redact)}" if description else code
    return OAuthError(f"the authorization server refused: {shown}", error=code, status=status)


def _form(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return dict(parse_qsl(text.strip(), keep_blank_values=True))


def parse_token_response(
    status: int, content_type: str, body: bytes, *, redact: Iterable[str] = ()
) -> dict[str, Any]:
    """The token endpoint's answer as a dict of fields; `OAuthError` for errors and junk.

    Form bodies (by Content-Type, or when JSON fails) are accepted; an `error` without an
    `access_token` is an error even with HTTP 200; non-2xx is always an error.
    """
    redact = tuple(redact)
    parsed: dict[str, Any] | None = None
    if "application/x-www-form-urlencoded" in content_type.lower():
        parsed = _form(body)
    else:
        try:
            value = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            form = _form(body)
            if "access_token" in form or "error" in form:
                parsed = form
        else:
            if not isinstance(value, dict):
                raise OAuthError(
                    "the token endpoint's JSON answer is not an object",
                    error="invalid_response",
                    status=status,
                )
            parsed = value
    if not 200 <= status < 300:
        if parsed is not None and "error" in parsed:
            raise _oauth_error(parsed, status, redact)
        raise OAuthError(
            f"the token endpoint answered HTTP {status}", error="http_error", status=status
        )
    if parsed is None:
        shown = _clean(content_type or "none", limit=60)
        raise OAuthError(
            f"the token endpoint's answer could not be parsed (content type {shown})",
            error="invalid_response",
            status=status,
        )
    if "error" in parsed and not parsed.get("access_token"):
        raise _oauth_error(parsed, status, redact)
    return parsed


def _int_field(raw: Mapping[str, Any], name: str) -> int | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise OAuthError(f"{name} in the token answer is not a number")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise OAuthError(f"{name} in the token answer is not a number")
        value = int(value.strip())
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OAuthError(f"{name} in the token answer is not a number")
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise OAuthError(f"{name} in the token answer is not a positive number")
    return min(value, MAX_EXPIRES_IN)


def _token_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TOKEN and not _CONTROL.search(value)


def validate_token_set(raw: Mapping[str, Any]) -> TokenSet:
    """Check a parsed token answer; `OAuthError` (error `invalid_response`) when unusable."""
    token = raw.get("access_token")
    if not _token_text(token):
        raise OAuthError("the token answer has no usable access_token")
    assert isinstance(token, str)
    token_type = raw.get("token_type")
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() != "bearer"
    ):
        shown = _clean(token_type, limit=30)
        raise OAuthError(f"token_type {shown!r} is not supported (only Bearer)")
    refresh = raw.get("refresh_token")
    if refresh in (None, ""):
        refresh = None
    elif not _token_text(refresh):
        raise OAuthError("refresh_token in the token answer is not a usable string")
    scope = raw.get("scope")
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        scope = " ".join(scope)  # some servers send a list
    if scope is not None and (not isinstance(scope, str) or len(scope) > 4000):
        raise OAuthError("scope in the token answer is not a string")
    expires_in = _int_field(raw, "expires_in")
    return TokenSet(
        access_token=token,
        refresh_token=refresh if isinstance(refresh, str) else None,
        expires_in=expires_in or None,  # 0 or absent: does not expire
        token_type=token_type,
        scope=_CONTROL.sub(" ", scope) if isinstance(scope, str) and scope else None,
        refresh_token_expires_in=_int_field(raw, "refresh_token_expires_in"),
    )


# -- token requests -------------------------------------------------------------------------


async def _token_request(
    outbound: OutboundClient,
    endpoint: TokenEndpoint,
    form: dict[str, str],
    redact: Sequence[str],
) -> TokenSet:
    client = endpoint.client
    headers = {"Accept": "application/json"}
    if client.method == "client_secret_basic":
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret or '', safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form["client_id"] = client.client_id
        if client.method == "client_secret_post":
            form["client_secret"] = client.client_secret or ""
    if endpoint.resource:
        form["resource"] = endpoint.resource
    response: OutboundResponse = await outbound.post(
        endpoint.url, form=form, headers=headers, follow_redirects=False
    )
    secrets_in_play = [*redact, client.client_secret or ""]
    raw = parse_token_response(
        response.status, response.content_type, response.body, redact=secrets_in_play
    )
    return validate_token_set(raw)


async def exchange_code(
    outbound: OutboundClient,
    endpoint: TokenEndpoint,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
) -> TokenSet:
    """Redeem an authorization code. Raises OAuthError, OutboundError."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        form["code_verifier"] = code_verifier
    return await _token_request(outbound, endpoint, form, [code, code_verifier or ""])


async def refresh_tokens(
    outbound: OutboundClient, endpoint: TokenEndpoint, refresh_token: str
) -> TokenSet:
    """Use a refresh token. Raises OAuthError (e.g. error `invalid_grant`), OutboundError."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await _token_request(outbound, endpoint, form, [refresh_token])


# -- the stored payload ---------------------------------------------------------------------


def connection_payload(
    tokens: TokenSet,
    endpoint: TokenEndpoint,
    now: float,
    *,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The payload to seal for a connection (see the module docstring).

    `previous` (a refresh): a refresh token the server did not rotate is kept.
    """
    refresh = tokens.refresh_token
    if refresh is None and previous is not None:
        old = previous.get("refresh_token")
        refresh = old if isinstance(old, str) and old else None
    client = endpoint.client
    payload: dict[str, Any] = {
        "access_token": tokens.access_token,
        "refresh_token": refresh or "",
        "expires_at": int(now) + tokens.expires_in if tokens.expires_in else None,
        # When the token was issued: with `expires_at` it gives the token's lifetime, which
        # decides when a token shorter than the refresh window is due (services/refresh.py).
        "issued_at": int(now),
        "token_endpoint": endpoint.url,
        "client_id": client.client_id,
        "client_auth": client.method,
        "client_kind": client.kind,
    }
    if tokens.token_type:
        payload["token_type"] = tokens.token_type
    if tokens.scope:
        payload["scope"] = tokens.scope
    if endpoint.resource:
        payload["resource"] = endpoint.resource
    if client.kind == "dcr" and client.client_secret:
        payload["client_secret"] = client.client_secret
    return payload


def endpoint_from_payload(
    payload: Mapping[str, Any], *, static_secret: str | None = None
) -> TokenEndpoint | None:
    """How to refresh a stored payload; None when it does not say (older or foreign rows).

    `static_secret` is the registry's secret for `client_kind` "static" apps.
    """
    url, client_id = payload.get("token_endpoint"), payload.get("client_id")
    method = payload.get("client_auth", "none")
    kind = payload.get("client_kind", "static")
    if not isinstance(url, str) or not isinstance(client_id, str) or not url or not client_id:
        return None
    if method not in CLIENT_AUTH_METHODS or kind not in ("static", "dcr", "cimd"):
        return None
    secret = payload.get("client_secret") if kind == "dcr" else static_secret
    if method != "none" and not isinstance(secret, str):
        return None
    resource = payload.get("resource")
    return TokenEndpoint(
        url=url,
        client=ClientAuth(
            client_id=client_id,
            method=method,
            client_secret=secret if method != "none" and isinstance(secret, str) else None,
            kind=kind,
        ),
        resource=resource if isinstance(resource, str) and resource else None,
    )
