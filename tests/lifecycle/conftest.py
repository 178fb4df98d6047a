"""Fixtures: an in-process appliance (ManualClock) and the real OAuth upstream on its clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from accounts.harness import add_token, add_user
from peers.oauth_upstream import OAuthUpstream
from upstream.harness import Appliance, start_appliance

from .support import Connected, add_service, connect_managed, runtime_of


@pytest.fixture
async def appliance(tmp_path: Path) -> AsyncIterator[Appliance]:
    # Token-lifecycle tests burst 50 concurrent calls through one connection: no per-connection
    # cap here (the cap itself: tests/proxy/test_sandbox_and_limits.py).
    app = await start_appliance(
        tmp_path, proxy=True, environ={"BINDIFY_MAX_STREAMS_PER_CONNECTION": "0"}
    )
    yield app
    await app.close()
    # The composition root's own runtime (its proxy routes carry the refresher) is ours to close.
    await runtime_of(app).upstream.close()


@pytest.fixture
async def upstream(appliance: Appliance) -> AsyncIterator[OAuthUpstream]:
    async with OAuthUpstream(clock=appliance.clock, access_ttl=3600) as up:
        yield up


@pytest.fixture
async def connected(appliance: Appliance, upstream: OAuthUpstream) -> Connected:
    admin = add_user(appliance, "admin@example.com", "admin")  # type: ignore[arg-type]
    member = add_user(appliance, "member@example.com", "member")  # type: ignore[arg-type]
    await add_service(appliance, add_token(appliance, admin, "admin"), upstream)  # type: ignore[arg-type]
    return await connect_managed(appliance, member)
