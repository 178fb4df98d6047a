"""The suite's reuse of migrated PostgreSQL databases (`support.databases`, `support.pg_reset`).

Tests share a worker's migrated databases one after another, so the reset between them is what
keeps every test isolated: a reused database must be indistinguishable from a fresh copy of the
migrated template (rows, sequences, schema), a connection the last test left open must not
survive into the next, and a database whose schema a test changed must never be reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support.databases import MigratedPool, with_database
from support.pg_reset import Baseline, fingerprint
from support.servers import PG_SERVER_URL


@pytest.fixture
def taken(pg_pool: MigratedPool) -> Iterator[str]:
    """A database taken from the pool; the test gives it back itself (or it is dropped here)."""
    name = pg_pool.take()
    yield name
    if name not in pg_pool.free and name in pg_pool.made:
        pg_pool.give_back(name)


def _connect(name: str) -> Any:
    return psycopg.connect(with_database(PG_SERVER_URL, name), autocommit=True)


def _exists(name: str) -> bool:
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def test_a_fresh_copy_matches_the_baseline(pg_pool: MigratedPool, taken: str) -> None:
    with _connect(taken) as conn:
        assert Baseline.of(conn) == pg_pool.baseline
    assert pg_pool.baseline.rows["public.schema_migrations"] is not None


def test_a_used_database_goes_back_to_the_baseline(pg_pool: MigratedPool, taken: str) -> None:
    left_open = _connect(taken)
    left_open.execute(
        "INSERT INTO users (id, email, role, created_at, updated_at)"
        " VALUES ('u1', 'a@example.com', 'admin', '2026-11-29T10:00:00Z', '2026-11-29T10:00:00Z')"
    )
    left_open.execute("DELETE FROM audit_log")
    left_open.execute("UPDATE schema_migrations SET name = 'changed'")
    left_open.execute("SELECT nextval('connection_events_id_seq') FROM generate_series(1, 3)")
    with _connect(taken) as conn:
        assert Baseline.of(conn) != pg_pool.baseline  # the writes above are visible

    pg_pool.give_back(taken)

    assert taken in pg_pool.free
    with pytest.raises(psycopg.OperationalError):
        left_open.execute("SELECT 1")  # ended, not carried into the next test
    with _connect(taken) as conn:
        assert Baseline.of(conn) == pg_pool.baseline
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)
        assert conn.execute("SELECT nextval('connection_events_id_seq')").fetchone() == (1,)


@pytest.mark.parametrize(
    "ddl",
    [
        "ALTER TABLE users ADD COLUMN extra TEXT",
        "ALTER TABLE users DROP COLUMN billing_until",
        "ALTER TABLE users ALTER COLUMN email DROP NOT NULL",
        "ALTER TABLE users ALTER COLUMN failed_logins SET DEFAULT 1",
        "ALTER TABLE users ALTER COLUMN role TYPE varchar(20)",
        "CREATE INDEX users_extra ON users (role)",
        "DROP INDEX IF EXISTS users_email",
        "CREATE TABLE extra (id INTEGER PRIMARY KEY)",
        "CREATE SEQUENCE extra",
        "CREATE SCHEMA extra",
        "CREATE VIEW extra AS SELECT 1 AS one",
        "ALTER TABLE connections DROP CONSTRAINT connections_user_id_fkey",
        "CREATE FUNCTION extra() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
        "CREATE TYPE extra AS ENUM ('a')",
        "GRANT SELECT ON users TO PUBLIC",
    ],
)
def test_the_fingerprint_sees_schema_changes(pg_pool: MigratedPool, taken: str, ddl: str) -> None:
    # DDL is transactional in PostgreSQL: each change is seen, then rolled back, on one copy.
    with _connect(taken) as conn:
        assert fingerprint(conn) == pg_pool.baseline.fingerprint
        with pytest.raises(_RolledBack), conn.transaction():
            conn.execute(ddl)
            assert fingerprint(conn) != pg_pool.baseline.fingerprint
            raise _RolledBack
        assert fingerprint(conn) == pg_pool.baseline.fingerprint


class _RolledBack(Exception):
    pass


def test_a_database_whose_schema_changed_is_dropped(pg_pool: MigratedPool, taken: str) -> None:
    with _connect(taken) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN extra TEXT")

    pg_pool.give_back(taken)

    assert taken not in pg_pool.free
    assert not _exists(taken)
