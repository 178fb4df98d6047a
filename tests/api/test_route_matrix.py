"""Roles, ownership and CSRF for EVERY route of `app.route_table(ctx)`.

`CASES` holds one expectation per (route template, verb). `test_every_route_has_a_case` walks
the real route table and fails when a route or verb has no case (or a case names a route that
no longer exists), so a new route cannot ship without saying who may call it.

Adding a route: add a `Case` keyed by (template, VERB) giving the status each caller gets:
- `anonymous`: no credentials;
- `member`: a signed-in member who does not own the resource in the path;
- `admin`: a signed-in administrator who does not own it either;
- `owner`: the member who owns it (for owned resources; run last, after the others failed to
  touch it — a second DELETE would not answer the owner's status).
Paths may name fixtures of `World` in braces (`{owner_token_id}`, …); add new owned resources
to `World` (e.g. a connection of `owner`, so another member's id guessing is tested).
API cases call with personal tokens; page and form cases with browser sessions. Every
state-changing case is also run by `test_csrf_is_required_with_a_session`.
A route that authenticates otherwise (the MCP proxy's credentials) can give `check`, an async
function of (World, method, path) doing its own assertions; only `/mcp/…` routes may (a test
enforces it, so no API or page route can dodge the role and CSRF checks that way).

The MCP proxy checks (DESIGN §6): the `open` service (auth `none`) relays to a `RawUpstream`
that records every request, so "refused before reaching the upstream" is observed, not assumed;
each check also proves the owner's real credential gets further (a positive control). Proxy
routes authenticate with bearer credentials and must NOT ask for an XSRF token:
`test_proxy_routes_need_no_csrf_token` sends the browser's cookies without one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from peers.raw_upstream import RawUpstream
from support.inprocess import (
    Browser,
    Response,
    Server,
    add_token,
    add_user,
    api,
    fetch,
    session_browser,
    start_appliance,
)

from bindify_appliance.api.openapi import implemented_verbs, route_handlers
from bindify_appliance.crypto.credentials import format_api_key, generate_credentials

SAFE = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Case:
    kind: str  # "api" (JSON, bearer tokens), "page" (browser GET), "form" (browser POST), "mcp"
    path: str
    anonymous: int
    member: int
    admin: int
    owner: int | None = None
    body: Any = None
    check: Callable[[World, str, str], Awaitable[None]] | None = None


@dataclass
class World:
    server: Server
    upstream: RawUpstream  # where the `open` service relays; records every request
    admin_id: str
    member_id: str
    owner_id: str
    victim_id: str
    admin_token: str
    member_token: str
    owner_token: str
    owner_token_id: str
    owner_connection_id: str  # the owner's managed connection to `open`
    owner_credentials: str  # its 86-character secret-URL segment
    owner_api_key: str  # its bnd_live_… key

    def fill(self, path: str) -> str:
        return path.format(**{k: v for k, v in vars(self).items() if isinstance(v, str)})

    def token_for(self, who: str) -> str | None:
        return {
            "admin": self.admin_token,
            "member": self.member_token,
            "owner": self.owner_token,
        }.get(who)

    def user_for(self, who: str) -> str:
        return {"admin": self.admin_id, "member": self.member_id, "owner": self.owner_id}[who]


# -- the MCP proxy's checks ------------------------------------------------------------------

CALL = {"jsonrpc": "2.0", "id": "matrix-1", "method": "tools/list"}


@dataclass(frozen=True)
class McpRoute:
    """A proxy route's shape: how the credential travels, and what follows it in the path."""

    form: Literal["path", "api_key"]
    suffix: str = ""  # "" (Streamable HTTP), "/sse" (legacy stream), "/messages" (legacy POSTs)

    def path(self, service: str, credentials: str = "") -> str:
        middle = f"/{credentials}" if self.form == "path" else ""
        return f"/mcp/{service}{middle}{self.suffix}"

    @property
    def template(self) -> str:
        return self.path("{service}", "{credentials}")


@dataclass(frozen=True)
class Attempt:
    what: str
    path: str
    headers: dict[str, str]
    status: int
    code: int


def _valid(world: World, route: McpRoute, service: str = "open") -> tuple[str, dict[str, str]]:
    """The owner's real credential for `route`: (path, headers)."""
    if route.form == "path":
        return route.path(service, world.owner_credentials), {}
    return route.path(service), {"Authorization": f"Bearer {world.owner_api_key}"}


async def _mcp(world: World, method: str, path: str, headers: dict[str, str]) -> Response:
    sent = {"Accept": "application/json, text/event-stream", **headers}
    body = None
    if method == "POST":
        body = json.dumps(CALL)
        sent["Content-Type"] = "application/json"
    return await fetch(world.server.url + path, method, body=body, headers=sent)


def _json_rpc_error(response: Response, method: str, status: int, code: int, what: str) -> str:
    """Assert a DESIGN §6 refusal (the request's id when there is one); return its message."""
    assert response.status == status, (what, response.status, response.text)
    assert response.headers.get("Content-Type") == "application/json", what
    body = response.json()
    assert body["jsonrpc"] == "2.0", what
    assert body["id"] == (CALL["id"] if method == "POST" else None), what
    assert body["error"]["code"] == code, (what, body)
    return str(body["error"]["message"])


