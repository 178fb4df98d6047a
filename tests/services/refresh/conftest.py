"""The refresh tests' settings for the shared `appliance` and `upstream` fixtures, and a managed
OAuth connection made through the real flow (`connected`)."""

from __future__ import annotations

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.inprocess import Appliance, add_token, add_user
from support.managed import Connected, add_service, connect_managed


@pytest.fixture
def appliance_environ() -> dict[str, str]:
    # Token-lifecycle tests burst 50 concurrent calls through one connection: no per-connection
    # cap here (the cap itself: tests/proxy/test_sandbox_and_limits.py).
    return {"BINDIFY_MAX_STREAMS_PER_CONNECTION": "0"}


@pytest.fixture
def upstream_access_ttl() -> int:
    return 3600  # an hour, as providers issue them: the tests move the clock to expiry


@pytest.fixture
async def connected(appliance: Appliance, upstream: OAuthUpstream) -> Connected:
    admin = add_user(appliance, "admin@example.com", "admin")
    member = add_user(appliance, "member@example.com", "member")
    await add_service(appliance, add_token(appliance, admin, "admin"), upstream)
    return await connect_managed(appliance, member)
