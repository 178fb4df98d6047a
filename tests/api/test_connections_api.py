"""The admin API for services and connections: shapes (DESIGN §5), ownership, admin powers,
resolver forgetting, URL rotation, events, and the connect paths that need no OAuth."""

from __future__ import annotations

from typing import Any

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import counts, mcp_tool_call
from support.inprocess import Appliance, api

from bindify_appliance.api.pagination import encode_cursor
from bindify_appliance.store.models import Connection, DcrRegistration, Service

CONNECTION_KEYS = {
    "id",
    "service",
    "label",
    "status",
    "key_storage_mode",
    "auth_type",
    "created_at",
    "last_used_at",
    "last_refreshed_at",
    "background_refresh",
    "policy",
}


async def call(app: Appliance, method: str, path: str, token: str, body: Any = None) -> Any:
    return await api(app, method, path, body, token=token)


@pytest.fixture
async def keyed(appliance: Appliance, admin_token: str) -> OAuthUpstream:
    """An admin-added API-key service ("keyed", Bearer) on the real upstream."""
    up = await OAuthUpstream(api_keys={"Bearer good-key", "query:q-key"}).start()
    appliance_upstreams.append(up)
    body = {
        "id": "keyed",
        "name": "Keyed",
        "mcp_url": up.mcp_url,
        "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
    }
    created = await call(appliance, "POST", "/api/v1/services", admin_token, body)
    assert created.status == 201, created.text
    return up


appliance_upstreams: list[OAuthUpstream] = []


@pytest.fixture(autouse=True)
async def _stop_upstreams() -> Any:
    yield
    while appliance_upstreams:
        await appliance_upstreams.pop().stop()


class Forgets:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def forget(self, connection_id: str) -> None:
        self.ids.append(connection_id)


# -- services -------------------------------------------------------------------------------


async def test_service_catalogue_and_admin_changes(
    appliance: Appliance, admin_token: str, member_token: str
) -> None:
    listed = await call(appliance, "GET", "/api/v1/services", member_token)
    items = listed.json()["items"]
    assert [s["id"] for s in items] == [
        "linear",
        "github",
        "notion",
        "atlassian",
        "figma",
        "todoist",
        "ticktick",
    ]
    assert set(items[0]) == {
        "id",
        "name",
        "builtin",
        "transport",
        "mcp_url",
        "auth",
        "oauth_configured",
        "api_key",
        "policy",
    }
    page = await call(appliance, "GET", "/api/v1/services?limit=3", member_token)
    assert len(page.json()["items"]) == 3 and page.json()["next_cursor"]
    rest = await call(
        appliance, "GET", f"/api/v1/services?cursor={page.json()['next_cursor']}", member_token
    )
    assert rest.json()["items"][0]["id"] == "atlassian" and rest.json()["next_cursor"] is None
    # A cursor naming a service no longer listed is refused (the client starts again) rather
    # than silently restarting from the first page, which could page forever.
    gone = await call(
        appliance, "GET", f"/api/v1/services?cursor={encode_cursor(['gone'])}", member_token
    )
    assert gone.status == 400 and gone.json()["field"] == "cursor"

    body = {
        "id": "acme",
        "name": "Acme",
        "mcp_url": "https://mcp.acme.example/mcp",
        "auth": {
            "type": "oauth",
            "client_id": "acme-app",
            "client_secret": "acme-secret",
            "authorization_url": "https://auth.acme.example/authorize",
            "token_url": "https://auth.acme.example/token",
            "scopes": ["read"],
            "extra_authorize_params": {"audience": "api://acme"},
        },
    }
    assert (await call(appliance, "POST", "/api/v1/services", member_token, body)).status == 403
    created = await call(appliance, "POST", "/api/v1/services", admin_token, body)
    assert created.status == 201, created.text
    service = created.json()["service"]
    assert "acme-secret" not in created.text and service["oauth_configured"] is True
    assert service["auth"]["oauth"]["client_secret_source"] == "stored"
    row = appliance.store.call(lambda: Service.get_by_id("acme"))
    assert row.oauth_client_secret_sealed and "acme-secret" not in row.oauth_client_secret_sealed
    again = await call(appliance, "POST", "/api/v1/services", admin_token, body)
    assert again.status == 409
    patched = await call(
        appliance, "PATCH", "/api/v1/services/acme", admin_token, {"name": "Acme Corp"}
    )
    assert patched.status == 200 and patched.json()["service"]["name"] == "Acme Corp"
    # Built-ins take only OAuth app credentials.
    github = await call(
        appliance,
        "PATCH",
        "/api/v1/services/github",
        admin_token,
        {"auth": {"client_id": "gh", "client_secret": "gh-secret"}},
    )
    assert github.status == 200 and github.json()["service"]["oauth_configured"] is True
    assert "gh-secret" not in github.text
    renamed = await call(appliance, "PATCH", "/api/v1/services/github", admin_token, {"name": "X"})
    assert renamed.status == 400
    assert (await call(appliance, "DELETE", "/api/v1/services/github", admin_token)).status == 400
    assert (await call(appliance, "DELETE", "/api/v1/services/acme", member_token)).status == 403
    assert (await call(appliance, "DELETE", "/api/v1/services/acme", admin_token)).status == 204
    assert (await call(appliance, "DELETE", "/api/v1/services/acme", admin_token)).status == 404


