"""The audit chain on real SQLite and PostgreSQL databases, through `bindify audit verify|export`.

Tampering, deleting, truncating and restoring are done with plain SQL, as an attacker with
database access (and no master key) would; `verify` must fail naming the row.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from store import ENGINES, engine_url
from support.keys import STRONG_SECRET_KEY

from bindify_appliance import audit
from bindify_appliance.audit import chain
from bindify_appliance.audit.verify import parse_anchor, verify_chain
from bindify_appliance.cli import main
from bindify_appliance.clock import ManualClock
from bindify_appliance.crypto.keyring import Keyring, MasterKey, dump_keyring_json
from bindify_appliance.store import Store, apply, models
from bindify_appliance.store import audit as audit_rows
from bindify_appliance.store.db import run_sql

KEY_A = "a" * 64
KEY_B = "b" * 64
KEYRING = Keyring([MasterKey(KEY_A)])


@pytest.fixture(params=ENGINES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return engine_url(request, tmp_path, migrated=True)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url) as s:
        apply(s, backup_dir=None)
        yield s


@pytest.fixture
def cli_env(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    monkeypatch.setenv("BINDIFY_DATA_DIR", str(data))
    monkeypatch.setenv("BINDIFY_DATABASE_URL", url)
    monkeypatch.setenv("BINDIFY_MASTER_KEYS", dump_keyring_json(KEYRING))
    monkeypatch.setenv("BINDIFY_SECRET_KEY", STRONG_SECRET_KEY)
    monkeypatch.setenv("BINDIFY_SINGLE_INSTANCE", "true")
    return data


def _add(store: Store, clock: ManualClock, count: int, keyring: Keyring = KEYRING) -> None:
    for n in range(count):
        audit.record_sync(
            store,
            keyring,
            clock,
            audit.Actor("user", f"u{n}", f"u{n}@example.com"),
            "connection.rotate",
            audit.Target("connection", f"c{n}"),
            ip="192.0.2.7",
            detail={"name": f"conn {n}"},
        )
        clock.advance(60)


def _sql(store: Store, sql: str) -> None:
    store.call(lambda: run_sql(store.db, sql))


def _anchor(store: Store) -> str:
    head = store.call(audit_rows.head)
    assert head is not None
    return f"{head.seq}:{head.mac[:32]}"


def _cli(store: Store, args: list[str]) -> int:
    try:
        return main(args)
    finally:
        models.bind(store.db)  # the CLI's Store bound the models to its own (closed) pool


def _verify(
    store: Store, capsys: pytest.CaptureFixture[str], *anchors: str
) -> tuple[int, str, str]:
    args = ["audit", "verify"]
    for anchor in anchors:
        args += ["--anchor", anchor]
    code = _cli(store, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_genesis_is_written_by_the_migration_and_sealed_by_the_first_append(store: Store) -> None:
    first = store.call(verify_chain, KEYRING, [])
    assert first.ok and first.entries == 1 and first.first_seq == 1
    _add(store, ManualClock(1_800_000_000), 2)
    rows = store.call(lambda: list(audit_rows.iter_rows()))
    assert [r.action for r in rows] == ["audit.genesis", "connection.rotate", "connection.rotate"]
    assert [r.seq for r in rows] == [1, 2, 3]
    assert all(len(r.mac) == 64 and r.key_fp for r in rows)
    assert store.call(verify_chain, KEYRING, []).ok


def test_an_edited_row_fails_verify_naming_it(
    store: Store, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(store, ManualClock(1_800_000_000), 5)
    expected = f"ok 6 entries, seq 1..6, anchor {_anchor(store)}\n"
    assert _verify(store, capsys)[:2] == (0, expected)
    _sql(store, "UPDATE audit_log SET actor_email = 'someone@else.example' WHERE seq = 4")
    code, out, err = _verify(store, capsys)
    assert code == 1 and out == ""
    assert "broken at seq 4" in err


def test_a_deleted_row_fails_verify_naming_it(
    store: Store, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(store, ManualClock(1_800_000_000), 5)
    _sql(store, "DELETE FROM audit_log WHERE seq = 3")
    code, _out, err = _verify(store, capsys)
    assert code == 1 and "missing at seq 3" in err


def test_rows_deleted_from_the_start_without_a_checkpoint_are_missing(
    store: Store, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(store, ManualClock(1_800_000_000), 5)
    _sql(store, "DELETE FROM audit_log WHERE seq <= 2")
    code, _out, err = _verify(store, capsys)
    assert code == 1 and "missing at seq 1" in err


def test_truncated_tail_is_detected_with_the_anchor(
    store: Store, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(store, ManualClock(1_800_000_000), 5)
    code, out, _err = _verify(store, capsys)
    anchor = out.strip().rsplit(" ", 1)[1]
    assert code == 0 and anchor.startswith("6:")
    _sql(store, "DELETE FROM audit_log WHERE seq >= 5")
    assert _verify(store, capsys)[0] == 0  # without the anchor a shorter chain is self-consistent
    code, _out, err = _verify(store, capsys, anchor)
    assert code == 1 and "rolled_back at seq 6" in err


def test_a_restored_older_database_is_detected_with_the_anchor(
    store: Store, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock(1_800_000_000)
    _add(store, clock, 3)
    old = store.call(verify_chain, KEYRING, [])
    _add(store, clock, 3)
    anchor = store.call(verify_chain, KEYRING, []).anchor
    assert anchor is not None
    # "Restore" the older state and append other rows on top: same seq numbers, other MACs.
    _sql(store, f"DELETE FROM audit_log WHERE seq > {old.last_seq}")
    _add(store, clock, 3)
    code, _out, err = _verify(store, capsys, anchor)
    assert code == 1 and f"rolled_back at seq {anchor.split(':')[0]}" in err


def test_export_lines_end_with_the_anchor_and_verify_accepts_it(
    store: Store, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(store, ManualClock(1_800_000_000), 3)
    assert _cli(store, ["audit", "export"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["seq"] for e in lines[:-1]] == [1, 2, 3, 4]
    assert lines[1]["actor"] == {"type": "user", "id": "u0", "email": "u0@example.com"}
    assert lines[1]["target"] == {"type": "connection", "id": "c0"}
    assert lines[-1]["seq"] == 4
    assert _verify(store, capsys, lines[-1]["anchor"])[0] == 0


def test_retention_deletes_from_the_start_and_verification_still_holds(
    store: Store, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock(1_800_000_000)
    _add(store, clock, 6)
    cutoff = store.call(lambda: list(audit_rows.iter_rows()))[4].at
    deleted = store.call(chain.prune, KEYRING, cutoff, "2027-02-01T00:00:00Z")
    assert deleted == 4
    remaining = store.call(lambda: list(audit_rows.iter_rows()))
    assert remaining[0].seq == 5 and remaining[-1].action == "audit.retention"
    assert remaining[-1].detail["through_seq"] == 4
    code, out, _err = _verify(store, capsys)
    assert code == 0, out
    # Deleting one more row from the start is still caught.
    _sql(store, "DELETE FROM audit_log WHERE seq = 5")
    code, _out, err = _verify(store, capsys)
    assert code == 1 and "missing at seq 5" in err


def test_rows_survive_rotation_and_removal_of_the_old_key(store: Store) -> None:
    clock = ManualClock(1_800_000_000)
    _add(store, clock, 3)
    rotated = Keyring([MasterKey(KEY_A), MasterKey(KEY_B)])  # B active
    _add(store, clock, 2, rotated)
    assert store.call(verify_chain, rotated, []).ok
    old_fp = MasterKey(KEY_A).fingerprint
    assert store.call(chain.rekey, rotated, old_fp, "2027-02-01T00:00:00Z") == 6
    only_b = Keyring([MasterKey(KEY_B)])
    result = store.call(verify_chain, only_b, [])
    assert result.ok, result.problem
    assert store.call(lambda: audit_rows.head()).action == "audit.rekey"  # type: ignore[union-attr]


def test_detail_refuses_anything_but_flat_short_values(store: Store) -> None:
    clock = ManualClock(1_800_000_000)
    for bad in ({"body": {"nested": 1}}, {"text": "x" * 201}, {"Bad Key": 1}):
        with pytest.raises(ValueError):
            audit.record_sync(store, KEYRING, clock, audit.CLI, "key.rotate", detail=bad)


def _append_many(url: str, count: int) -> None:
    with Store(url) as s:
        clock = ManualClock(1_800_000_000)
        for _ in range(count):
            audit.record_sync(s, KEYRING, clock, audit.SYSTEM, "key.rotate")


@pytest.mark.process
def test_two_processes_appending_concurrently_keep_seq_gap_free(store: Store, url: str) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(url, 40)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    rows = store.call(lambda: list(audit_rows.iter_rows()))
    assert [r.seq for r in rows] == list(range(1, 82))
    result = store.call(verify_chain, KEYRING, [parse_anchor(f"81:{rows[-1].mac}")])
    assert result.ok, result.problem
