"""Kept for imports written against the old layout: the fixtures live in
`tests/support/store_fixtures.py` and reach every test through `pytest_plugins`."""

from support.store_fixtures import any_store, clock, ctx, store  # noqa: F401 - re-exported