async def test_admin_added_oauth_service_with_explicit_client(
    appliance: Appliance, admin_token: str, member_token: str
) -> None:
    async with OAuthUpstream(
        clock=appliance.clock, static_clients={"acme-app": "acme-secret"}, dcr=False
    ) as up:
        body = {
            "id": "acme",
            "name": "Acme",
            "mcp_url": up.mcp_url,
            "auth": {
                "type": "oauth",
                "client_id": "acme-app",
                "client_secret": "acme-secret",
                "authorization_url": up.authorize_url,
                "token_url": up.token_url,
                "scopes": ["read"],
                "resource": False,
                "extra_authorize_params": {"audience": "api://acme"},
            },
        }
        assert (await call(appliance, "POST", "/api/v1/services", admin_token, body)).status == 201
        started = await call(
            appliance, "POST", "/api/v1/connections/acme/authorize", member_token, {}
        )
        from support.connect_helpers import query_of

        params = query_of(started.json()["url"])
        assert params["audience"] == "api://acme" and params["client_id"] == "acme-app"
        assert params["scope"] == "read" and "resource" not in params
        assert params["code_challenge_method"] == "S256"
        assert counts(appliance.store)["registrations"] == 0


async def test_deleting_a_service_in_use_is_refused(
    appliance: Appliance, admin_token: str, member_token: str, keyed: OAuthUpstream
) -> None:
    made = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {"service": "keyed", "api_key": "good-key"},
    )
    assert made.status == 201
    refused = await call(appliance, "DELETE", "/api/v1/services/keyed", admin_token)
    assert refused.status == 409 and refused.json()["error"] == "conflict"
    connection = made.json()["connection"]["id"]
    assert (
        await call(appliance, "DELETE", f"/api/v1/connections/{connection}", member_token)
    ).status == 204
    assert (await call(appliance, "DELETE", "/api/v1/services/keyed", admin_token)).status == 204


async def test_deleting_a_service_forgets_its_registrations(
    appliance: Appliance, admin_token: str
) -> None:
    from datetime import UTC, datetime

    body = {
        "id": "gone",
        "name": "Gone",
        "mcp_url": "https://gone.example/mcp",
        "auth": {"type": "oauth"},
    }
    assert (await call(appliance, "POST", "/api/v1/services", admin_token, body)).status == 201
    now = datetime.now(UTC)
    appliance.store.call(
        lambda: DcrRegistration.create(
            service="gone",
            issuer="https://gone.example",
            registration_sealed="v1:x",
            key_fingerprint="fp",
            created_at=now,
            updated_at=now,
        )
    )
    assert (await call(appliance, "DELETE", "/api/v1/services/gone", admin_token)).status == 204
    assert counts(appliance.store)["registrations"] == 0


# -- connections ----------------------------------------------------------------------------