def _wrong_credentials(world: World, route: McpRoute, cookie: str) -> list[Attempt]:
    """Everything that is not this connection's credential for this service.

    "Another service" is `doomed`, which relays to the same recording upstream: were the
    service check missing, the request would show up there.
    """
    unknown = generate_credentials().text
    if route.form == "path":
        bearer = {"Authorization": f"Bearer {world.owner_token}"}
        return [
            Attempt("malformed path", route.path("open", "not-a-credential"), {}, 400, -32600),
            Attempt(
                "personal token as path", route.path("open", world.owner_token), {}, 400, -32600
            ),
            Attempt("unknown credential", route.path("open", unknown), {}, 404, -32001),
            Attempt("unknown + personal token", route.path("open", unknown), bearer, 404, -32001),
            Attempt(
                "unknown + session", route.path("open", unknown), {"Cookie": cookie}, 404, -32001
            ),
            Attempt(
                "owner's credential, other service",
                route.path("doomed", world.owner_credentials),
                {},
                404,
                -32001,
            ),
            Attempt("unknown service", route.path("nosuch", unknown), {}, 404, -32006),
        ]
    unknown_key = {"Authorization": "Bearer " + format_api_key(generate_credentials())}
    return [
        # The OAuth server is on (DESIGN §10): no Authorization is the sign-in challenge.
        Attempt("no Authorization", route.path("open"), {}, 401, -32001),
        Attempt("session instead of a key", route.path("open"), {"Cookie": cookie}, 401, -32001),
        Attempt(
            "unknown access token",
            route.path("open"),
            {"Authorization": "Bearer bndat_" + "A" * 43},
            401,
            -32001,
        ),
        Attempt(
            "personal token",
            route.path("open"),
            {"Authorization": f"Bearer {world.owner_token}", "Cookie": cookie},
            400,
            -32600,
        ),
        Attempt(
            "malformed key", route.path("open"), {"Authorization": "Bearer bnd_live_x"}, 400, -32600
        ),
        Attempt("unknown key", route.path("open"), unknown_key, 404, -32001),
        Attempt(
            "owner's key, other service",
            route.path("doomed"),
            {"Authorization": f"Bearer {world.owner_api_key}"},
            404,
            -32001,
        ),
        Attempt("unknown service", route.path("nosuch"), unknown_key, 404, -32006),
    ]


async def _admitted(world: World, route: McpRoute, method: str) -> None:
    """The owner's real credential gets past admission: the refusals were about credentials."""
    path, headers = _valid(world, route)
    response = await _mcp(world, method, path, headers)
    if route.suffix == "":
        assert response.status == 200, response.text
        assert [r.method for r in world.upstream.requests] == [method]
        return
    if route.suffix == "/sse":
        # `open` speaks Streamable HTTP: admitted, then pointed at that URL; never relayed.
        message = _json_rpc_error(response, method, 400, -32600, "legacy stream")
        assert "legacy" in message
    else:
        # No legacy stream was opened, so the message has no session to go to.
        message = _json_rpc_error(response, method, 404, -32001, "legacy message")
        assert "Session not found" in message
    assert world.upstream.requests == []


def _credential_check(route: McpRoute) -> Callable[[World, str, str], Awaitable[None]]:
    async def check(world: World, method: str, path: str) -> None:
        assert path == _valid(world, route)[0]  # the case's path is the owner's real one
        browser = await session_browser(world.server, world.owner_id)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        not_found: set[str] = set()
        for attempt in _wrong_credentials(world, route, cookie):
            response = await _mcp(world, method, attempt.path, attempt.headers)
            what = attempt.what
            message = _json_rpc_error(response, method, attempt.status, attempt.code, what)
            if attempt.status == 401:
                # The OAuth server's challenge: only with no credential or an access token.
                challenge = response.headers.get("WWW-Authenticate", "")
                assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge
            else:
                # Any other 401 would send MCP clients into an OAuth dance.
                assert response.status != 401, what
            for secret in (world.owner_token, world.owner_credentials, world.owner_api_key):
                assert secret not in response.text, what
            if attempt.code == -32001 and attempt.status == 404:
                not_found.add(message)
            if what == "no Authorization":
                assert "Authorization" in message
            if what == "personal token":
                assert "bndpat_" in message and "/api/v1" in message
        # One message for every "not found", including another service's credential: no oracle.
        assert len(not_found) == 1, not_found
        assert world.upstream.requests == [], "a refused request reached the upstream"
        await _admitted(world, route, method)

    return check


def _preflight_check(route: McpRoute) -> Callable[[World, str, str], Awaitable[None]]:
    async def check(world: World, method: str, path: str) -> None:
        assert method == "OPTIONS"
        origin = world.server.url  # the base URL's origin is always allowed
        # A credential that does not even parse: any credential work would refuse it.
        url = world.server.url + route.path("open", "not-a-credential")
        preflight = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id",
        }
        response = await fetch(url, "OPTIONS", headers=preflight)
        assert response.status == 204, response.text
        assert response.body == b""
        assert response.headers.get("Access-Control-Allow-Origin") == origin
        assert "POST" in response.headers.get("Access-Control-Allow-Methods", "")
        allowed = response.headers.get("Access-Control-Allow-Headers", "").lower()
        assert {"authorization", "content-type", "mcp-session-id"} <= {
            h.strip() for h in allowed.split(",")
        }
        assert "Access-Control-Allow-Credentials" not in response.headers
        evil = await fetch(url, "OPTIONS", headers={**preflight, "Origin": "https://evil.example"})
        assert evil.status == 403 and evil.body == b""
        assert "Access-Control-Allow-Origin" not in evil.headers
        assert world.upstream.requests == []

    return check


