"""Kept for imports written against the old layout: the fixtures live in
`tests/support/accounts_fixtures.py` and reach every test through `pytest_plugins`."""

from support.accounts_fixtures import (  # noqa: F401 - re-exported
    admin_id,
    admin_token,
    member_id,
    member_token,
    server,
)