async def test_api_key_connections_lifecycle_and_ownership(
    appliance: Appliance,
    admin_token: str,
    member_token: str,
    other_token: str,
    keyed: OAuthUpstream,
) -> None:
    forgets = Forgets()
    appliance.connect.resolver = forgets
    first = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {"service": "keyed", "api_key": "good-key"},
    )
    assert first.status == 201, first.text
    body = first.json()
    assert set(body) == {"connection", "secret_url", "api_key"}
    assert set(body["connection"]) == CONNECTION_KEYS
    assert body["connection"]["label"] == "Keyed 1"
    assert body["secret_url"].startswith(appliance.url + "/mcp/keyed/")
    cid = body["connection"]["id"]
    appliance.clock.advance(1)  # lists are ordered by creation time
    second = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {
            "service": "keyed",
            "api_key": "good-key",
            "label": "  Laptop  ",
            "key_storage_mode": "managed",
        },
    )
    assert second.json()["connection"]["label"] == "Laptop"
    assert second.json()["connection"]["key_storage_mode"] == "managed"
    sid = second.json()["connection"]["id"]

    listed = (await call(appliance, "GET", "/api/v1/connections", member_token)).json()
    assert [c["id"] for c in listed["items"]] == [cid, sid]
    assert "good-key" not in str(listed) and listed["next_cursor"] is None
    page = (await call(appliance, "GET", "/api/v1/connections?limit=1", member_token)).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    assert (await call(appliance, "GET", "/api/v1/connections", other_token)).json()["items"] == []

    # Not yours: not found, and nothing changes — for an admin too (who disables through
    # /api/v1/admin/connections/{id}).
    for method, path, payload in [
        ("GET", f"/api/v1/connections/{cid}", None),
        ("PATCH", f"/api/v1/connections/{cid}", {"label": "mine"}),
        ("DELETE", f"/api/v1/connections/{cid}", None),
        ("POST", f"/api/v1/connections/{cid}/rotate-url", {}),
        ("GET", f"/api/v1/connections/{cid}/events", None),
    ]:
        assert (await call(appliance, method, path, other_token, payload)).status == 404
        assert (await call(appliance, method, path, admin_token, payload)).status == 404
    for attempt in ({}, {"disabled": True}):
        assert (
            await call(appliance, "PATCH", f"/api/v1/connections/{cid}", admin_token, attempt)
        ).status == 404
    disabled = await call(
        appliance, "PATCH", f"/api/v1/admin/connections/{cid}", admin_token, {"disabled": True}
    )
    assert disabled.status == 200 and disabled.json()["connection"]["status"] == "disabled"
    assert forgets.ids == [cid]
    # The owner cannot undo an administrator's disable (nothing changes, the label neither).
    undo = await call(
        appliance,
        "PATCH",
        f"/api/v1/connections/{cid}",
        member_token,
        {"disabled": False, "label": "Renamed"},
    )
    assert undo.status == 403 and undo.json()["error"] == "forbidden"
    assert (
        await call(
            appliance, "PATCH", f"/api/v1/admin/connections/{cid}", admin_token, {"disabled": False}
        )
    ).status == 200
    own = await call(
        appliance, "PATCH", f"/api/v1/connections/{cid}", member_token, {"disabled": True}
    )
    assert own.status == 200
    enabled = await call(
        appliance,
        "PATCH",
        f"/api/v1/connections/{cid}",
        member_token,
        {"disabled": False, "label": "Renamed"},
    )
    assert enabled.json()["connection"] == {
        **enabled.json()["connection"],
        "status": "active",
        "label": "Renamed",
    }
    for bad in ({"label": "   "}, {"label": "x" * 101}, {"label": 5}, {"colour": "red"}):
        assert (
            await call(appliance, "PATCH", f"/api/v1/connections/{cid}", member_token, bad)
        ).status == 400
    got = await call(appliance, "GET", f"/api/v1/connections/{cid}", member_token)
    assert got.json()["connection"]["label"] == "Renamed"

    events = (
        await call(appliance, "GET", f"/api/v1/connections/{cid}/events", member_token)
    ).json()
    kinds = [(e["event_type"], e["category"]) for e in events["items"]]
    assert ("connection_created", "api_key") in kinds and ("connection", "disabled") in kinds

    # Rotate: zero-knowledge needs the current credentials; the old key stops at once.
    old_key = body["api_key"]
    refused = await call(
        appliance, "POST", f"/api/v1/connections/{cid}/rotate-url", member_token, {}
    )
    assert refused.status == 409
    rotated = await call(
        appliance,
        "POST",
        f"/api/v1/connections/{cid}/rotate-url",
        member_token,
        {"api_key": old_key},
    )
    assert rotated.status == 200 and rotated.json()["api_key"] != old_key
    assert forgets.ids[-1] == cid
    managed = await call(
        appliance, "POST", f"/api/v1/connections/{sid}/rotate-url", member_token, {}
    )
    assert managed.status == 200

    assert (
        await call(appliance, "DELETE", f"/api/v1/connections/{cid}", member_token)
    ).status == 204
    assert forgets.ids[-1] == cid
    assert (await call(appliance, "GET", f"/api/v1/connections/{cid}", member_token)).status == 404


