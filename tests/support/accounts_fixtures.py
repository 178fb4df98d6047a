"""Shared fixtures: a running in-process appliance with an admin and a member (SQLite).

Loaded for the whole suite by `tests/conftest.py` (`pytest_plugins`); no conftest imports them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from accounts.harness import Server, add_token, add_user, start_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    s = await start_server(tmp_path)
    yield s
    await s.close()


@pytest.fixture
def admin_id(server: Server) -> str:
    return add_user(server, "admin@example.com", "admin")


@pytest.fixture
def member_id(server: Server) -> str:
    return add_user(server, "member@example.com", "member")


@pytest.fixture
def admin_token(server: Server, admin_id: str) -> str:
    return add_token(server, admin_id, "admin-test")


@pytest.fixture
def member_token(server: Server, member_id: str) -> str:
    return add_token(server, member_id, "member-test")
