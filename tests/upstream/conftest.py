"""Fixtures: the appliance (with the proxy beside it), users, tokens, the real OAuth upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from accounts.harness import add_token, add_user
from peers.oauth_upstream import OAuthUpstream

from .harness import Appliance, start_appliance


@pytest.fixture
async def appliance(tmp_path: Path) -> AsyncIterator[Appliance]:
    app = await start_appliance(tmp_path, proxy=True)
    yield app
    await app.close()


@pytest.fixture
def admin_id(appliance: Appliance) -> str:
    return add_user(appliance, "admin@example.com", "admin")  # type: ignore[arg-type]


@pytest.fixture
def member_id(appliance: Appliance) -> str:
    return add_user(appliance, "member@example.com", "member")  # type: ignore[arg-type]


@pytest.fixture
def other_id(appliance: Appliance) -> str:
    return add_user(appliance, "other@example.com", "member")  # type: ignore[arg-type]


@pytest.fixture
def admin_token(appliance: Appliance, admin_id: str) -> str:
    return add_token(appliance, admin_id, "admin")  # type: ignore[arg-type]


@pytest.fixture
def member_token(appliance: Appliance, member_id: str) -> str:
    return add_token(appliance, member_id, "member")  # type: ignore[arg-type]


@pytest.fixture
def other_token(appliance: Appliance, other_id: str) -> str:
    return add_token(appliance, other_id, "other")  # type: ignore[arg-type]


@pytest.fixture
async def upstream(appliance: Appliance) -> AsyncIterator[OAuthUpstream]:
    async with OAuthUpstream(clock=appliance.clock, access_ttl=60) as up:
        yield up