MCP_ROUTES = {
    r.template: r
    for r in (
        McpRoute("path"),
        McpRoute("api_key"),
        McpRoute("path", "/sse"),
        McpRoute("api_key", "/sse"),
        McpRoute("path", "/messages"),
        McpRoute("api_key", "/messages"),
    )
}
_MCP_VERBS = {"": ("POST", "GET", "DELETE"), "/sse": ("GET",), "/messages": ("POST",)}


def _proxy_cases() -> dict[tuple[str, str], Case]:
    out = {}
    for template, route in MCP_ROUTES.items():
        owner_path = route.path("open", "{owner_credentials}")
        for verb in (*_MCP_VERBS[route.suffix], "OPTIONS"):
            check = _preflight_check(route) if verb == "OPTIONS" else _credential_check(route)
            # The role statuses do not apply (no role reaches the proxy): `check` decides.
            out[(template, verb)] = Case("mcp", owner_path, 0, 0, 0, check=check)
    return out


# The OAuth server's client endpoints (DESIGN §10) authenticate with client credentials in the
# request, never with cookies: no role applies and no XSRF token is asked for. The check sends
# each one anonymously and then with a signed-in browser's cookies (no XSRF token): the same
# RFC-shaped answer both times, so a session neither lends rights nor trips CSRF.
_OAUTH_CALLS: dict[str, tuple[str, str, int, str | None]] = {
    # path → (content type, body, status, RFC error)
    "/oauth/register": (
        "application/json",
        json.dumps({"redirect_uris": ["javascript:alert(1)"]}),
        400,
        "invalid_redirect_uri",
    ),
    "/oauth/token": (
        "application/x-www-form-urlencoded",
        "grant_type=authorization_code&code=x",
        401,
        "invalid_client",
    ),
    "/oauth/revoke": ("application/x-www-form-urlencoded", "token=x", 401, "invalid_client"),
}


def _oauth_client_check(path: str) -> Callable[[World, str, str], Awaitable[None]]:
    async def check(world: World, method: str, _path: str) -> None:
        content_type, body, status, error = _OAUTH_CALLS[path]
        browser = await session_browser(world.server, world.admin_id)
        cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        for headers in ({}, {"Cookie": cookies}):
            answered = await fetch(
                world.server.url + path,
                method,
                body=body,
                headers={"Content-Type": content_type, **headers},
            )
            assert answered.status == status, (path, headers.keys(), answered.text)
            assert answered.json()["error"] == error
            assert answered.headers["Cache-Control"] == "no-store"

    return check


def _oauth_cases() -> dict[tuple[str, str], Case]:
    out: dict[tuple[str, str], Case] = {}
    for path in (
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-protected-resource/mcp/{service}",
    ):
        filled = path.replace("{service}", "open")
        out[(path, "GET")] = Case("api", filled, 200, 200, 200)
        out[(path, "OPTIONS")] = Case("api", filled, 204, 204, 204)
    for path in _OAUTH_CALLS:
        out[(path, "POST")] = Case("api", path, 0, 0, 0, check=_oauth_client_check(path))
        out[(path, "OPTIONS")] = Case("api", path, 204, 204, 204)
    grants = "/api/v1/connections/{owner_connection_id}/grants"
    out[("/api/v1/connections/{id}/grants", "GET")] = Case("api", grants, 401, 404, 404, owner=200)
    out[("/api/v1/connections/{id}/grants", "DELETE")] = Case(
        "api", grants, 401, 404, 404, owner=204
    )
    out[("/api/v1/connections/{id}/grants/{grant_id}", "DELETE")] = Case(
        "api", grants + "/" + "0" * 32, 401, 404, 404, owner=404
    )
    return out


_NEW_USER = {"email": "created@example.com", "role": "member"}
_NEW_SERVICE = {
    "id": "created",
    "name": "Created",
    "mcp_url": "https://created.example/mcp",
    "auth": {"type": "none"},
}
_CONNECTION = "/api/v1/connections/{owner_connection_id}"

