"""An MCP client's `bndat_` token is refused with -32004 like the secret URL once billing
suspends its connection (DESIGN §10: "while a connection is disabled or suspended its tokens are
refused"; DESIGN §11), for managed and zero-knowledge grants alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from billing.conftest import billing_settings
from billing.stripe_standin import StripeStandIn

from oauth_server.harness import World, build_world

DAY = 86400


@pytest.fixture
async def standin() -> AsyncIterator[StripeStandIn]:
    stand_in = StripeStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


async def test_tokens_of_a_suspended_connection_are_refused_with_32004(
    tmp_path: Path, standin: StripeStandIn
) -> None:
    settings = billing_settings(standin)
    del settings["allow_private_upstreams"]  # build_world sets it
    world: World = await build_world(tmp_path, **settings)
    try:
        for conn in (world.managed, world.zk):
            tokens = await world.tokens(conn)
            served = await world.mcp(tokens["access_token"])
            assert served.status == 200, served.text
        world.server.clock.advance(5 * DAY + 1)  # the trial ends; the member never subscribed
        for conn in (world.managed, world.zk):
            tokens = await world.tokens(conn)
            refused = await world.mcp(tokens["access_token"])
            assert refused.status == 403, (conn.mode, refused.status, refused.text)
            assert json.loads(refused.body)["error"]["code"] == -32004
    finally:
        await world.close()
