"""Ending a grant takes effect at once on the instance that ended it (DESIGN §10).

Each test first uses the access token, so its row sits in the proxy's per-instance memo, then
ends the grant one way and uses the token again without letting the clock move: the memo must
not serve the ended grant. (Other instances see it within the memo's second:
test_two_instances.py.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from support.inprocess import api, fetch

from oauth_server.harness import Conn, World


async def _used(world: World, conn: Conn) -> dict[str, Any]:
    tokens = await world.tokens(conn)
    assert (await world.mcp(tokens["access_token"])).status == 200  # memoised now
    return tokens


async def _revoke(world: World, client_id: str, token: str) -> None:
    answered = await fetch(
        world.url + "/oauth/revoke",
        "POST",
        body=urlencode({"client_id": client_id, "token": token}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answered.status == 200


async def _refused_now(world: World, tokens: dict[str, Any]) -> None:
    refused = await world.mcp(tokens["access_token"])
    assert refused.status == 401, refused.text
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


@pytest.mark.parametrize("which", ["one", "all"])
async def test_the_grants_api(world: World, which: str) -> None:
    tokens = await _used(world, world.managed)
    path = f"/api/v1/connections/{world.managed.id}/grants"
    if which == "one":
        (grant,) = (await api(world.server, "GET", path, token=world.owner_token)).json()["items"]
        path = f"{path}/{grant['id']}"
    ended = await api(world.server, "DELETE", path, token=world.owner_token)
    assert ended.status == 204
    await _refused_now(world, tokens)


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_the_revocation_endpoint(world: World, kind: str) -> None:
    tokens = await _used(world, world.zk)
    await _revoke(world, tokens["client_id"], tokens[kind])
    await _refused_now(world, tokens)


async def test_refresh_token_reuse(world: World) -> None:
    tokens = await _used(world, world.managed)
    form = {
        "grant_type": "refresh_token",
        "client_id": tokens["client_id"],
        "refresh_token": tokens["refresh_token"],
    }
    assert (await world.token(form)).status == 200
    assert (await world.token(form)).status == 400  # reuse: the grant ends
    await _refused_now(world, tokens)


async def test_rotating_the_connection_url(world: World) -> None:
    tokens = await _used(world, world.managed)
    rotated = await api(
        world.server,
        "POST",
        f"/api/v1/connections/{world.managed.id}/rotate-url",
        {},
        token=world.owner_token,
    )
    assert rotated.status == 200, rotated.text
    await _refused_now(world, tokens)


async def test_deleting_the_connection(world: World) -> None:
    tokens = await _used(world, world.zk)
    deleted = await api(
        world.server, "DELETE", f"/api/v1/connections/{world.zk.id}", token=world.owner_token
    )
    assert deleted.status == 204
    await _refused_now(world, tokens)


@pytest.mark.parametrize("how", ["disable", "delete"])
async def test_disabling_or_removing_the_member(world: World, how: str) -> None:
    tokens = await _used(world, world.managed)
    path = f"/api/v1/users/{world.owner_id}"
    if how == "disable":
        done = await api(world.server, "PATCH", path, {"disabled": True}, token=world.admin_token)
        assert done.status == 200, done.text
    else:
        done = await api(world.server, "DELETE", path, token=world.admin_token)
        assert done.status == 204, done.text
    await _refused_now(world, tokens)


async def test_disabling_the_connection_refuses_at_once_and_enabling_restores(
    world: World,
) -> None:
    tokens = await _used(world, world.zk)
    path = f"/api/v1/connections/{world.zk.id}"
    off = await api(world.server, "PATCH", path, {"disabled": True}, token=world.owner_token)
    assert off.status == 200, off.text
    refused = await world.mcp(tokens["access_token"])
    assert refused.status == 403 and refused.json()["error"]["code"] == -32002
    on = await api(world.server, "PATCH", path, {"disabled": False}, token=world.owner_token)
    assert on.status == 200, on.text
    assert (await world.mcp(tokens["access_token"])).status == 200