CASES: dict[tuple[str, str], Case] = {
    # operations
    ("/healthz", "GET"): Case("api", "/healthz", 200, 200, 200),
    ("/readyz", "GET"): Case("api", "/readyz", 200, 200, 200),
    # loopback without BINDIFY_METRICS_TOKEN: served to anyone on this host (tests/ops)
    ("/metrics", "GET"): Case("api", "/metrics", 200, 200, 200),
    # pages
    ("/", "GET"): Case("page", "/", 302, 200, 200),
    ("/login", "GET"): Case("page", "/login", 200, 302, 302),
    ("/login", "POST"): Case(
        "form", "/login", 400, 400, 400, body={"email": "x@example.com", "password": "nope"}
    ),
    ("/logout", "POST"): Case("form", "/logout", 303, 303, 303, body={}),
    ("/setup", "GET"): Case("page", "/setup?token=bogus", 404, 404, 404),
    ("/setup", "POST"): Case(
        "form",
        "/setup",
        404,
        404,
        404,
        body={"token": "bogus", "email": "a@example.com", "password": "long enough pw"},
    ),
    ("/invite", "GET"): Case("page", "/invite?token=bogus", 404, 404, 404),
    ("/invite", "POST"): Case(
        "form", "/invite", 404, 404, 404, body={"token": "bogus", "password": "long enough pw"}
    ),
    # SSO is not configured in this world: both answer 404 to everyone.
    ("/login/oidc", "GET"): Case("page", "/login/oidc", 404, 404, 404),
    ("/login/oidc/callback", "GET"): Case(
        "page", "/login/oidc/callback?code=c&state=s", 404, 404, 404
    ),
    # admin API
    ("/api/v1/openapi.json", "GET"): Case("api", "/api/v1/openapi.json", 200, 200, 200),
    ("/api/v1/me", "GET"): Case("api", "/api/v1/me", 401, 200, 200, owner=200),
    ("/api/v1/users", "GET"): Case("api", "/api/v1/users", 401, 403, 200, owner=403),
    ("/api/v1/users", "POST"): Case(
        "api", "/api/v1/users", 401, 403, 201, owner=403, body=_NEW_USER
    ),
    ("/api/v1/users/{id}", "GET"): Case(
        "api", "/api/v1/users/{victim_id}", 401, 403, 200, owner=403
    ),
    ("/api/v1/users/{id}", "PATCH"): Case(
        "api", "/api/v1/users/{victim_id}", 401, 403, 200, owner=403, body={"role": "admin"}
    ),
    ("/api/v1/users/{id}", "DELETE"): Case(
        "api", "/api/v1/users/{victim_id}", 401, 403, 204, owner=403
    ),
    ("/api/v1/tokens", "GET"): Case("api", "/api/v1/tokens", 401, 200, 200, owner=200),
    ("/api/v1/tokens", "POST"): Case(
        "api", "/api/v1/tokens", 401, 201, 201, owner=201, body={"name": "matrix"}
    ),
    # Owned: another member's (or an admin's) guess is "not found", and changes nothing.
    ("/api/v1/tokens/{id}", "DELETE"): Case(
        "api", "/api/v1/tokens/{owner_token_id}", 401, 404, 404, owner=204
    ),
    ("/api/v1/jobs", "GET"): Case("api", "/api/v1/jobs", 401, 403, 200, owner=403),
    ("/api/v1/audit", "GET"): Case("api", "/api/v1/audit", 401, 403, 200, owner=403),
    # The payload canary's endpoints: administrators only. Port 9 proves nothing (400 for the
    # admin: past the role check), no allowance is live (404), the in-process KV is scanned.
    ("/api/v1/ops/canary", "POST"): Case(
        "api", "/api/v1/ops/canary", 401, 403, 400, owner=403, body={"port": 9, "proof": "p" * 43}
    ),
    ("/api/v1/ops/canary/{id}", "DELETE"): Case(
        "api", "/api/v1/ops/canary/canary-0000", 401, 403, 404, owner=403
    ),
    ("/api/v1/ops/kv-scan", "POST"): Case(
        "api",
        "/api/v1/ops/kv-scan",
        401,
        403,
        200,
        owner=403,
        body={"marker": "bndcanary-" + "0" * 32},
    ),
    # services: everyone reads the catalogue, only administrators change it
    ("/api/v1/services", "GET"): Case("api", "/api/v1/services", 401, 200, 200, owner=200),
    ("/api/v1/services", "POST"): Case(
        "api", "/api/v1/services", 401, 403, 201, owner=403, body=_NEW_SERVICE
    ),
    ("/api/v1/services/{id}", "PATCH"): Case(
        "api",
        "/api/v1/services/github",
        401,
        403,
        200,
        owner=403,
        body={"auth": {"client_id": "x"}},
    ),
    ("/api/v1/services/{id}", "DELETE"): Case(
        "api", "/api/v1/services/doomed", 401, 403, 204, owner=403
    ),
    # connections: everyone has their own; another's id is "not found", for admins too
    ("/api/v1/connections", "GET"): Case("api", "/api/v1/connections", 401, 200, 200, owner=200),
    ("/api/v1/connections", "POST"): Case(
        "api", "/api/v1/connections", 401, 201, 201, owner=201, body={"service": "open"}
    ),
    # github has no OAuth app configured here: 400 for every signed-in caller.
    ("/api/v1/connections/{service}/authorize", "POST"): Case(
        "api", "/api/v1/connections/github/authorize", 401, 400, 400, owner=400, body={}
    ),
    ("/api/v1/connections/{id}", "GET"): Case("api", _CONNECTION, 401, 404, 404, owner=200),
    ("/api/v1/connections/{id}", "PATCH"): Case(
        "api", _CONNECTION, 401, 404, 404, owner=200, body={"label": "renamed"}
    ),
    ("/api/v1/connections/{id}", "DELETE"): Case("api", _CONNECTION, 401, 404, 404, owner=204),
    ("/api/v1/connections/{id}/rotate-url", "POST"): Case(
        "api", _CONNECTION + "/rotate-url", 401, 404, 404, owner=200, body={}
    ),
    # auth none: nothing to send; the owner's reconnect rewrites the row in place
    ("/api/v1/connections/{id}/reconnect", "POST"): Case(
        "api", _CONNECTION + "/reconnect", 401, 404, 404, owner=200, body={}
    ),
    ("/api/v1/connections/{id}/events", "GET"): Case(
        "api", _CONNECTION + "/events", 401, 404, 404, owner=200
    ),
    # administrators disable or re-enable any connection (DESIGN §15); members get 403
    ("/api/v1/admin/connections/{id}", "PATCH"): Case(
        "api",
        "/api/v1/admin/connections/{owner_connection_id}",
        401,
        403,
        200,
        owner=403,
        body={"disabled": False},
    ),
    ("/api/v1/admin/connections", "GET"): Case(
        "api", "/api/v1/admin/connections", 401, 403, 200, owner=403
    ),
    ("/api/v1/sessions", "GET"): Case("api", "/api/v1/sessions", 401, 200, 200, owner=200),
    # Another user's (or an unknown) session id is "not found".
    ("/api/v1/sessions/{id}", "DELETE"): Case(
        "api", "/api/v1/sessions/" + "0" * 32, 401, 404, 404, owner=404
    ),
    # Members delete themselves; the only administrator cannot (409 last_admin).
    ("/api/v1/me", "DELETE"): Case("api", "/api/v1/me", 401, 204, 409, owner=204),
    ("/api/v1/claims/{token}", "GET"): Case(
        "api", "/api/v1/claims/" + "A" * 43, 401, 404, 404, owner=404
    ),
    # connect pages
    ("/oauth/callback", "GET"): Case("page", "/oauth/callback?code=c&state=s", 302, 400, 400),
    ("/connections/{id}", "GET"): Case(
        "page", "/connections/{owner_connection_id}", 302, 404, 404, owner=200
    ),
    # web UI pages (web/dashboard.py, web/connect.py, web/admin.py)
    ("/connections/{id}/rename", "POST"): Case(
        "form",
        "/connections/{owner_connection_id}/rename",
        303,
        404,
        404,
        owner=303,
        body={"label": "renamed"},
    ),
    ("/connections/{id}/delete", "GET"): Case(
        "page", "/connections/{owner_connection_id}/delete", 302, 404, 404, owner=200
    ),
    ("/connections/{id}/delete", "POST"): Case(
        "form", "/connections/{owner_connection_id}/delete", 303, 404, 404, owner=303, body={}
    ),
    ("/connections/{id}/rotate", "POST"): Case(
        "form", "/connections/{owner_connection_id}/rotate", 303, 404, 404, owner=303, body={}
    ),
    ("/connections/{id}/reconnect", "GET"): Case(
        "page", "/connections/{owner_connection_id}/reconnect", 302, 404, 404, owner=200
    ),
    ("/connections/{id}/reconnect", "POST"): Case(
        "form", "/connections/{owner_connection_id}/reconnect", 303, 404, 404, owner=303, body={}
    ),
    ("/connections/{id}/disable", "POST"): Case(
        "form", "/connections/{owner_connection_id}/disable", 303, 404, 404, owner=303, body={}
    ),
    ("/connections/{id}/enable", "POST"): Case(
        "form", "/connections/{owner_connection_id}/enable", 303, 404, 404, owner=303, body={}
    ),
    ("/connect", "GET"): Case("page", "/connect", 302, 200, 200),
    ("/connect/{service}", "GET"): Case("page", "/connect/open", 302, 200, 200),
    ("/connect/{service}", "POST"): Case("form", "/connect/open", 303, 303, 303, body={}),
    ("/admin/users", "GET"): Case("page", "/admin/users", 302, 403, 200, owner=403),
    ("/admin/users", "POST"): Case(
        "form",
        "/admin/users",
        303,
        403,
        201,
        owner=403,
        body={"email": "invited@example.com", "role": "member"},
    ),
    ("/admin/users/{id}", "POST"): Case(
        "form",
        "/admin/users/{victim_id}",
        303,
        403,
        303,
        owner=403,
        body={"action": "disable"},
    ),
    ("/account/password", "GET"): Case("page", "/account/password", 302, 200, 200),
    # Nobody's current password is empty: 400 for every signed-in caller, sign-in for others.
    ("/account/password", "POST"): Case("form", "/account/password", 303, 400, 400, body={}),
    ("/admin/services", "GET"): Case("page", "/admin/services", 302, 403, 200, owner=403),
    ("/admin/services", "POST"): Case(
        "form",
        "/admin/services",
        303,
        403,
        303,
        owner=403,
        body={
            "id": "viaui",
            "name": "Via UI",
            "mcp_url": "https://example.com/mcp",
            "auth": "none",
        },
    ),
    # web/policies.py: the service's tool-policy page and the owner's connection policy form.
    ("/admin/services/{id}", "GET"): Case("page", "/admin/services/open", 302, 403, 200, owner=403),
    ("/admin/services/{id}/policy", "POST"): Case(
        "form",
        "/admin/services/open/policy",
        303,
        403,
        303,
        owner=403,
        body={"action": "clear"},
    ),
    # web/service_edit.py: each refusal below changes nothing (an empty settings form has no
    # name, `open` is no built-in with an OAuth app, a delete needs its confirmation box).
    ("/admin/services/{id}/settings", "POST"): Case(
        "form", "/admin/services/open/settings", 303, 403, 400, owner=403, body={}
    ),
    ("/admin/services/{id}/oauth-app", "POST"): Case(
        "form", "/admin/services/open/oauth-app", 303, 403, 400, owner=403, body={}
    ),
    ("/admin/services/{id}/delete", "POST"): Case(
        "form", "/admin/services/open/delete", 303, 403, 400, owner=403, body={}
    ),
    # web/account_tokens.py: everyone's own tokens; an empty name is refused (nothing made),
    # and nobody holds a token with this id (no oracle).
    ("/account/tokens", "GET"): Case("page", "/account/tokens", 302, 200, 200),
    ("/account/tokens", "POST"): Case("form", "/account/tokens", 303, 400, 400, body={}),
    ("/account/tokens/{id}/revoke", "POST"): Case(
        "form", "/account/tokens/" + "0" * 32 + "/revoke", 303, 404, 404, owner=404, body={}
    ),
    ("/connections/{id}/policy", "POST"): Case(
        "form",
        "/connections/{owner_connection_id}/policy",
        303,
        404,
        404,
        owner=303,
        body={"action": "clear"},
    ),
    ("/admin/keys", "GET"): Case("page", "/admin/keys", 302, 403, 200, owner=403),
    ("/admin/jobs", "GET"): Case("page", "/admin/jobs", 302, 403, 200, owner=403),
    ("/admin/audit", "GET"): Case("page", "/admin/audit", 302, 403, 200, owner=403),
    ("/admin/connections", "GET"): Case("page", "/admin/connections", 302, 403, 200, owner=403),
    # "enable" of an enabled connection changes nothing: the other cases keep a live connection.
    ("/admin/connections/{id}", "POST"): Case(
        "form",
        "/admin/connections/{owner_connection_id}",
        303,
        403,
        303,
        owner=403,
        body={"action": "enable"},
    ),
    # Nobody's session has this public id: "not found" for every signed-in caller (no oracle).
    ("/account/sessions/{id}", "POST"): Case(
        "form", "/account/sessions/" + "0" * 32, 303, 404, 404, owner=404, body={}
    ),
    # The base URL is http here: no client metadata document, for anyone.
    # oauth_server/authorize.py: without parameters a refusal page (never a redirect); a
    # consent answer without a pending request of one's own is refused; no grant has this id.
    ("/oauth/authorize", "GET"): Case("page", "/oauth/authorize", 400, 400, 400),
    ("/oauth/authorize", "POST"): Case("form", "/oauth/authorize", 303, 400, 400, body={}),
    ("/connections/{id}/apps/{grant_id}/revoke", "POST"): Case(
        "form",
        "/connections/{owner_connection_id}/apps/" + "0" * 32 + "/revoke",
        303,
        404,
        404,
        owner=404,
        body={},
    ),
    ("/oauth/client-metadata.json", "GET"): Case(
        "page", "/oauth/client-metadata.json", 404, 404, 404, owner=404
    ),
    # the MCP proxy: credentials, not roles (see `_credential_check`, `_preflight_check`)
    **_proxy_cases(),
    # the OAuth server for MCP clients: metadata, client endpoints, the grants API
    **_oauth_cases(),
}


