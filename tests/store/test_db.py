"""Database URLs, the Store's thread pool, pragmas, ping, checkpoint and close."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import peewee
import psycopg
import pytest

from bindify_appliance.errors import ConfigError, StoreError
from bindify_appliance.store import Store, apply, models, redact_database_url, sqlite_path
from bindify_appliance.store.db import database_kind, run_sql

from . import ENGINES, engine_url


@pytest.fixture(params=ENGINES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return engine_url(request, tmp_path, migrated=True)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store(url)
    apply(s, backup_dir=None)
    yield s
    s.close()


# -- URLs -----------------------------------------------------------------------------------


def test_sqlite_paths() -> None:
    assert sqlite_path("sqlite:///relative.db") == Path("relative.db")
    assert sqlite_path("sqlite:///data dir/b.db") == Path("data dir/b.db")
    assert sqlite_path("sqlite:////abs/path.db") == Path("/abs/path.db")
    assert sqlite_path("postgresql://u@h:5432/db") is None
    assert database_kind("postgres://u@h/db") == "postgresql"
    assert database_kind("SQLite:///x.db") == "sqlite"


@pytest.mark.parametrize(
    "bad",
    [
        "bindify.db",
        "mysql://u@h/db",
        "sqlite://relative.db",
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "postgresql://u@h:5432/",
    ],
)
def test_bad_urls_name_the_option(bad: str) -> None:
    with pytest.raises(ConfigError, match="BINDIFY_DATABASE_URL"):
        Store(bad)


@pytest.mark.parametrize(
    "bad",
    [
        "postgresql://admin:Sup3rS3cret@db.example:notaport/bindify",
        "postgresql://admin:Sup3rS3cret@db.example/bindify?nonsense_option=1",
        "postgres://admin:Sup3rS3cret@db.example:5432",
    ],
)
def test_bad_postgres_urls_never_echo_the_password(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        Store(bad)
    assert "BINDIFY_DATABASE_URL" in str(info.value)
    assert "Sup3rS3cret" not in str(info.value)
    # The parser's own message (which may quote the URL) is not chained either.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_redact_database_url() -> None:
    assert (
        redact_database_url("postgresql://bob:pa%40ss@db:5432/x?sslmode=require")
        == "postgresql://bob:***@db:5432/x?sslmode=require"
    )
    assert redact_database_url("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert redact_database_url("sqlite:////data/bindify.db") == "sqlite:////data/bindify.db"
    s = Store("postgresql://bob:hunter22@127.0.0.1:1/x")
    try:
        assert "hunter22" not in repr(s)
        assert "hunter22" not in s.url
    finally:
        s.close()


# -- the Store --------------------------------------------------------------------------------


def test_store_binds_models_and_reports_its_kind(url: str) -> None:
    with Store(url) as s:
        assert s.kind == database_kind(url)
        assert models.database_proxy.obj is s.db
        assert (s.path is not None) == (s.kind == "sqlite")


def _pragmas(db: peewee.Database) -> dict[str, object]:
    names = [
        "journal_mode",
        "foreign_keys",
        "busy_timeout",
        "synchronous",
        "cache_size",
        "temp_store",
        "journal_size_limit",
    ]
    return {name: run_sql(db, f"PRAGMA {name}").fetchone()[0] for name in names}


async def test_sqlite_pragmas_on_every_connection(tmp_path: Path) -> None:
    expected = {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 5000,
        "synchronous": 1,  # NORMAL
        "cache_size": -16000,
        "temp_store": 2,  # MEMORY
        "journal_size_limit": 64 * 1024 * 1024,
    }
    with Store(f"sqlite:///{tmp_path}/p.db", workers=2) as s:
        # A pool thread's connection and the calling thread's are separate connections.
        assert await s.run(_pragmas, s.db) == expected
        assert s.call(_pragmas, s.db) == expected


async def test_run_executes_on_a_pool_thread(store: Store) -> None:
    def unit(x: int) -> tuple[int, str, int]:
        row = run_sql(store.db, "SELECT 1").fetchone()
        return threading.get_ident(), threading.current_thread().name, x + row[0]

    ident, name, value = await store.run(unit, 41)
    assert ident != threading.get_ident()
    assert name.startswith("bindify-db")
    assert value == 42


async def test_run_propagates_exceptions_unchanged(store: Store) -> None:
    class Boom(Exception):
        pass

    boom = Boom("x")

    def unit() -> None:
        raise boom

    with pytest.raises(Boom) as info:
        await store.run(unit)
    assert info.value is boom
    # The pool thread and its connection stay usable afterwards.
    assert await store.run(lambda: run_sql(store.db, "SELECT 7").fetchone()[0]) == 7


async def test_each_pool_thread_has_its_own_connection(store: Store) -> None:
    barrier = threading.Barrier(2, timeout=10)

    def unit() -> int:
        conn = store.db.connection()  # type: ignore[no-untyped-call]
        barrier.wait()  # both units hold a connection at the same time
        return id(conn)

    first, second = await asyncio.gather(store.run(unit), store.run(unit))
    assert first != second


async def test_a_failed_transaction_rolls_back(store: Store) -> None:
    def unit() -> None:
        with store.db.atomic():
            models.Setting.create(key="k", value="v", updated_at="2026-11-29T10:00:00Z")
            raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await store.run(unit)
    assert await store.run(lambda: models.Setting.select().count()) == 0


async def test_sqlite_read_then_write_units_never_fail_with_busy(tmp_path: Path) -> None:
    # Transactions are BEGIN IMMEDIATE: concurrent read-modify-write units queue on the write
    # lock instead of failing on lock upgrade (SQLITE_BUSY) or losing updates.
    with Store(f"sqlite:///{tmp_path}/c.db", workers=4) as s:
        apply(s, backup_dir=None)
        s.call(lambda: models.Setting.create(key="n", value="0", updated_at="2026-11-29T10:00Z"))

        def increment() -> None:
            for _ in range(25):
                with s.db.atomic():
                    current = int(models.Setting.get_by_id("n").value)
                    models.Setting.update(value=str(current + 1)).where(
                        models.Setting.key == "n"
                    ).execute()

        await asyncio.gather(*(s.run(increment) for _ in range(4)))
        assert s.call(lambda: models.Setting.get_by_id("n").value) == "100"


def test_ping(store: Store) -> None:
    store.ping()


def test_ping_unreachable_postgres_raises_store_error_without_password() -> None:
    with Store("postgresql://bob:hunter22@127.0.0.1:1/bindify") as s:
        with pytest.raises(StoreError) as info:
            s.ping()
        assert "hunter22" not in str(info.value)


def test_ping_sqlite_in_missing_folder_raises_store_error(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/no/such/dir/x.db") as s, pytest.raises(StoreError):
        s.ping()


def test_checkpoint_truncates_the_wal(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/w.db") as s:
        apply(s, backup_dir=None)
        s.call(lambda: models.Setting.create(key="a", value="b", updated_at="2026-11-29T10:00Z"))
        wal = tmp_path / "w.db-wal"
        assert wal.stat().st_size > 0
        s.checkpoint()
        assert wal.stat().st_size == 0
    # Closing the last connection folds and removes the WAL files.
    assert not wal.exists()


def test_checkpoint_is_a_noop_on_postgres(pg_url: str) -> None:
    with Store(pg_url) as s:
        s.checkpoint()


async def test_close_is_idempotent_and_final(url: str) -> None:
    s = Store(url)
    assert await s.run(lambda: 1) == 1
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(StoreError):
        await s.run(lambda: 1)
    with pytest.raises(StoreError):
        s.ping()


async def test_postgres_pool_recovers_from_killed_connections(pg_url: str) -> None:
    dbname = pg_url.rsplit("/", 1)[1]
    with Store(pg_url) as s:
        assert await s.run(lambda: run_sql(s.db, "SELECT 1").fetchone()[0]) == 1
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        # The pooled connection is dead; check-out notices and opens a fresh one.
        assert await s.run(lambda: run_sql(s.db, "SELECT 2").fetchone()[0]) == 2


def test_concurrent_first_opens_of_a_new_sqlite_file(tmp_path: Path) -> None:
    # Several connections switching a brand-new file to WAL at once used to fail with
    # "database is locked" (SQLite skips the busy handler on that lock upgrade).
    for round_ in range(15):
        url = f"sqlite:///{tmp_path}/new{round_}.db"
        barrier = threading.Barrier(4, timeout=10)
        errors: list[BaseException] = []

        def opener(
            url: str = url,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                with Store(url) as s:
                    barrier.wait()
                    s.ping()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
