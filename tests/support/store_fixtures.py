"""Store and clock fixtures: a migrated store on each engine, a manual clock, a context.

Loaded for the whole suite by `tests/conftest.py` (`pytest_plugins`); no conftest imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from connections.helpers import (
    ENGINES,
    NOW,
    engine_url,
    make_context,
    make_settings,
    migrated_store,
)

from bindify_appliance.clock import ManualClock
from bindify_appliance.context import AppContext
from bindify_appliance.store import Store


@pytest.fixture(params=ENGINES)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store on SQLite and on PostgreSQL."""
    store = migrated_store(engine_url(request, tmp_path))
    yield store
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store."""
    s = migrated_store(f"sqlite:///{tmp_path}/bindify.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW.timestamp())


@pytest.fixture
def ctx(tmp_path: Path, store: Store, clock: ManualClock) -> AppContext:
    return make_context(make_settings(tmp_path, f"sqlite:///{tmp_path}/bindify.db"), store, clock)
