"""The rotation core on SQLite and PostgreSQL: planning, instance checks, re-encryption, races."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bindify_appliance.clock import ManualClock
from bindify_appliance.crypto.keyring import Keyring, seal_managed
from bindify_appliance.errors import KeyringError
from bindify_appliance.keymgmt import (
    Reencryptor,
    instances_lacking,
    key_usage,
    plan_rotation,
    wait_for_instances,
)
from bindify_appliance.store import Store
from bindify_appliance.store.connections import swap_tokens
from bindify_appliance.store.instances import heartbeat, register_instance
from bindify_appliance.store.keys import BlobKind, Rewrite, SealedRow, read_row
from bindify_appliance.store.models import Connection, Instance, Service

from . import (
    ENGINES,
    NOW,
    RefreshWriter,
    decrypt_all,
    engine_url,
    new_key,
    open_store,
    seed,
    zero_knowledge_blobs,
)


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = open_store(engine_url(request, tmp_path))
    yield s
    s.close()


# ----------------------------------------------------------------------------- planning


def test_plan_covers_every_starting_point(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path}/plan.db")
    try:
        old, new = new_key(), new_key(active=False)
        seed(s, Keyring([old]), connections=3)
        pending_new = Keyring([old, new])
        usage = s.call(key_usage, pending_new)

        plan = plan_rotation(pending_new, from_env=False, usage=usage)
        assert (plan.target, plan.activate, plan.generate) == (new.fingerprint, True, False)
        with pytest.raises(KeyringError, match='marked "active": false'):
            plan_rotation(pending_new, from_env=True, usage=usage)

        activated = pending_new.activated(new.fingerprint)
        usage = s.call(key_usage, activated)
        for from_env in (False, True):  # a crashed or env-activated rotation is finished
            plan = plan_rotation(activated, from_env=from_env, usage=usage)
            assert (plan.target, plan.activate, plan.pending) == (new.fingerprint, False, 3)

        current = Keyring([old])
        usage = s.call(key_usage, current)
        assert plan_rotation(current, from_env=True, usage=usage).target is None
        plan = plan_rotation(current, from_env=False, usage=usage)
        assert plan.generate and plan.activate and plan.target is None and plan.pending == 3
    finally:
        s.close()


# ----------------------------------------------------------------------------- instances


def test_instances_lacking_and_waiting(store: Store) -> None:
    key = "a" * 16
    store.call(register_instance, "holds", "0.1.0", [key], NOW)
    store.call(Instance.update(hostname="host-b").where(Instance.id == "holds").execute)
    store.call(register_instance, "lacks", "0.1.0", ["b" * 16], NOW)
    store.call(Instance.update(hostname="host-c").where(Instance.id == "lacks").execute)
    store.call(register_instance, "stale", "0.1.0", [], NOW - timedelta(minutes=3))

    assert [r.id for r in instances_lacking(store, key, NOW)] == ["lacks"]

    clock = ManualClock(NOW.timestamp())
    told: list[list[str]] = []

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if clock.now() >= NOW + timedelta(seconds=5):  # the instance re-read its key file
            store.call(heartbeat, "lacks", [key, "b" * 16], clock.now())

    left = wait_for_instances(
        store,
        key,
        clock,
        timeout=30,
        sleep=sleep,
        on_wait=lambda pending: told.append([r.id for r in pending]),
    )
    assert left == [] and told == [["lacks"]]

    clock2 = ManualClock(clock.time())
    left = wait_for_instances(store, "c" * 16, clock2, timeout=10, sleep=clock2.advance)
    assert {r.id for r in left} == {"holds", "lacks"}
    assert clock2.time() - clock.time() >= 10


def test_a_killed_local_instance_is_not_waited_for(store: Store) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(done.stdout)
    store.call(register_instance, "dead", "0.1.0", [], NOW)
    store.call(Instance.update(pid=dead_pid).where(Instance.id == "dead").execute)
    assert instances_lacking(store, "a" * 16, NOW) == []
    # The same record on another host cannot be checked, so it still counts.
    store.call(Instance.update(hostname=socket.gethostname() + "-x").execute)
    assert [r.id for r in instances_lacking(store, "a" * 16, NOW)] == ["dead"]


# ----------------------------------------------------------------------------- re-encryption


def test_reencrypts_every_kind_and_leaves_zero_knowledge_alone(store: Store) -> None:
    old, new = new_key(), new_key()
    seeded = seed(store, Keyring([old]), connections=230, services=3, dcr=2, zero_knowledge=5)
    current = seed(store, Keyring([new]), connections=4)
    keyring = Keyring([old, new])
    zk_before = zero_knowledge_blobs(store)
    progress: list[tuple[int, int]] = []

    result = Reencryptor(
        store, keyring, ManualClock(), batch_size=40, progress=lambda d, t: progress.append((d, t))
    ).run()

    assert result.rewritten == {"connection": 230, "service_secret": 3, "dcr_registration": 2}
    assert (result.already_current, result.failures, result.remaining) == (4, [], 0)
    assert result.passes == 1
    assert progress[0] == (0, 235) and progress[-1] == (235, 235)
    after = decrypt_all(store, keyring)
    assert {fp for fp, _ in after.values()} == {new.fingerprint}
    expected = seeded.expected | current.expected
    assert {k: plain for k, (_, plain) in after.items()} == expected
    assert zero_knowledge_blobs(store) == zk_before
    # Each connection was rewritten once through the compare-and-swap (generation bumped).
    gens = store.call(lambda: {c.id: c.token_generation for c in Connection.select()})
    for kind, cid in seeded.expected:
        if kind == "connection":
            assert gens[cid] in (1, 2, 3)
    # Nothing left: a second run is a no-op.
    again = Reencryptor(store, keyring, ManualClock()).run()
    assert again.total_rewritten == 0 and again.already_current == 239


def test_bad_rows_are_reported_and_do_not_stop_the_rest(store: Store) -> None:
    old, new, lost = new_key(), new_key(), new_key()
    seeded = seed(store, Keyring([old]), connections=20, services=1)
    orphaned = seed(store, Keyring([lost]), connections=1)
    damaged_id = sorted(cid for kind, cid in seeded.expected if kind == "connection")[3]

    def damage() -> None:
        c = Connection.get_by_id(damaged_id)
        body = str(c.encrypted_tokens)
        c.encrypted_tokens = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
        c.save()

    store.call(damage)
    keyring = Keyring([old, new])

    result = Reencryptor(store, keyring, ManualClock(), batch_size=7).run()

    (orphan_id,) = [cid for _, cid in orphaned.expected]
    reasons = {f.id: f.reason for f in result.failures}
    assert set(reasons) == {damaged_id, orphan_id}
    assert "damaged" in reasons[damaged_id]
    assert lost.fingerprint in reasons[orphan_id] and "no configured key" in reasons[orphan_id]
    assert result.rewritten == {"connection": 19, "service_secret": 1, "dcr_registration": 0}
    assert result.remaining == 2
    for message in reasons.values():  # no key material in any message
        assert old.key not in message and new.key not in message and lost.key not in message


class _RacingReencryptor(Reencryptor):
    """Lets a 'refresh' commit between the rotation's read and its write (deterministic race)."""

    def __init__(self, *args: object, race: dict[str, Keyring], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.race = race
        self.written: dict[str, tuple[bytes, str]] = {}

    def _write(self, writes: list[Rewrite]) -> list[bool]:
        for write in writes:
            keyring = self.race.pop(write.row.id, None)
            if keyring is not None:
                self.written[write.row.id] = _refresh(self.store, write.row, keyring)
        return super()._write(writes)


def _refresh(store: Store, row: SealedRow, keyring: Keyring) -> tuple[bytes, str]:
    """A refresh writing a new value under `keyring.active`; returns (plaintext, blob)."""
    value = json.dumps({"access_token": f"refreshed-{row.id}"}).encode()
    if row.kind == "connection":
        blob, fp = seal_managed(keyring, row.id, value, field="encrypted_tokens")
        assert store.call(
            lambda: swap_tokens(
                row.id,
                expected_generation=row.generation or 0,
                encrypted_tokens=blob,
                key_fingerprint=fp,
                now=NOW,
            )
        )
    else:
        blob, fp = seal_managed(keyring, row.id, value, field="oauth_client_secret_sealed")
        store.call(
            Service.update(oauth_client_secret_sealed=blob, oauth_key_fingerprint=fp)
            .where(Service.id == row.id)
            .execute
        )
    return value, blob


def test_a_lost_race_is_reread_and_never_overwritten(store: Store) -> None:
    old, new = new_key(), new_key()
    seeded = seed(store, Keyring([old]), connections=12, services=1)
    ids = sorted(cid for kind, cid in seeded.expected if kind == "connection")
    (service_id,) = [sid for kind, sid in seeded.expected if kind == "service_secret"]
    lagging, current = Keyring([old]), Keyring([old, new])
    # Row 2: refreshed by an instance still sealing under the old key -> re-read, re-sealed.
    # Row 5: refreshed under the new key -> already current, left exactly as the refresh wrote it.
    race = {ids[2]: lagging, ids[5]: current, service_id: lagging}

    rotation = _RacingReencryptor(store, current, ManualClock(), batch_size=5, race=race)
    result = rotation.run()

    assert race == {} and result.raced == 3
    assert result.rewritten == {"connection": 11, "service_secret": 1, "dcr_registration": 0}
    assert result.already_current == 1 and result.failures == []
    after = decrypt_all(store, current)
    assert {fp for fp, _ in after.values()} == {new.fingerprint}
    for rid, (value, _blob) in rotation.written.items():
        kind: BlobKind = "service_secret" if rid == service_id else "connection"
        assert after[(kind, rid)][1] == value
    row5 = store.call(read_row, "connection", ids[5])
    assert row5 is not None and row5.blob == rotation.written[ids[5]][1]


def test_a_second_pass_catches_rows_resealed_under_the_old_key(store: Store) -> None:
    old, new = new_key(), new_key()
    seeded = seed(store, Keyring([old]), connections=10)
    first = sorted(cid for _, cid in seeded.expected)[0]
    keyring = Keyring([old, new])
    settled: list[int] = []
    state = {"done": False}

    def progress(done: int, total: int) -> None:
        # End of pass 1: an instance that has not re-read its keys refreshes a finished row.
        if total and done == total and not state["done"]:
            state["done"] = True
            row = store.call(read_row, "connection", first)
            assert row is not None
            _refresh(store, row, Keyring([old]))

    result = Reencryptor(
        store, keyring, ManualClock(), progress=progress, settle=lambda: settled.append(1)
    ).run()

    assert result.passes == 2 and settled == [1] and result.remaining == 0
    assert result.rewritten["connection"] == 11
    assert {fp for fp, _ in decrypt_all(store, keyring).values()} == {new.fingerprint}


def test_a_concurrent_writer_never_loses_a_write(store: Store) -> None:
    old, new = new_key(), new_key()
    seeded = seed(store, Keyring([old]), connections=300)
    ids = [cid for _, cid in seeded.expected]
    keyring = Keyring([old, new])
    writer = RefreshWriter(store, ids, seeded.expected, lambda: keyring)
    writer.start()
    try:
        result = Reencryptor(store, keyring, ManualClock(), batch_size=25).run()
    finally:
        writer.finish()

    assert result.failures == [] and result.remaining == 0
    after = decrypt_all(store, keyring)
    assert {fp for fp, _ in after.values()} == {new.fingerprint}
    assert {cid: plain for (_, cid), (_, plain) in after.items()} == writer.latest
    assert writer.writes > 0
    # Every row was either rewritten by the rotation or already re-sealed by the writer.
    assert result.total_rewritten + result.already_current == 300
