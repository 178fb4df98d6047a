"""Authorization discovery for a remote MCP server: RFC 9728 → RFC 8414 / OpenID Connect.

Given only an MCP URL (an admin-added `{"type": "oauth"}` service), find where to send the user
and how to get tokens, as the MCP authorization spec orders it (reference mcp-protocol §4):

1. Probe the MCP URL unauthenticated (an `initialize` POST). A 401 whose `WWW-Authenticate:
   Bearer` challenge names `resource_metadata` gives the protected-resource metadata URL (and
   its `scope`, which wins over everything else); otherwise try
   `/.well-known/oauth-protected-resource{path}` then `/.well-known/oauth-protected-resource`.
2. The protected-resource metadata (RFC 9728) must list `authorization_servers`, and its
   `resource`, when present, must cover the MCP URL (same origin, same path or a parent);
   that `resource` is the RFC 8707 indicator we send (else the MCP URL itself).
3. Authorization-server metadata for the first server: for issuer `https://a/t1`,
   `/.well-known/oauth-authorization-server/t1`, `/.well-known/openid-configuration/t1`,
   `/t1/.well-known/openid-configuration` (no path: the first two). Its `issuer` must equal
   the issuer we asked about (mix-up defence; one trailing slash of difference tolerated), and
   it must advertise PKCE `S256` — clients must refuse otherwise.
4. No protected-resource metadata at all (servers of the 2025-03-26 revision): the MCP URL's
   origin is the authorization server — its RFC 8414 document, or else the default endpoints
   `/authorize`, `/token`, `/register`.

Every fetch goes through the SSRF-guarded `OutboundClient`; every URL a document names is
checked the same way before use. Failures raise `OAuthError` (error `discovery_failed`) with a
message an admin can act on, or `OutboundError` when a server cannot be reached.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from yarl import URL

from bindify_appliance.errors import OAuthError, OutboundError
from bindify_appliance.outbound import OutboundClient, OutboundResponse

__all__ = [
    "Discovery",
    "ServerMetadata",
    "discover",
    "metadata_urls",
    "parse_www_authenticate",
    "resource_covers",
]

_PARAM: Final = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)')
_PROBE: Final = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bindify-appliance", "version": "1"},
    },
}


@dataclass(frozen=True)
class ServerMetadata:
    """What we use of an authorization server's metadata."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None  # RFC 7009, used when a member is offboarded
    code_challenge_methods: tuple[str, ...] = ("S256",)
    token_auth_methods: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    client_id_metadata_document_supported: bool = False
    iss_parameter_supported: bool = False
    from_document: bool = True


@dataclass(frozen=True)
class Discovery:
    """The outcome: where to authorize, the resource indicator, and the scopes to ask for."""

    server: ServerMetadata
    resource: str
    scopes: tuple[str, ...] = ()
    resource_metadata_url: str | None = None


def _fail(message: str) -> OAuthError:
    return OAuthError(message, error="discovery_failed")


def parse_www_authenticate(values: Sequence[str]) -> dict[str, str]:
    """Auth-params of the Bearer challenge(s) in `WWW-Authenticate` header values."""
    params: dict[str, str] = {}
    for value in values:
        for challenge in re.split(r",\s*(?=[A-Za-z]+\s+[A-Za-z_]+=)", value):
            scheme, _, rest = challenge.strip().partition(" ")
            if scheme.lower() != "bearer":
                continue
            for name, raw in _PARAM.findall(rest):
                text = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
                params.setdefault(name.lower(), text)
    return params


def resource_covers(resource: str, mcp_url: str) -> bool:
    """True when a metadata `resource` names the MCP URL or one of its parents."""
    try:
        a, b = URL(resource), URL(mcp_url)
    except (ValueError, TypeError):
        return False
    if (a.scheme, (a.host or "").lower(), a.port) != (b.scheme, (b.host or "").lower(), b.port):
        return False
    parent, path = a.path.rstrip("/"), b.path.rstrip("/")
    return path == parent or path.startswith(parent + "/")


def metadata_urls(issuer: str) -> list[str]:
    """RFC 8414 then OpenID discovery URLs for `issuer`, in the spec's order."""
    url = URL(issuer)
    origin = str(url.origin())
    path = url.path.rstrip("/")
    if not path:
        return [
            origin + "/.well-known/oauth-authorization-server",
            origin + "/.well-known/openid-configuration",
        ]
    return [
        origin + "/.well-known/oauth-authorization-server" + path,
        origin + "/.well-known/openid-configuration" + path,
        origin + path + "/.well-known/openid-configuration",
    ]


async def _json_document(outbound: OutboundClient, url: str) -> dict[str, Any] | None:
    """A JSON object from `url`, or None on 404/405/410 and other non-200s."""
    response: OutboundResponse = await outbound.get(url, headers={"Accept": "application/json"})
    if response.status != 200:
        return None
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v)