async def _service(server: Server, token: str, service_id: str, mcp_url: str) -> None:
    body = {
        "id": service_id,
        "name": service_id.title(),
        "mcp_url": mcp_url,
        "auth": {"type": "none"},
    }
    created = await api(server, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    upstream = RawUpstream()
    await upstream.start()
    # The `open` service relays to the loopback RawUpstream.
    server = await start_appliance(tmp_path, allow_private_upstreams=True)
    admin_id = add_user(server, "admin@example.com", "admin")
    member_id = add_user(server, "member@example.com")
    owner_id = add_user(server, "owner@example.com")
    victim_id = add_user(server, "victim@example.com")
    admin_token = add_token(server, admin_id, "admin")
    owner_token = add_token(server, owner_id, "owner")
    owner_extra = add_token(server, owner_id, "owner-extra")
    listed = (await api(server, "GET", "/api/v1/tokens", token=owner_token)).json()["items"]
    extra_id = next(t["id"] for t in listed if t["name"] == "owner-extra")
    assert owner_extra
    await _service(server, admin_token, "open", upstream.url("/echo"))
    await _service(server, admin_token, "doomed", upstream.url("/echo"))
    connected = await api(
        server,
        "POST",
        "/api/v1/connections",
        {"service": "open", "key_storage_mode": "managed"},
        token=owner_token,
    )
    assert connected.status == 201, connected.text
    secrets = connected.json()
    credentials = secrets["secret_url"].rsplit("/", 1)[1]
    assert secrets["secret_url"] == f"{server.url}/mcp/open/{credentials}"
    assert secrets["api_key"] == f"bnd_live_{credentials}"
    assert upstream.requests == []  # nothing so far talked to the upstream
    yield World(
        server=server,
        upstream=upstream,
        admin_id=admin_id,
        member_id=member_id,
        owner_id=owner_id,
        victim_id=victim_id,
        admin_token=admin_token,
        member_token=add_token(server, member_id, "member"),
        owner_token=owner_token,
        owner_token_id=extra_id,
        owner_connection_id=secrets["connection"]["id"],
        owner_credentials=credentials,
        owner_api_key=secrets["api_key"],
    )
    await server.app.settings["runtime"].close()  # the proxy's pooled upstream client
    await server.close()
    await upstream.stop()


def _actual_routes(server: Server) -> set[tuple[str, str]]:
    out = set()
    for template, handler in route_handlers(server.routes()):
        for verb in implemented_verbs(handler):
            out.add((template, verb.upper()))
    return out


async def test_every_route_has_a_case(world: World) -> None:
    actual = _actual_routes(world.server)
    missing = sorted(actual - set(CASES))
    stale = sorted(set(CASES) - actual)
    assert not missing, f"routes without an access case in CASES: {missing}"
    assert not stale, f"CASES for routes that no longer exist: {stale}"


def test_only_proxy_routes_authenticate_otherwise() -> None:
    # A `check` skips the role matrix and the CSRF test: only bearer-credential routes and the
    # OAuth server's client-credential endpoints may.
    checked = {key for key, case in CASES.items() if case.check is not None}
    assert checked == {
        key for key in CASES if key[0].startswith("/mcp/") or key in _OAUTH_CLIENT_ROUTES
    }


async def _call(world: World, case: Case, method: str, who: str | None) -> Response:
    path = world.fill(case.path)
    if case.kind == "api":
        token = world.token_for(who) if who else None
        return await api(world.server, method, path, case.body, token=token)
    browser = (
        await session_browser(world.server, world.user_for(who))
        if who
        else Browser(world.server.url)
    )
    if case.kind == "form":
        await browser.ensure_xsrf()
        return await browser.request(method, path, form=case.body or {})
    return await browser.request(method, path)


@pytest.mark.parametrize(("template", "method"), sorted(CASES))
async def test_who_may_call_what(world: World, template: str, method: str) -> None:
    case = CASES[(template, method)]
    if case.check is not None:
        await case.check(world, method, world.fill(case.path))
        return
    callers: list[tuple[str | None, int]] = [
        (None, case.anonymous),
        ("member", case.member),
        ("admin", case.admin),
    ]
    if case.owner is not None:
        callers.append(("owner", case.owner))
    for who, expected in callers:
        response = await _call(world, case, method, who)
        assert response.status == expected, (who or "anonymous", response.status, response.text)
        if case.kind == "api" and response.status >= 400:
            body = response.json()
            assert set(body) <= {"error", "message", "field"} and body["message"]
            wanted = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(expected)
            if wanted:
                assert body["error"] == wanted
        if case.kind == "page" and expected == 302 and who is None:
            assert (response.location or "").startswith("/login?next=")


_OAUTH_CLIENT_ROUTES = {(path, "POST") for path in _OAUTH_CALLS}
STATE_CHANGING = sorted(k for k, c in CASES.items() if k[1] not in SAFE and c.check is None)
PROXY_STATE_CHANGING = sorted(
    k
    for k, c in CASES.items()
    if k[1] not in SAFE and c.check is not None and k not in _OAUTH_CLIENT_ROUTES
)


@pytest.mark.parametrize(("template", "method"), STATE_CHANGING)
async def test_csrf_is_required_with_a_session(world: World, template: str, method: str) -> None:
    case = CASES[(template, method)]
    browser = await session_browser(world.server, world.admin_id)
    path = world.fill(case.path)
    if case.kind == "api":
        refused = await browser.api(method, path, case.body, csrf=False)
        assert refused.status == 403, refused.text
        assert refused.json()["error"] == "csrf_failed"
        forged = await browser.request(
            method,
            path,
            json_body=case.body,
            headers={"X-XSRFToken": "2|00000000|" + "0" * 32 + "|1"},
        )
        assert forged.status == 403 and forged.json()["error"] == "csrf_failed"
        allowed = await browser.api(method, path, case.body)
    else:
        refused = await browser.request(method, path, form=case.body or {}, xsrf=False)
        assert refused.status == 403, refused.text
        assert "form expired" in refused.text
        allowed = await browser.request(method, path, form=case.body or {})
    assert allowed.status != 403, allowed.text
    # The refused attempt changed nothing: the session still works.
    assert (await browser.api("GET", "/api/v1/me")).status in (200, 401)


async def test_bearer_requests_need_no_csrf_token_and_ignore_cookies(world: World) -> None:
    member = await session_browser(world.server, world.member_id)
    # A bearer header wins over any cookie: the member's session does not lend its rights.
    response = await fetch(
        world.server.url + "/api/v1/me",
        headers={
            "Authorization": "Bearer " + world.admin_token,
            "Cookie": "; ".join(f"{k}={v}" for k, v in member.cookies.items()),
        },
    )
    assert response.json()["user"]["email"] == "admin@example.com"
    created = await api(
        world.server, "POST", "/api/v1/tokens", {"name": "no csrf needed"}, token=world.member_token
    )
    assert created.status == 201


async def test_safe_api_calls_with_a_session_need_no_csrf_token(world: World) -> None:
    browser = await session_browser(world.server, world.member_id)
    response = await browser.api("GET", "/api/v1/me", csrf=False)
    assert response.status == 200 and response.json()["auth"] == "session"


@pytest.mark.parametrize(("template", "method"), PROXY_STATE_CHANGING)
async def test_proxy_routes_need_no_csrf_token(world: World, template: str, method: str) -> None:
    """Bearer-credential routes: a browser's cookies without any XSRF token are not refused,
    and neither the cookies nor the client's Authorization travel upstream."""
    route = MCP_ROUTES[template]
    browser = await session_browser(world.server, world.owner_id)
    assert "_xsrf" in browser.cookies
    path, headers = _valid(world, route)
    response = await browser.request(
        method,
        path,
        json_body=CALL if method == "POST" else None,
        headers={"Accept": "application/json, text/event-stream", **headers},
    )
    assert response.status != 403 and b"csrf" not in response.body.lower(), response.text
    if route.suffix == "":
        assert response.status == 200, response.text
        [seen] = world.upstream.requests
        assert seen.method == method
        assert seen.header("Cookie") is None and seen.header("Authorization") is None
    else:
        _json_rpc_error(response, method, 404, -32001, "legacy message without a stream")
        assert world.upstream.requests == []


async def test_admins_may_only_disable_other_members_connections(world: World) -> None:
    path = world.fill(_CONNECTION)
    before = (await api(world.server, "GET", path, token=world.owner_token)).json()["connection"]
    # The owner route answers 404 to everyone but the owner, whatever the body (DESIGN §15:
    # administrators act through /api/v1/admin/connections/{id}).
    for who, body in (
        (world.admin_token, {}),
        (world.admin_token, {"label": "mine now"}),
        (world.admin_token, {"disabled": True}),
        (world.admin_token, {"disabled": True, "label": "mine now"}),
        (world.member_token, {"disabled": True}),
    ):
        refused = await api(world.server, "PATCH", path, body, token=who)
        assert refused.status == 404 and refused.json()["error"] == "not_found", refused.text
    mcp_path, headers = _valid(world, McpRoute("path"))

    admin_path = world.fill("/api/v1/admin/connections/{owner_connection_id}")
    refused = await api(
        world.server, "PATCH", admin_path, {"disabled": True}, token=world.member_token
    )
    assert refused.status == 403
    disabled = await api(
        world.server, "PATCH", admin_path, {"disabled": True}, token=world.admin_token
    )
    assert disabled.status == 200, disabled.text
    assert set(disabled.json()) == {"connection"}  # metadata only, never a secret
    assert disabled.json()["connection"] == {**before, "status": "disabled"}
    # The proxy sees it at once on this instance: 403 -32002, the upstream untouched.
    refused = await _mcp(world, "POST", mcp_path, headers)
    _json_rpc_error(refused, "POST", 403, -32002, "disabled connection")
    assert world.upstream.requests == []

    # The owner cannot undo it; the administrator can.
    undo = await api(world.server, "PATCH", path, {"disabled": False}, token=world.owner_token)
    assert undo.status == 403 and undo.json()["error"] == "forbidden"
    enabled = await api(
        world.server, "PATCH", admin_path, {"disabled": False}, token=world.admin_token
    )
    assert enabled.json()["connection"]["status"] == "active"
    assert (await _mcp(world, "POST", mcp_path, headers)).status == 200
    assert len(world.upstream.requests) == 1


# -- paths no route matches ------------------------------------------------------------------

UNKNOWN_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND")
# Per area, paths that match no route (some look almost like real ones). `{…}` fills from World.
UNKNOWN_PATHS: dict[str, tuple[str, ...]] = {
    "api": (
        "/api/v1/nope",
        "/api/v1",
        "/api/v1/",
        "/api/v1/users/{victim_id}/extra",
        "/api/v1/connections/{owner_connection_id}/rotate-url/again",
        "/api/v2/me",
    ),
    "mcp": (
        "/mcp",
        "/mcp/",
        "/mcp/open/{owner_credentials}/extra",
        "/mcp/open/{owner_credentials}/sse/more",
        "/mcp/open/a/b/c",
    ),
    "page": (
        "/nope",
        "/admin/nope",
        "/connections/{owner_connection_id}/rename/again",
        "/login/elsewhere",
    ),
}


def _assert_area_404(area: str, method: str, path: str, response: Response, who: str) -> None:
    what = (area, method, path, who, response.status, response.text[:200])
    assert response.status == 404, what
    if method == "HEAD":
        return  # no body on a HEAD answer
    content_type = response.headers.get("Content-Type", "")
    if area == "api":
        assert content_type.startswith("application/json"), what
        body = response.json()
        assert body["error"] == "not_found" and body["message"], what
        assert set(body) <= {"error", "message"}, what
    elif area == "mcp":
        assert content_type.startswith("application/json"), what
        body = response.json()
        assert body["jsonrpc"] == "2.0" and body["id"] is None, what
        assert isinstance(body["error"]["code"], int) and body["error"]["message"], what
        # Like every /mcp/ answer: nothing in it can act on the UI's origin (DESIGN §9).
        assert response.headers.get("X-Content-Type-Options") == "nosniff", what
        assert "sandbox" in response.headers.get("Content-Security-Policy", ""), what
    else:
        assert content_type.startswith("text/html"), what
        assert "Not found" in response.text, what


@pytest.mark.parametrize("area", sorted(UNKNOWN_PATHS))
async def test_unknown_paths_answer_404_in_their_area(world: World, area: str) -> None:
    """Every method on every unmatched path is 404 in its area's shape: never the XSRF check's
    403, never 405, for anonymous callers, bearer tokens and browser sessions alike."""
    browser = await session_browser(world.server, world.admin_id)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    callers = {
        "anonymous": {},
        "admin token": {"Authorization": f"Bearer {world.admin_token}"},
        "session without XSRF token": {"Cookie": cookie},
        "session with XSRF token": {"Cookie": cookie, "X-XSRFToken": browser.cookies["_xsrf"]},
    }
    for template in UNKNOWN_PATHS[area]:
        path = world.fill(template)
        for method in UNKNOWN_METHODS:
            for who, headers in callers.items():
                body = None
                sent = dict(headers)
                if method in ("POST", "PUT", "PATCH", "PROPFIND"):
                    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
                    sent["Content-Type"] = "application/json"
                response = await fetch(world.server.url + path, method, body=body, headers=sent)
                _assert_area_404(area, method, path, response, who)
    assert world.upstream.requests == []  # nothing unmatched reached an upstream
