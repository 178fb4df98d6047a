"""Fixtures for registry tests: migrated stores (both engines), settings, a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from connections.helpers import ENGINES, NOW, engine_url, migrated_store

from bindify_appliance.clock import ManualClock
from bindify_appliance.store import Store


@pytest.fixture(params=ENGINES)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = migrated_store(engine_url(request, tmp_path))
    yield store
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = migrated_store(f"sqlite:///{tmp_path}/bindify.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW.timestamp())
