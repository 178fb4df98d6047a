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
function of (World, method, path) doing its own assertions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from accounts.harness import (
    Browser,
    Response,
    Server,
    add_token,
    add_user,
    api,
    fetch,
    session_browser,
    start_server,
)

from bindify_appliance.api.openapi import implemented_verbs, route_handlers

SAFE = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Case:
    kind: str  # "api" (JSON, bearer tokens), "page" (browser GET), "form" (browser POST)
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
    admin_id: str
    member_id: str
    owner_id: str
    victim_id: str
    admin_token: str
    member_token: str
    owner_token: str
    owner_token_id: str

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


_NEW_USER = {"email": "created@example.com", "role": "member"}

CASES: dict[tuple[str, str], Case] = {
    # operations
    ("/healthz", "GET"): Case("api", "/healthz", 200, 200, 200),
    ("/readyz", "GET"): Case("api", "/readyz", 200, 200, 200),
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
}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    server = await start_server(tmp_path)
    admin_id = add_user(server, "admin@example.com", "admin")
    member_id = add_user(server, "member@example.com")
    owner_id = add_user(server, "owner@example.com")
    victim_id = add_user(server, "victim@example.com")
    owner_token = add_token(server, owner_id, "owner")
    owner_extra = add_token(server, owner_id, "owner-extra")
    listed = (await api(server, "GET", "/api/v1/tokens", token=owner_token)).json()["items"]
    extra_id = next(t["id"] for t in listed if t["name"] == "owner-extra")
    assert owner_extra
    yield World(
        server=server,
        admin_id=admin_id,
        member_id=member_id,
        owner_id=owner_id,
        victim_id=victim_id,
        admin_token=add_token(server, admin_id, "admin"),
        member_token=add_token(server, member_id, "member"),
        owner_token=owner_token,
        owner_token_id=extra_id,
    )
    await server.close()


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


STATE_CHANGING = sorted(k for k, c in CASES.items() if k[1] not in SAFE and c.check is None)


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
