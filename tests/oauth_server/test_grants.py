"""Grants: the API ("Connected apps"), revocation (RFC 7009), and what ends them (DESIGN §10)."""

from __future__ import annotations

import dataclasses

from support.inprocess import add_token, api, fetch, later

from bindify_appliance.oauth_server.grants import list_grants
from bindify_appliance.oauth_server.housekeeping import purge_once
from bindify_appliance.store.models import BaseModel, OAuthClientRecord, OAuthGrant, OAuthToken
from oauth_server.harness import World


def _count(world: World, model: type[BaseModel]) -> int:
    return int(world.server.store.call(lambda: model.select().count()))


async def _revoke(world: World, form: dict[str, str]) -> int:
    from urllib.parse import urlencode

    answered = await fetch(
        world.url + "/oauth/revoke",
        "POST",
        body=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    return answered.status


async def test_the_grants_api_lists_and_ends_grants(world: World) -> None:
    path = f"/api/v1/connections/{world.managed.id}/grants"
    first = await world.tokens(
        world.managed, (await world.client(client_name="Claude"))["client_id"]
    )
    second = await world.tokens(
        world.managed, (await world.client(client_name="Cursor"))["client_id"]
    )
    listed = await api(world.server, "GET", path, token=world.owner_token)
    assert listed.status == 200
    items = listed.json()["items"]
    assert {i["client_name"] for i in items} == {"Claude", "Cursor"}
    assert set(items[0]) == {"id", "client_id", "client_name", "created_at", "last_used_at"}
    assert all(i["last_used_at"] is None for i in items)
    assert (await world.mcp(first["access_token"])).status == 200
    listed = (await api(world.server, "GET", path, token=world.owner_token)).json()["items"]
    used = {i["client_name"]: i["last_used_at"] for i in listed}
    assert used["Claude"] is not None and used["Cursor"] is None
    # Another member (administrators included) sees nothing and ends nothing.
    stranger = add_token(world.server, world.other_id)
    for method in ("GET", "DELETE"):
        assert (await api(world.server, method, path, token=stranger)).status == 404
        assert (await api(world.server, method, path, token=world.admin_token)).status == 404
    claude = next(i for i in listed if i["client_name"] == "Claude")
    one = await api(world.server, "DELETE", f"{path}/{claude['id']}", token=world.owner_token)
    assert one.status == 204
    again = await api(world.server, "DELETE", f"{path}/{claude['id']}", token=world.owner_token)
    assert again.status == 404
    later(world.server, seconds=2)
    assert (await world.mcp(first["access_token"])).status == 401
    assert (await world.mcp(second["access_token"])).status == 200
    everything = await api(world.server, "DELETE", path, token=world.owner_token)
    assert everything.status == 204
    later(world.server, seconds=2)
    assert (await world.mcp(second["access_token"])).status == 401
    assert (await api(world.server, "GET", path, token=world.owner_token)).json()["items"] == []


async def test_the_revocation_endpoint(world: World) -> None:
    tokens = await world.tokens(world.managed)
    client_id = tokens["client_id"]
    # Unknown, malformed and other clients' tokens: 200, nothing changes.
    assert await _revoke(world, {"client_id": client_id, "token": "nonsense"}) == 200
    stranger = (await world.client(client_name="Stranger"))["client_id"]
    assert await _revoke(world, {"client_id": stranger, "token": tokens["refresh_token"]}) == 200
    assert (await world.mcp(tokens["access_token"])).status == 200
    assert await _revoke(world, {"token": tokens["access_token"]}) == 401  # no client
    # The access token alone.
    assert await _revoke(world, {"client_id": client_id, "token": tokens["access_token"]}) == 200
    later(world.server, seconds=2)
    assert (await world.mcp(tokens["access_token"])).status == 401
    # The refresh token ends the whole grant.
    other = await world.tokens(world.zk, client_id)
    assert await _revoke(world, {"client_id": client_id, "token": other["refresh_token"]}) == 200
    later(world.server, seconds=2)
    assert (await world.mcp(other["access_token"])).status == 401
    assert await list_grants(world.server.ctx, world.zk.id) == []


async def test_disabled_connections_and_members(world: World) -> None:
    tokens = await world.tokens(world.zk)
    path = f"/api/v1/connections/{world.zk.id}"
    off = await api(world.server, "PATCH", path, {"disabled": True}, token=world.owner_token)
    assert off.status == 200, off.text
    later(world.server, seconds=2)
    refused = await world.mcp(tokens["access_token"])
    assert refused.status == 403 and refused.json()["error"]["code"] == -32002
    on = await api(world.server, "PATCH", path, {"disabled": False}, token=world.owner_token)
    assert on.status == 200
    later(world.server, seconds=2)
    assert (await world.mcp(tokens["access_token"])).status == 200
    # Disabling the member ends their grants for good.
    managed = await world.tokens(world.managed)
    user_path = f"/api/v1/users/{world.owner_id}"
    disabled = await api(
        world.server, "PATCH", user_path, {"disabled": True}, token=world.admin_token
    )
    assert disabled.status == 200, disabled.text
    assert _count(world, OAuthGrant) == 0
    await api(world.server, "PATCH", user_path, {"disabled": False}, token=world.admin_token)
    later(world.server, seconds=2)
    assert (await world.mcp(managed["access_token"])).status == 401


async def test_rotating_or_deleting_a_connection_ends_its_grants(world: World) -> None:
    zk = await world.tokens(world.zk)
    managed = await world.tokens(world.managed)
    rotated = await api(
        world.server,
        "POST",
        f"/api/v1/connections/{world.zk.id}/rotate-url",
        {"credentials": world.zk.credentials},
        token=world.owner_token,
    )
    assert rotated.status == 200, rotated.text
    assert await list_grants(world.server.ctx, world.zk.id) == []
    later(world.server, seconds=2)
    assert (await world.mcp(zk["access_token"])).status == 401
    deleted = await api(
        world.server, "DELETE", f"/api/v1/connections/{world.managed.id}", token=world.owner_token
    )
    assert deleted.status == 204
    later(world.server, seconds=2)
    assert (await world.mcp(managed["access_token"])).status == 401
    assert _count(world, OAuthGrant) == 0 and _count(world, OAuthToken) == 0


async def test_a_new_base_url_ends_every_grant_and_registration(world: World) -> None:
    tokens = await world.tokens(world.managed)
    ctx = world.server.ctx
    old = ctx.settings
    ctx.settings = dataclasses.replace(old, base_url="https://bindify.example")
    try:
        later(world.server, seconds=2)
        refused = await world.mcp(tokens["access_token"])
        assert refused.status == 401
        assert "https://bindify.example/.well-known/" in refused.headers["WWW-Authenticate"]
        rotated = await world.token(
            {
                "grant_type": "refresh_token",
                "client_id": tokens["client_id"],
                "refresh_token": tokens["refresh_token"],
            }
        )
        assert rotated.status == 401 and rotated.json()["error"] == "invalid_client"
        await purge_once(ctx)
        assert _count(world, OAuthGrant) == 0
        assert _count(world, OAuthClientRecord) == 0
    finally:
        ctx.settings = old


async def test_removing_the_member_ends_their_grants(world: World) -> None:
    tokens = await world.tokens(world.zk)
    removed = await api(
        world.server, "DELETE", f"/api/v1/users/{world.owner_id}", token=world.admin_token
    )
    assert removed.status == 204, removed.text
    assert _count(world, OAuthGrant) == 0 and _count(world, OAuthToken) == 0
    later(world.server, seconds=2)
    assert (await world.mcp(tokens["access_token"])).status == 401
