"""The migration runner and 0001_initial on both engines."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bindify_appliance.clock import ManualClock
from bindify_appliance.errors import MigrationError, SchemaTooNewError
from bindify_appliance.store import (
    MIGRATION_LOCK_KEY,
    Store,
    apply,
    list_migrations,
    models,
    pending,
    status,
)
from bindify_appliance.store.db import run_sql

from . import ENGINES, copy_initial, create_table_migration, engine_url, write_migration


@pytest.fixture(params=ENGINES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return engine_url(request, tmp_path)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url) as s:
        yield s


def _rows(store: Store, sql: str) -> list[tuple[object, ...]]:
    return store.call(lambda: list(run_sql(store.db, sql).fetchall()))


def _tables(store: Store) -> set[str]:
    return set(store.call(store.db.get_tables))


def test_bundled_migrations() -> None:
    found = list_migrations()
    assert [(m.number, m.name) for m in found][:1] == [(1, "initial")]
    assert found == sorted(found)
    assert all(m.path.is_file() for m in found)


def test_apply_from_empty_records_and_creates_every_table(store: Store) -> None:
    before = status(store)
    assert before.unknown == [] and before.pending == list_migrations()
    assert "schema_migrations" not in _tables(store)  # status is read-only

    applied = apply(store, backup_dir=None, clock=ManualClock(1_800_000_000))

    assert applied == list_migrations()
    rows = _rows(store, "SELECT number, name, applied_at FROM schema_migrations ORDER BY number")
    assert rows[0] == (1, "initial", "2027-01-15T08:00:00Z")
    expected = {m._meta.table_name for m in models.ALL_MODELS} | {"schema_migrations"}
    assert expected <= _tables(store)
    after = status(store)
    assert after.pending == [] and after.unknown == []
    assert all(applied_at is not None for _m, applied_at in after.migrations)


def test_schema_matches_the_models(store: Store) -> None:
    # Catches drift between models.py and the migrations: same columns, same nullability,
    # and every unique or indexed field backed by an index.
    apply(store, backup_dir=None)
    for model in models.ALL_MODELS:
        table = model._meta.table_name
        columns = {c.name: c for c in store.call(store.db.get_columns, table)}
        fields = {f.column_name: f for f in model._meta.sorted_fields}
        assert set(columns) == set(fields), table
        for name, field in fields.items():
            assert columns[name].null == bool(field.null), (table, name)
        indexes = store.call(store.db.get_indexes, table)
        indexed = {(tuple(i.columns), i.unique) for i in indexes}
        for field in model._meta.sorted_fields:
            if field.unique:
                assert ((field.column_name,), True) in indexed, (table, field.column_name)
            elif field.index and not field.primary_key:
                assert any(cols[0] == field.column_name for cols, _u in indexed), (
                    table,
                    field.column_name,
                )
        for fields_, unique in model._meta.indexes:
            cols = tuple(model._meta.fields[f].column_name for f in fields_)
            assert (cols, unique) in indexed, (table, cols)


def test_schema_defaults_apply_to_raw_inserts(store: Store) -> None:
    apply(store, backup_dir=None)
    store.call(
        run_sql,
        store.db,
        "INSERT INTO services (id, created_at, updated_at) "
        "VALUES ('x', '2026-11-29T10:00:00Z', '2026-11-29T10:00:00Z')",
    )
    assert _rows(store, "SELECT transport, oauth_key_fingerprint FROM services") == [
        ("streamable-http", "")
    ]
    assert store.call(lambda: models.Service.get_by_id("x").builtin) is False


def test_second_apply_does_nothing(store: Store) -> None:
    apply(store, backup_dir=None)
    before = _rows(store, "SELECT number, name, applied_at FROM schema_migrations")
    assert apply(store, backup_dir=None, clock=ManualClock(1_900_000_000)) == []
    assert pending(store) == []
    assert _rows(store, "SELECT number, name, applied_at FROM schema_migrations") == before


def test_later_migrations_apply_in_order(store: Store, tmp_path: Path) -> None:
    folder = copy_initial(tmp_path / "m")
    apply(store, backup_dir=None, directory=folder)
    create_table_migration(folder, 3, "third")
    create_table_migration(folder, 2, "second")
    assert [m.number for m in pending(store, directory=folder)] == [2, 3]
    assert [m.number for m in apply(store, backup_dir=None, directory=folder)] == [2, 3]
    assert {"second", "third"} <= _tables(store)
    assert _rows(store, "SELECT number FROM schema_migrations ORDER BY number") == [
        (1,),
        (2,),
        (3,),
    ]


def test_unknown_applied_migration_is_refused_and_nothing_changes(
    store: Store, tmp_path: Path
) -> None:
    folder = copy_initial(tmp_path / "m")
    apply(store, backup_dir=None, directory=folder)
    store.call(
        run_sql,
        store.db,
        "INSERT INTO schema_migrations (number, name, applied_at) "
        "VALUES (9999, 'from_the_future', '2030-01-01T00:00:00Z')",
    )
    create_table_migration(folder, 2, "pending_one")
    before_rows = _rows(store, "SELECT number FROM schema_migrations ORDER BY number")
    before_tables = _tables(store)

    state = status(store, directory=folder)
    assert [(u.number, u.name) for u in state.unknown] == [(9999, "from_the_future")]
    backups = tmp_path / "backups"
    with pytest.raises(SchemaTooNewError, match="9999_from_the_future"):
        apply(store, backup_dir=backups, directory=folder)

    assert _rows(store, "SELECT number FROM schema_migrations ORDER BY number") == before_rows
    assert _tables(store) == before_tables
    assert not backups.exists()


def test_duplicate_numbers_are_refused(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    create_table_migration(folder, 1, "one")
    write_migration(folder, 1, "also_one", "pass\n")
    with pytest.raises(MigrationError, match="share number 1"):
        list_migrations(folder)
    with pytest.raises(MigrationError):
        apply(store, backup_dir=None, directory=folder)
    assert _tables(store) == set()


@pytest.mark.parametrize("name", ["1_short.py", "0002-dash.py", "0003_Upper.py", "0000_zero.py"])
def test_malformed_file_names_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("def up(db):\n    pass\n")
    with pytest.raises(MigrationError):
        list_migrations(tmp_path)


def test_other_files_in_the_folder_are_ignored(tmp_path: Path) -> None:
    create_table_migration(tmp_path, 1, "one")
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "__pycache__").mkdir()
    assert [m.number for m in list_migrations(tmp_path)] == [1]


def test_a_failing_migration_is_rolled_back(store: Store, tmp_path: Path) -> None:
    folder = copy_initial(tmp_path / "m")
    write_migration(
        folder,
        2,
        "breaks",
        """
        db.execute_sql("CREATE TABLE half_done (id INTEGER PRIMARY KEY)")
        db.execute_sql("INSERT INTO users_that_do_not_exist VALUES (1)")
        """,
    )
    create_table_migration(folder, 3, "never")
    with pytest.raises(MigrationError, match="0002_breaks"):
        apply(store, backup_dir=None, directory=folder)
    tables = _tables(store)
    assert "users" in tables  # 0001 committed
    assert "half_done" not in tables and "never" not in tables  # DDL rolled back, 0003 not run
    assert _rows(store, "SELECT number FROM schema_migrations") == [(1,)]


def test_a_migration_without_up_is_refused(store: Store, tmp_path: Path) -> None:
    (tmp_path / "0001_empty.py").write_text("X = 1\n")
    with pytest.raises(MigrationError, match="up"):
        apply(store, backup_dir=None, directory=tmp_path)


def _backups(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_no_backup_for_a_new_database(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    with Store(f"sqlite:///{tmp_path}/bindify.db") as s:
        apply(s, backup_dir=backups)
    assert _backups(backups) == []


def test_backup_before_migrating_an_existing_sqlite_database(tmp_path: Path) -> None:
    folder = copy_initial(tmp_path / "m")
    backups = tmp_path / "backups"
    clock = ManualClock(1_800_000_000)
    with Store(f"sqlite:///{tmp_path}/bindify.db") as s:
        apply(s, backup_dir=backups, directory=folder, clock=clock)
        s.call(lambda: models.Setting.create(key="k", value="v", updated_at=clock.now()))
        create_table_migration(folder, 2, "added")
        clock.advance(60)
        apply(s, backup_dir=backups, directory=folder, clock=clock)
        # Nothing pending: no backup either.
        clock.advance(60)
        apply(s, backup_dir=backups, directory=folder, clock=clock)

    assert _backups(backups) == ["pre-migration-20270115T080100Z.db"]
    with Store(f"sqlite:///{backups}/pre-migration-20270115T080100Z.db") as b:
        # The copy is the database as it was before 0002: data there, 0002 not.
        assert b.call(lambda: models.Setting.get_by_id("k").value) == "v"
        assert "added" not in _tables(b)
        assert _rows(b, "SELECT number FROM schema_migrations") == [(1,)]


def test_only_the_newest_five_pre_migration_backups_are_kept(tmp_path: Path) -> None:
    folder = copy_initial(tmp_path / "m")
    backups = tmp_path / "backups"
    clock = ManualClock(1_800_000_000)
    with Store(f"sqlite:///{tmp_path}/bindify.db") as s:
        apply(s, backup_dir=backups, directory=folder, clock=clock)
        for number in range(2, 9):
            clock.advance(3600)
            create_table_migration(folder, number, f"t{number}")
            apply(s, backup_dir=backups, directory=folder, clock=clock)
    names = _backups(backups)
    assert names == [f"pre-migration-20270115T{hour:02d}0000Z.db" for hour in range(11, 16)]
    assert all(re.fullmatch(r"pre-migration-\d{8}T\d{6}Z\.db", n) for n in names)


def test_postgres_takes_no_file_backup(pg_url: str, tmp_path: Path) -> None:
    folder = copy_initial(tmp_path / "m")
    backups = tmp_path / "backups"
    with Store(pg_url) as s:
        apply(s, backup_dir=backups, directory=folder)
        create_table_migration(folder, 2, "added")
        apply(s, backup_dir=backups, directory=folder)
    assert _backups(backups) == []


def test_concurrent_applies_run_each_migration_once(url: str, tmp_path: Path) -> None:
    folder = copy_initial(tmp_path / "m")
    # Each of these records that it ran; running one twice would show two rows (or fail).
    write_migration(
        folder, 2, "ledger", 'db.execute_sql("CREATE TABLE ledger (migration INTEGER)")\n'
    )
    for number in range(3, 7):
        write_migration(
            folder,
            number,
            f"step{number}",
            f'db.execute_sql("INSERT INTO ledger (migration) VALUES ({number})")\n',
        )
    barrier = threading.Barrier(2, timeout=10)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with Store(url) as s:
                barrier.wait()
                results.append([m.number for m in apply(s, backup_dir=None, directory=folder)])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results[0] + results[1]) == [1, 2, 3, 4, 5, 6]
    with Store(url) as s:
        assert _rows(s, "SELECT migration FROM ledger ORDER BY migration") == [
            (3,),
            (4,),
            (5,),
            (6,),
        ]
        assert _rows(s, "SELECT count(*) FROM schema_migrations") == [(6,)]


def test_postgres_apply_waits_for_the_migration_lock(pg_url: str) -> None:
    done = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with Store(pg_url) as s:
                apply(s, backup_dir=None)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            done.set()

    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        thread = threading.Thread(target=worker)
        thread.start()
        # Wait (bounded) until the worker is queued on the advisory lock.
        deadline = time.monotonic() + 20
        while True:
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if row is not None and row[0] >= 1:
                break
            assert time.monotonic() < deadline, "apply never asked for the migration lock"
            time.sleep(0.02)
        assert not done.is_set()
        tables = holder.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchone()
        assert tables == (0,)  # nothing happens before the lock is granted
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    thread.join(timeout=30)
    assert errors == []
    with Store(pg_url) as s:
        assert pending(s) == []


def test_sqlite_migration_with_foreign_keys_off(tmp_path: Path) -> None:
    # A table rebuild that drops `users` would cascade-delete sessions with foreign keys on.
    folder = copy_initial(tmp_path / "m")
    write_migration(
        folder,
        2,
        "rebuild_users",
        """
        ddl = db.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'users'").fetchone()[0]
        db.execute_sql(ddl.replace('"users"', '"users_new"', 1))
        db.execute_sql("INSERT INTO users_new SELECT * FROM users")
        db.execute_sql("DROP TABLE users")
        db.execute_sql("ALTER TABLE users_new RENAME TO users")
        db.execute_sql('CREATE UNIQUE INDEX "users_email" ON "users" ("email")')
        """,
    )
    (folder / "0002_rebuild_users.py").write_text(
        "disable_foreign_keys = True\n" + (folder / "0002_rebuild_users.py").read_text()
    )
    now = ManualClock().now()
    with Store(f"sqlite:///{tmp_path}/bindify.db") as s:
        apply(s, backup_dir=None, directory=copy_initial(tmp_path / "only1"))

        def seed() -> None:
            user = models.User.create(email="a@b.c", role="admin", created_at=now, updated_at=now)
            models.Session.create(
                id="s" * 64, user=user, created_at=now, expires_at=now, last_seen_at=now
            )

        s.call(seed)
        with s.connection():
            assert apply(s, backup_dir=None, directory=folder)[0].number == 2
            assert run_sql(s.db, "PRAGMA foreign_keys").fetchone()[0] == 1
        assert s.call(lambda: models.Session.select().count()) == 1
