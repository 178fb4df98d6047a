"""Shared set-up for connection, service and resolver tests: a real migrated database, keys,
settings and an `AppContext` around them. Imported by tests/proxy/test_resolver.py as well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.stores import migrated_store as migrated_store  # re-exported for older imports

from bindify_appliance.clock import Clock, ManualClock
from bindify_appliance.config import Settings
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.keyring import generate_master_key
from bindify_appliance.datadir import KeySource
from bindify_appliance.kv import MemoryKV
from bindify_appliance.store import Store
from bindify_appliance.store.models import User

ENGINES = ["sqlite", "postgresql"]
BASE_URL = "https://bindify.example.com"
NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite file in tmp_path, or a fresh migrated PostgreSQL database (`request.param`).

    The caller migrates at once (`migrated_store`): on SQLite that copies a migrated template
    file, on PostgreSQL the database is a copy of a migrated template already
    (`support.databases`), so either way `apply` finds nothing left to do.
    """
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path}/bindify.db"
    return str(request.getfixturevalue("pg_migrated_url"))


def master_keys_json(*keys: str, inactive: tuple[str, ...] = ()) -> str:
    return json.dumps([{"key": k, **({"active": False} if k in inactive else {})} for k in keys])


def make_settings(
    tmp_path: Path,
    database_url: str,
    *,
    master_keys: str | None = None,
    overrides: Mapping[str, str] | None = None,
    allow_private: bool = False,
) -> Settings:
    return Settings(
        data_dir=str(tmp_path),
        base_url=BASE_URL,
        database_url=database_url,
        master_keys=master_keys or master_keys_json(generate_master_key()),
        allow_private_upstreams=allow_private,
        service_overrides=dict(overrides or {}),
    )


def make_context(settings: Settings, store: Store, clock: Clock | None = None) -> AppContext:
    clock = clock or ManualClock(NOW.timestamp())
    return AppContext(
        settings=settings,
        store=store,
        kv=MemoryKV(clock),
        keys=KeySource(settings),
        clock=clock,
        secret_key=b"k" * 32,
        instance_id="test-instance",
    )


def add_user(store: Store, email: str = "member@example.com", *, disabled: bool = False) -> str:
    def unit() -> str:
        user = User.create(
            email=email,
            role="member",
            created_at=NOW,
            updated_at=NOW,
            disabled_at=NOW if disabled else None,
        )
        return str(user.id)

    return store.call(unit)


def set_user_disabled(store: Store, user_id: str, disabled: bool) -> None:
    store.call(
        lambda: (
            User.update(disabled_at=NOW if disabled else None).where(User.id == user_id).execute()
        )
    )
