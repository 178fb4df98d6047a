"""Fixtures for connection tests: a migrated store on each engine, a context around it."""

from .fixtures import any_store, clock, ctx, store  # noqa: F401 - fixtures are found by name
