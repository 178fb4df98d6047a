"""Shared fixtures: the in-process appliance, its users and tokens, and the real OAuth upstream.

Loaded for the whole suite by `tests/conftest.py` (`pytest_plugins`); no conftest imports them.

- `server`: the appliance as installed (SQLite, private upstreams refused), no side proxy.
- `appliance`: the appliance with its MCP proxy routes also on `proxy_url` and private upstreams
  allowed (the real OAuth upstream and MCP peers run on loopback); `appliance_environ` adds
  `BINDIFY_*` settings to it (a folder's conftest overrides that fixture, not this one).
- `admin_id`, `member_id`, `other_id` and their `*_token`s are seeded into the test's one
  in-process appliance (`inprocess_appliance`): `appliance` when the test or one of its fixtures
  asks for it, else `server` (a module's or folder's own `server` or `appliance` included). So a
  test never starts two appliances to get a user.
- `upstream`: the real OAuth upstream (`peers/oauth_upstream.py`) on the appliance's clock, its
  access tokens living `upstream_access_ttl` seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from peers.oauth_upstream import OAuthUpstream

from .inprocess import Appliance, add_token, add_user, start_appliance


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Appliance]:
    s = await start_appliance(tmp_path)
    yield s
    await s.close()


@pytest.fixture
def appliance_environ() -> dict[str, str]:
    """`BINDIFY_*` settings for `appliance` beyond the defaults (none)."""
    return {}


@pytest.fixture
async def appliance(tmp_path: Path, appliance_environ: dict[str, str]) -> AsyncIterator[Appliance]:
    app = await start_appliance(
        tmp_path, proxy=True, allow_private_upstreams=True, environ=appliance_environ
    )
    yield app
    await app.close()


@pytest.fixture
def inprocess_appliance(request: pytest.FixtureRequest) -> Appliance:
    """The test's one appliance: `appliance` if the test's fixtures include it, else `server`."""
    name = "appliance" if "appliance" in request.fixturenames else "server"
    return cast(Appliance, request.getfixturevalue(name))


@pytest.fixture
def admin_id(inprocess_appliance: Appliance) -> str:
    return add_user(inprocess_appliance, "admin@example.com", "admin")


@pytest.fixture
def member_id(inprocess_appliance: Appliance) -> str:
    return add_user(inprocess_appliance, "member@example.com", "member")


@pytest.fixture
def other_id(inprocess_appliance: Appliance) -> str:
    return add_user(inprocess_appliance, "other@example.com", "member")


@pytest.fixture
def admin_token(inprocess_appliance: Appliance, admin_id: str) -> str:
    return add_token(inprocess_appliance, admin_id, "admin-test")


@pytest.fixture
def member_token(inprocess_appliance: Appliance, member_id: str) -> str:
    return add_token(inprocess_appliance, member_id, "member-test")


@pytest.fixture
def other_token(inprocess_appliance: Appliance, other_id: str) -> str:
    return add_token(inprocess_appliance, other_id, "other-test")


@pytest.fixture
def upstream_access_ttl() -> int:
    """Seconds the `upstream` fixture's access tokens live."""
    return 60


@pytest.fixture
async def upstream(appliance: Appliance, upstream_access_ttl: int) -> AsyncIterator[OAuthUpstream]:
    async with OAuthUpstream(clock=appliance.clock, access_ttl=upstream_access_ttl) as up:
        yield up