async def test_the_stored_key_reaches_the_upstream_through_the_proxy(
    appliance: Appliance, member_token: str, keyed: OAuthUpstream
) -> None:
    made = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {"service": "keyed", "api_key": "good-key"},
    )
    assert appliance.proxy_url is not None
    path = made.json()["secret_url"][len(appliance.url) :]
    answer = await mcp_tool_call(appliance.proxy_url + path, "echo", {"text": "ok"})
    assert answer["result"]["content"][0]["text"] == "echo:ok"
    assert keyed.mcp_authorizations[-1] == "Bearer good-key"
    # A new URL: the old one stops at once (the resolver was told to forget).
    rotated = await call(
        appliance,
        "POST",
        f"/api/v1/connections/{made.json()['connection']['id']}/rotate-url",
        member_token,
        {"api_key": made.json()["api_key"]},
    )
    assert rotated.status == 200
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            appliance.proxy_url + path,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream"},
        ) as old,
    ):
        assert old.status == 404
    fresh = rotated.json()["secret_url"][len(appliance.url) :]
    answer = await mcp_tool_call(appliance.proxy_url + fresh, "echo", {"text": "new"})
    assert answer["result"]["content"][0]["text"] == "echo:new"


async def test_query_injection_and_auth_none_services(
    appliance: Appliance, admin_token: str, member_token: str
) -> None:
    async with OAuthUpstream(api_keys={"query:q-key"}) as up:
        body = {
            "id": "queried",
            "name": "Queried",
            "mcp_url": up.mcp_url,
            "auth": {"type": "api_key", "query": "key"},
        }
        assert (await call(appliance, "POST", "/api/v1/services", admin_token, body)).status == 201
        ok = await call(
            appliance,
            "POST",
            "/api/v1/connections",
            member_token,
            {"service": "queried", "api_key": "q-key"},
        )
        assert ok.status == 201, ok.text
        bad = await call(
            appliance,
            "POST",
            "/api/v1/connections",
            member_token,
            {"service": "queried", "api_key": "nope-key"},
        )
        assert bad.status == 422 and "nope-key" not in bad.text
    open_body = {
        "id": "open",
        "name": "Open",
        "mcp_url": "https://open.example/mcp",
        "auth": {"type": "none"},
    }
    assert (await call(appliance, "POST", "/api/v1/services", admin_token, open_body)).status == 201
    made = await call(appliance, "POST", "/api/v1/connections", member_token, {"service": "open"})
    assert made.status == 201 and made.json()["connection"]["auth_type"] == "none"
    refused = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {"service": "open", "api_key": "x"},
    )
    assert refused.status == 400


async def test_connect_input_errors_store_nothing(
    appliance: Appliance, member_token: str, other_token: str, keyed: OAuthUpstream
) -> None:
    mine = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        other_token,
        {"service": "keyed", "api_key": "good-key"},
    )
    theirs = mine.json()["connection"]["id"]
    before = counts(appliance.store)
    calls = len(keyed.mcp_authorizations)
    for body, status in [
        ({"service": "nope", "api_key": "k"}, 404),
        ({"service": "keyed"}, 400),
        ({"service": "keyed", "api_key": ""}, 400),
        ({"service": "keyed", "api_key": "k", "key_storage_mode": "plain"}, 400),
        ({"service": "keyed", "api_key": "k", "label": "\x01"}, 400),
        ({"service": "keyed", "api_key": "k", "replace": theirs}, 404),
        ({"service": "keyed", "api_key": "k", "auth_mode": "personal"}, 400),
        ({"service": "keyed", "api_key": "k", "application": "jira"}, 400),
        ({"service": "linear"}, 400),
        ({"service": "notion", "api_key": "k"}, 400),
    ]:
        answer = await call(appliance, "POST", "/api/v1/connections", member_token, body)
        assert answer.status == status, (body, answer.text)
    assert counts(appliance.store) == before
    assert len(keyed.mcp_authorizations) == calls  # no upstream call for bad input


async def test_replacing_an_api_key_connection(
    appliance: Appliance, member_token: str, keyed: OAuthUpstream
) -> None:
    forgets = Forgets()
    appliance.connect.resolver = forgets
    old = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {"service": "keyed", "api_key": "good-key"},
    )
    old_id = old.json()["connection"]["id"]
    rejected = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {"service": "keyed", "api_key": "bad-key", "replace": old_id},
    )
    assert rejected.status == 422
    assert appliance.store.call(lambda: Connection.get_or_none(Connection.id == old_id))
    new = await call(
        appliance,
        "POST",
        "/api/v1/connections",
        member_token,
        {"service": "keyed", "api_key": "good-key", "replace": old_id},
    )
    assert new.status == 201
    assert appliance.store.call(lambda: Connection.get_or_none(Connection.id == old_id)) is None
    assert forgets.ids == [old_id]
