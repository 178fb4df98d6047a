"""Fixtures: a running in-process appliance with an admin and a member (SQLite)."""

from accounts.fixtures import (  # noqa: F401 - fixtures are found by name
    admin_id,
    admin_token,
    member_id,
    member_token,
    server,
)
