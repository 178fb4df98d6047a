"""Revoking one connection's grant at its provider, for offboarding (DESIGN §15).

`revoke_at_provider(services, row)` → `Revocation(result, link, detail)` where `result` is
- `revoked` — a managed OAuth connection whose tokens the provider accepted to revoke: RFC 7009
  at the `revocation_endpoint` its authorization server advertises (discovered services) or the
  built-in's `revoke_url`; the refresh token first (RFC 7009 §2.1: revoking it ends the grant),
  then the access token; GitHub's own call (`DELETE /applications/{client_id}/grant`, client
  credentials in Basic) for `revoke_url == "github"`;
- `not_supported` — the provider offers no revocation call (link: its authorized-apps page);
- `zero_knowledge` — the server cannot open the tokens without the member's URL (link);
- `api_key` — an API key only the provider can revoke (link);
- `nothing_to_revoke` — auth `none`: no credential exists at the provider;
- `failed` — the provider refused, was unreachable, or the tokens cannot be opened (the caller
  keeps the connection, disabled, for a retry).

Invariants: no token or client secret appears in `detail` (it says only the HTTP status or the
kind of failure); every call goes through the SSRF-guarded outbound client without following
redirects.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from bindify_appliance.connections.secrets import open_payload
from bindify_appliance.errors import DecryptError, KeyringError, OAuthError, OutboundError
from bindify_appliance.services import oauth
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.services.discovery import discover
from bindify_appliance.store.models import Connection

__all__ = ["RESULTS", "Revocation", "revoke_at_provider"]

RESULTS: Final = (
    "revoked",
    "not_supported",
    "zero_knowledge",
    "api_key",
    "nothing_to_revoke",
    "failed",
)
GITHUB: Final = "github"
_GITHUB_API: Final = "https://api.github.com"


@dataclass(frozen=True)
class Revocation:
    result: str
    link: str | None = None
    detail: str | None = None


async def _revocation_endpoint(services: ConnectServices, service: ServiceDefinition) -> str | None:
    config = service.oauth
    if config is None:
        return None
    if config.revoke_url:
        return config.revoke_url
    if config.discover:
        found = await discover(services.outbound, service.mcp_url)
        return found.server.revocation_endpoint
    return None


def _client_auth(client: oauth.ClientAuth, form: dict[str, str]) -> dict[str, str]:
    """Authenticate at the revocation endpoint as at the token endpoint (RFC 7009 §2.1)."""
    headers = {"Accept": "application/json"}
    if client.method == "client_secret_basic":
        pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret or '', safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form["client_id"] = client.client_id
        if client.method == "client_secret_post":
            form["client_secret"] = client.client_secret or ""
    return headers


async def _rfc7009(
    services: ConnectServices, url: str, client: oauth.ClientAuth, payload: dict[str, Any]
) -> str | None:
    """None when every token was revoked; otherwise a secret-free reason."""
    for hint in ("refresh_token", "access_token"):
        token = payload.get(hint)
        if not isinstance(token, str) or not token:
            continue
        form = {"token": token, "token_type_hint": hint}
        headers = _client_auth(client, form)
        answer = await services.outbound.post(
            url, form=form, headers=headers, follow_redirects=False
        )
        if answer.status == 400 and b"unsupported_token_type" in answer.body:
            continue  # this server revokes only the other kind (RFC 7009 §2.2.1)
        if answer.status != 200:
            return f"the provider answered HTTP {answer.status}"
    return None


async def _github(client: oauth.ClientAuth, services: ConnectServices, token: str) -> str | None:
    if not client.client_secret:
        return "no OAuth app secret to authenticate the revocation"
    pair = f"{client.client_id}:{client.client_secret}".encode()
    answer = await services.outbound.request(
        "DELETE",
        f"{_GITHUB_API}/applications/{quote(client.client_id, safe='')}/grant",
        headers={
            "Authorization": "Basic " + base64.b64encode(pair).decode("ascii"),
            "Accept": "application/vnd.github+json",
            "User-Agent": "Bindify",
        },
        json_body={"access_token": token},
        follow_redirects=False,
    )
    # 404: the token is already invalid, so the grant is gone too.
    return None if answer.status in (204, 404) else f"GitHub answered HTTP {answer.status}"


async def revoke_at_provider(services: ConnectServices, row: Connection) -> Revocation:
    """See the module docstring."""
    service = await services.registry.get(row.service)
    link = service.authorized_apps_url if service is not None else None
    if row.auth_type == "none":
        return Revocation("nothing_to_revoke")
    if row.auth_type == "api_key":
        return Revocation("api_key", link, "revoke the key at the provider")
    if row.key_storage_mode == "zero_knowledge":
        return Revocation(
            "zero_knowledge", link, "the tokens open only with the member's URL: revoke there"
        )
    if service is None:
        return Revocation("not_supported", None, "the service no longer exists here")
    try:
        endpoint_url = await _revocation_endpoint(services, service)
    except (OAuthError, OutboundError):
        return Revocation("failed", link, "the provider's metadata could not be read")
    if not endpoint_url:
        return Revocation("not_supported", link, "the provider offers no revocation")
    keyring = services.ctx.keys.keyring
    try:
        payload = open_payload(row, None, keyring)
        static = await services.registry.client_secret(service.id, keyring)
    except (DecryptError, KeyringError):
        return Revocation("failed", link, "the stored tokens cannot be opened")
    token_endpoint = oauth.endpoint_from_payload(payload, static_secret=static)
    if token_endpoint is None:
        return Revocation("failed", link, "the stored tokens do not say which client holds them")
    try:
        if endpoint_url == GITHUB:
            problem = await _github(token_endpoint.client, services, str(payload["access_token"]))
        else:
            problem = await _rfc7009(services, endpoint_url, token_endpoint.client, payload)
    except OutboundError:
        problem = "the provider could not be reached"
    if problem is not None:
        return Revocation("failed", link, problem)
    return Revocation("revoked")
