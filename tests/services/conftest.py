"""Fixtures for registry tests: migrated stores (both engines) and a manual clock."""

from connections.fixtures import any_store, clock, store  # noqa: F401 - found by name
