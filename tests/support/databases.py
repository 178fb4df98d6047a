"""PostgreSQL databases for tests: an empty one (`pg_url`) or a migrated one (`pg_migrated_url`).

Both live on `BINDIFY_TEST_DATABASE_URL`'s server under random `bindify_test_*` names, so
xdist workers and concurrent sessions never share one, and a test has its database to itself.

`pg_url`: created empty for the test and dropped after it. Tests of the migrations themselves
(from empty, version by version) and of whole appliances take this one.

`pg_migrated_url`: every migration applied and nothing else. Creating a database costs 0.3-0.9 s
here (server CPU and fsync), even as a copy, and running the migrations another 0.2-0.6 s, so
neither happens per test. Each test process (xdist worker) migrates a template database once
(`bindify_test_tpl_*`, the first time a test asks; built from the checkout under test, so never
stale) and records its baseline (`support.pg_reset`: schema fingerprint, rows, sequences).
A test gets a free copy from the process's pool, or a new `CREATE DATABASE ... TEMPLATE` copy
when none is free. After the test its other connections are ended and the copy is put back to
the baseline (~20 ms) and freed, or, if the test changed the schema, dropped. Session end drops
the copies and the template.

PostgreSQL refuses to copy a database that has open connections, so the template's are all
closed once it is migrated, and connections to it are then disallowed (a test that connected
to it by mistake would break every later copy).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from bindify_appliance.store import Store, apply

from .pg_reset import Baseline
from .servers import PG_SERVER_URL

__all__ = ["MigratedPool", "pg_migrated_url", "pg_pool", "pg_url"]

PREFIX = "bindify_test_"


def with_database(url: str, name: str) -> str:
    """`url` (a server URL) pointing at database `name`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin(sql: str, params: tuple[object, ...] = ()) -> None:
    import psycopg

    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
        conn.execute(sql, params or None)


def _create(template: str | None = None) -> str:
    """Create a database with a fresh random name (a copy of `template` if given)."""
    name = PREFIX + secrets.token_hex(6)
    _admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


def _drop(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MigratedPool:
    """This test process's migrated databases: the template, and the copies free for reuse."""

    def __init__(self) -> None:
        self.template = PREFIX + "tpl_" + secrets.token_hex(6)
        self.free: list[str] = []
        self.made: list[str] = []
        _admin(f'CREATE DATABASE "{self.template}"')
        self.made.append(self.template)
        try:
            store = Store(with_database(PG_SERVER_URL, self.template))
            try:
                apply(store, backup_dir=None)
            finally:
                store.close()  # closes every pooled connection: a template must have none
            with _connect(self.template) as conn:
                self.baseline = Baseline.of(conn)
            _admin(f'ALTER DATABASE "{self.template}" ALLOW_CONNECTIONS false')
        except BaseException:
            self.close()
            raise

    def take(self) -> str:
        if self.free:
            return self.free.pop()
        name = _create(template=self.template)
        self.made.append(name)
        return name

    def give_back(self, name: str) -> None:
        """Reset `name` to the baseline for the next test, or drop it if that cannot be done."""
        import psycopg

        reusable = _end_sessions(name)
        try:
            if reusable:
                with _connect(name) as conn:
                    reusable = self.baseline.restore(conn)
        except psycopg.Error:  # say, the test made the database refuse connections
            reusable = False
        if reusable:
            self.free.append(name)
        else:
            _drop(name)
            self.made.remove(name)

    def close(self) -> None:
        for name in self.made:
            _drop(name)


# Ends every session on a database (a test may leave a connection open), and says how many.
_TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = %s AND pid <> pg_backend_pid()"
)


def _end_sessions(name: str, timeout: float = 5.0) -> bool:
    """End every session on `name` and wait until they are gone; False if they keep coming.

    Waiting matters: a session told to end may still be committing, and rows it commits after
    the reset's DELETE took its snapshot would survive into the next test.
    """
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
        while True:
            row = conn.execute(_TERMINATE, (name,)).fetchone()
            if row is None or row[0] == 0:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)


def _connect(name: str) -> Any:
    import psycopg

    return psycopg.connect(with_database(PG_SERVER_URL, name), autocommit=True)


@pytest.fixture(scope="session")
def pg_pool() -> Iterator[MigratedPool]:
    """This test process's migrated template and reusable copies (see the module docstring)."""
    pool = MigratedPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A freshly created, empty PostgreSQL database, dropped after the test."""
    name = _create()
    try:
        yield with_database(PG_SERVER_URL, name)
    finally:
        _drop(name)


@pytest.fixture
def pg_migrated_url(pg_pool: MigratedPool) -> Iterator[str]:
    """A PostgreSQL database with every migration applied and nothing else, for this test only."""
    name = pg_pool.take()
    try:
        yield with_database(PG_SERVER_URL, name)
    finally:
        pg_pool.give_back(name)