def _endpoint(outbound: OutboundClient, doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(f"the authorization server's {name} is not a URL")
    try:
        outbound.check(value)
    except OutboundError as exc:
        raise _fail(f"the authorization server's {name} is refused: {exc}") from None
    return value


def _server_metadata(
    outbound: OutboundClient, doc: Mapping[str, Any], issuer: str
) -> ServerMetadata:
    advertised = doc.get("issuer")
    if not isinstance(advertised, str) or advertised.rstrip("/") != issuer.rstrip("/"):
        raise _fail("the authorization server's metadata names a different issuer")
    authorize = _endpoint(outbound, doc, "authorization_endpoint")
    token = _endpoint(outbound, doc, "token_endpoint")
    if authorize is None or token is None:
        raise _fail("the authorization server's metadata lacks authorization or token endpoint")
    response_types = _strings(doc.get("response_types_supported"))
    if response_types and "code" not in response_types:
        raise _fail("the authorization server does not support the authorization-code flow")
    methods = _strings(doc.get("code_challenge_methods_supported"))
    if "S256" not in methods:
        raise _fail(
            "the authorization server does not advertise PKCE S256 "
            "(code_challenge_methods_supported); MCP clients must refuse it"
        )
    return ServerMetadata(
        issuer=advertised,
        authorization_endpoint=authorize,
        token_endpoint=token,
        registration_endpoint=_endpoint(outbound, doc, "registration_endpoint"),
        revocation_endpoint=_endpoint(outbound, doc, "revocation_endpoint"),
        code_challenge_methods=methods,
        token_auth_methods=_strings(doc.get("token_endpoint_auth_methods_supported")),
        scopes_supported=_strings(doc.get("scopes_supported")),
        client_id_metadata_document_supported=doc.get("client_id_metadata_document_supported")
        is True,
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
    )


async def server_metadata(outbound: OutboundClient, issuer: str) -> ServerMetadata | None:
    """The authorization server metadata of `issuer`, or None when it publishes none."""
    for url in metadata_urls(issuer):
        doc = await _json_document(outbound, url)
        if doc is not None:
            return _server_metadata(outbound, doc, issuer)
    return None


async def _probe(outbound: OutboundClient, mcp_url: str) -> dict[str, str]:
    response = await outbound.post(
        mcp_url,
        json_body=_PROBE,
        headers={"Accept": "application/json, text/event-stream"},
        follow_redirects=False,
    )
    if response.status not in (401, 403):
        return {}
    return parse_www_authenticate(response.headers.getall("WWW-Authenticate", []))


def _prm_urls(mcp_url: str) -> list[str]:
    url = URL(mcp_url)
    origin = str(url.origin())
    path = url.path.rstrip("/")
    base = origin + "/.well-known/oauth-protected-resource"
    return [base + path, base] if path else [base]


async def discover(outbound: OutboundClient, mcp_url: str) -> Discovery:
    """Discover how to authorize against the MCP server at `mcp_url` (module docstring)."""
    challenge = await _probe(outbound, mcp_url)
    candidates = []
    if challenge.get("resource_metadata"):
        candidates.append(challenge["resource_metadata"])
    candidates += [u for u in _prm_urls(mcp_url) if u not in candidates]
    prm: dict[str, Any] | None = None
    prm_url: str | None = None
    for url in candidates:
        try:
            outbound.check(url)
        except OutboundError as exc:
            raise _fail(f"the protected-resource metadata URL is refused: {exc}") from None
        prm = await _json_document(outbound, url)
        if prm is not None:
            prm_url = url
            break
    challenge_scopes = tuple(challenge.get("scope", "").split())
    if prm is None:
        # The 2025-03-26 revision: the MCP server's origin is its own authorization server.
        origin = str(URL(mcp_url).origin())
        server = await server_metadata(outbound, origin) or ServerMetadata(
            issuer=origin,
            authorization_endpoint=origin + "/authorize",
            token_endpoint=origin + "/token",
            registration_endpoint=origin + "/register",
            from_document=False,
        )
        return Discovery(server=server, resource=mcp_url, scopes=challenge_scopes)
    servers = _strings(prm.get("authorization_servers"))
    if not servers:
        raise _fail("the protected-resource metadata lists no authorization_servers")
    resource = prm.get("resource")
    if resource is not None and (
        not isinstance(resource, str) or not resource_covers(resource, mcp_url)
    ):
        raise _fail("the protected-resource metadata describes a different resource")
    issuer = servers[0]
    try:
        outbound.check(issuer)
    except OutboundError as exc:
        raise _fail(f"the authorization server URL is refused: {exc}") from None
    metadata = await server_metadata(outbound, issuer)
    if metadata is None:
        raise _fail("the authorization server publishes no metadata (RFC 8414 / OpenID)")
    scopes = challenge_scopes or _strings(prm.get("scopes_supported"))
    return Discovery(
        server=metadata,
        resource=resource if isinstance(resource, str) else mcp_url,
        scopes=scopes,
        resource_metadata_url=prm_url,
    )
