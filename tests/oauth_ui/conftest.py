"""Fixtures: a running in-process appliance (SQLite) with a member, an `open` service (auth
none, relaying to a loopback upstream that is never reached here) and a client registered
through `POST /oauth/register`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.inprocess import Server, add_token, add_user, start_appliance

from oauth_ui.flow import REDIRECT, add_open_service, register_client


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    s = await start_appliance(tmp_path, allow_private_upstreams=True)
    admin = add_user(s, "admin@example.com", "admin")
    await add_open_service(s, add_token(s, admin, "admin"))
    yield s
    await s.app.settings["runtime"].close()
    await s.close()


@pytest.fixture
async def client_id(server: Server) -> str:
    return await register_client(server, [REDIRECT])
