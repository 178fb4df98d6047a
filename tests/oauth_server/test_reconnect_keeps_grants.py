"""Reconnecting a connection in place (DESIGN §15) keeps its MCP clients' grants (DESIGN §10):
same id, same secret URL, so the grant's access token keeps working, before and after the
memo's second, and the grant stays listed under "Connected apps"."""

from __future__ import annotations

import pytest
from support.inprocess import api, later

from bindify_appliance.oauth_server.grants import list_grants
from oauth_server.harness import Conn, World


@pytest.mark.parametrize("mode", ["managed", "zero_knowledge"])
async def test_reconnect_in_place_keeps_the_grant_and_its_token(world: World, mode: str) -> None:
    conn = world.managed if mode == "managed" else world.zk
    tokens = await world.tokens(conn)
    assert (await world.mcp(tokens["access_token"])).status == 200
    (grant,) = await list_grants(world.server.ctx, conn.id)
    body = {"credentials": conn.credentials} if mode == "zero_knowledge" else {}
    done = await api(
        world.server,
        "POST",
        f"/api/v1/connections/{conn.id}/reconnect",
        body,
        token=world.owner_token,
    )
    assert done.status == 200, done.text
    assert (await world.mcp(tokens["access_token"])).status == 200  # at once
    later(world.server, seconds=2)
    assert (await world.mcp(tokens["access_token"])).status == 200  # and after the memo
    assert [g.id for g in await list_grants(world.server.ctx, conn.id)] == [grant.id]
    # The refresh token still rotates, and the new access token reaches the connection too.
    rotated = await world.token(
        {
            "grant_type": "refresh_token",
            "client_id": tokens["client_id"],
            "refresh_token": tokens["refresh_token"],
        }
    )
    assert rotated.status == 200, rotated.text
    assert (await world.mcp(rotated.json()["access_token"])).status == 200


async def test_a_new_upstream_key_reaches_the_upstream_under_the_same_grant(world: World) -> None:
    keyed = {
        "id": "keyed",
        "name": "Keyed",
        "mcp_url": world.upstream.url("/echo"),
        "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
    }
    made = await api(world.server, "POST", "/api/v1/services", keyed, token=world.admin_token)
    assert made.status == 201, made.text
    created = await api(
        world.server,
        "POST",
        "/api/v1/connections",
        {"service": "keyed", "api_key": "key-one", "key_storage_mode": "managed"},
        token=world.owner_token,
    )
    assert created.status == 201, created.text
    answer = created.json()
    conn = Conn(answer["connection"]["id"], answer["secret_url"].rsplit("/", 1)[1], "managed")
    client_id = (await world.client())["client_id"]
    code, verifier = await world.code(client_id, conn, service="keyed")
    exchanged = await world.exchange(client_id, code, verifier)
    assert exchanged.status == 200, exchanged.text
    access = exchanged.json()["access_token"]
    assert (await world.mcp(access, service="keyed")).status == 200
    assert world.upstream.hits("/echo")[-1].header("Authorization") == "Bearer key-one"
    done = await api(
        world.server,
        "POST",
        f"/api/v1/connections/{conn.id}/reconnect",
        {"api_key": "key-two"},
        token=world.owner_token,
    )
    assert done.status == 200, done.text
    assert (await world.mcp(access, service="keyed")).status == 200
    assert world.upstream.hits("/echo")[-1].header("Authorization") == "Bearer key-two"
    assert len(await list_grants(world.server.ctx, conn.id)) == 1
