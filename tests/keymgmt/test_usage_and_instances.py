"""Blob counts per key, orphan fingerprints, and instance records — on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bindify_appliance.crypto.keyring import Keyring
from bindify_appliance.keymgmt import key_usage, orphan_fingerprints
from bindify_appliance.store import Store
from bindify_appliance.store.instances import (
    heartbeat,
    live_instances,
    prune_instances,
    register_instance,
    unregister_instance,
)
from bindify_appliance.store.models import Connection, Instance

from . import ENGINES, NOW, engine_url, new_key, open_store, seed


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(engine_url(request, tmp_path))
    yield s
    s.close()


def test_usage_counts_each_kind_per_key_and_ignores_zero_knowledge(store: Store) -> None:
    old, new = new_key(), new_key()
    seed(store, Keyring([old]), connections=5, services=2, dcr=1, zero_knowledge=4)
    seed(store, Keyring([new]), connections=3, dcr=2)
    both = Keyring([old, new])

    report = store.call(key_usage, both)

    assert [e.fingerprint for e in report.keys] == [old.fingerprint, new.fingerprint]
    first, second = report.keys
    assert first.counts == {"connection": 5, "service_secret": 2, "dcr_registration": 1}
    assert not first.active and second.active
    assert second.counts == {"connection": 3, "service_secret": 0, "dcr_registration": 2}
    assert report.orphans == ()
    assert report.not_on_active() == 8
    assert store.call(orphan_fingerprints, both) == {}


def test_orphans_are_stored_fingerprints_no_configured_key_matches(store: Store) -> None:
    kept, lost = new_key(), new_key()
    (_, blanked), _other = seed(store, Keyring([kept]), connections=2).expected
    seed(store, Keyring([lost]), connections=3, services=1, dcr=1)
    # A managed blob with no fingerprint at all is an orphan too (reported under "").
    store.call(
        lambda: Connection.update(key_fingerprint="").where(Connection.id == blanked).execute()
    )

    orphans = store.call(orphan_fingerprints, Keyring([kept]))

    assert orphans == {lost.fingerprint: 5, "": 1}
    report = store.call(key_usage, Keyring([kept]))
    assert report.of(lost.fingerprint).configured is False
    assert report.of("0123456789abcdef").total == 0


def test_instance_lifecycle(store: Store) -> None:
    register_args = ("inst-1", "0.1.0", ["b" * 16, "a" * 16], NOW)
    store.call(register_instance, *register_args)
    store.call(register_instance, "inst-2", "0.1.0", ["a" * 16], NOW - timedelta(minutes=10))

    live = store.call(live_instances, NOW, timedelta(minutes=2))
    assert [r.id for r in live] == ["inst-1"]
    record = live[0]
    assert record.hostname == socket.gethostname() and record.pid == os.getpid()
    assert record.fingerprints == {"a" * 16, "b" * 16}

    # A heartbeat refreshes the held keys; a second registration replaces the row.
    assert store.call(heartbeat, "inst-2", ["c" * 16], NOW) is True
    assert {
        r.id: r.fingerprints for r in store.call(live_instances, NOW, timedelta(minutes=2))
    } == {
        "inst-1": {"a" * 16, "b" * 16},
        "inst-2": {"c" * 16},
    }
    store.call(register_instance, *register_args)
    assert store.call(lambda: Instance.select().count()) == 2

    store.call(unregister_instance, "inst-1")
    assert store.call(heartbeat, "inst-1", [], NOW) is False
    assert store.call(prune_instances, NOW + timedelta(days=1)) == 1
    assert store.call(live_instances, NOW, timedelta(minutes=2)) == []


def test_unreadable_fingerprint_list_counts_as_holding_nothing(store: Store) -> None:
    store.call(register_instance, "inst-x", "0.1.0", ["a" * 16], NOW)
    store.call(
        lambda: (
            Instance.update(key_fingerprints="{not json").where(Instance.id == "inst-x").execute()
        )
    )
    (record,) = store.call(live_instances, NOW, timedelta(minutes=2))
    assert record.fingerprints == frozenset()
