"""Database URLs, engines and the `Store`: the one object through which the app reaches the DB.

`open_database(url)` turns `BINDIFY_DATABASE_URL` into a pooled peewee database:

- `sqlite:///relative.db` / `sqlite:////abs/path.db` — the stdlib driver, with the pragma set
  applied to every new connection (busy_timeout first, so the others wait instead of failing
  while another process holds the file), and every transaction opened as `BEGIN IMMEDIATE`, so
  a read-then-write unit takes the write lock up front and can never fail half-way with
  SQLITE_BUSY on lock upgrade.
- `postgresql://…` (or `postgres://…`) — psycopg 3 through peewee 4's psycopg3 adapter, pooled.

`Store` wraps the database and a small thread pool. Units of work are plain synchronous
functions: `await store.run(fn, *args)` runs `fn(*args)` on a pool thread, which checks a
connection out of the pool for the duration of the unit (peewee keeps connection and
transaction state per thread). The PostgreSQL pool checks a connection's health on check-out,
so a server restart costs no failed request.

Invariants:
- Never `await` inside a transaction: a unit of work is one synchronous function, and any
  transaction it opens (`with store.db.atomic():`) begins and ends inside it.
- Exceptions raised by `fn` propagate unchanged; failing to obtain a connection raises
  `StoreError`.
- No message raised from here contains the database password (or the URL holding it).
- Models are bound through `models.database_proxy`; the most recently opened `Store` is the one
  they use (one `Store` per process).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, TypeVarTuple, cast
from urllib.parse import urlsplit, urlunsplit

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase, PooledSqliteDatabase

from bindify_appliance.errors import ConfigError, StoreError
from bindify_appliance.store import models, pgdriver

__all__ = [
    "SQLITE_PRAGMAS",
    "Store",
    "StoreKind",
    "database_kind",
    "open_database",
    "redact_database_url",
    "run_sql",
    "sqlite_path",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

StoreKind = Literal["sqlite", "postgresql"]

_OPTION = "BINDIFY_DATABASE_URL"
_EXPECTED = "expected sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"

# Order matters: busy_timeout first so that the pragmas after it (journal_mode=wal needs a
# brief exclusive lock) wait for a concurrent opener instead of failing at once.
SQLITE_PRAGMAS: tuple[tuple[str, object], ...] = (
    ("busy_timeout", 5000),
    ("journal_mode", "wal"),
    ("synchronous", "normal"),
    ("foreign_keys", 1),
    ("cache_size", -16000),
    ("temp_store", "memory"),
    ("journal_size_limit", 64 * 1024 * 1024),
)

DEFAULT_WORKERS = 4
# Connections beyond the worker threads, for synchronous callers on other threads (CLI, startup,
# migrations, the scheduler's own thread if any).
_EXTRA_PG_CONNECTIONS = 4
# Seconds a caller waits for a free PostgreSQL connection before StoreError.
_PG_POOL_WAIT = 10
# Seconds a new SQLite connection keeps retrying the switch to WAL (see _ensure_journal_mode).
_JOURNAL_MODE_WAIT = 5.0
# Recycle PostgreSQL connections after this many seconds (bounds server-side memory growth and
# lets a failed-over server be picked up).
_PG_STALE_AFTER = 600


def database_kind(url: str) -> StoreKind:
    """Return "sqlite" or "postgresql" for a database URL, or raise ConfigError."""
    scheme, sep, _rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"{_OPTION} is not a database URL ({_EXPECTED})")
    if scheme == "sqlite":
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise ConfigError(f"{_OPTION} has an unsupported scheme {scheme!r} ({_EXPECTED})")


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///` URL (None for PostgreSQL URLs).

    Everything after `sqlite:///` is taken literally as the path (no query string, no
    percent-decoding), so the default `sqlite:///{data_dir}/bindify.db` works for any data
    directory name. Raises ConfigError for malformed or in-memory SQLite URLs.
    """
    if database_kind(url) != "sqlite":
        return None
    rest = url.partition("://")[2]
    if not rest.startswith("/"):
        raise ConfigError(
            f"{_OPTION}: a SQLite URL needs three slashes before a relative path "
            "(sqlite:///bindify.db) and four before an absolute one (sqlite:////data/bindify.db)"
        )
    path = rest[1:]
    if path in ("", ":memory:") or path.startswith("file:"):
        raise ConfigError(
            f"{_OPTION}: an in-memory or URI SQLite database is not supported; give a file path"
        )
    return Path(path)


def _postgres_params(url: str) -> dict[str, Any]:
    """Parse a PostgreSQL URL with libpq's own rules into psycopg connect keywords."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(
            f"{_OPTION} names PostgreSQL but psycopg is not installed "
            "(install bindify-appliance[postgres])"
        ) from None
    # libpq understands both postgresql:// and postgres://. The parser's own messages may quote
    # parts of the URL (the password included), so they are dropped: `from None`.
    try:
        params = dict(conninfo_to_dict(url))
    except Exception:
        raise ConfigError(f"{_OPTION} is not a valid PostgreSQL URL ({_EXPECTED})") from None
    port = str(params.get("port") or "")
    if port and not all(part.isdigit() and 0 < int(part) < 65536 for part in port.split(",")):
        raise ConfigError(f"{_OPTION} has an invalid port ({_EXPECTED})")
    if not params.get("dbname"):
        raise ConfigError(f"{_OPTION} must name a database (postgresql://USER@HOST:PORT/DATABASE)")
    params.setdefault("connect_timeout", "10")
    params.setdefault("application_name", "bindify")
    return params


def redact_database_url(url: str) -> str:
    """The URL with any password replaced by `***`, fit for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _ensure_journal_mode(cursor: sqlite3.Cursor, mode: str) -> None:
    """Switch the file to `mode` unless it already is (the mode persists in the file).

    Two connections switching a new file to WAL at the same moment deadlock on the lock
    upgrade, and SQLite answers BUSY at once without consulting busy_timeout; so the switch is
    retried for a few seconds. Once the file is in WAL, later connections only read the mode.
    """
    deadline = time.monotonic() + _JOURNAL_MODE_WAIT
    while True:
        if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == mode:
            return
        try:
            cursor.execute(f"PRAGMA journal_mode = {mode}").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _SqliteDatabase(PooledSqliteDatabase):  # type: ignore[misc]
    """PooledSqliteDatabase whose journal_mode pragma tolerates concurrent first opens."""

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        cursor = conn.cursor()
        try:
            for name, value in self._pragmas:
                if name == "journal_mode":
                    _ensure_journal_mode(cursor, str(value).lower())
                else:
                    cursor.execute(f"PRAGMA {name} = {value}")
        finally:
            cursor.close()


def open_database(url: str, *, max_connections: int | None = None) -> peewee.Database:
    """Build the pooled peewee database for `url`; nothing connects until first use.

    `max_connections` bounds the PostgreSQL pool (default: enough for the default thread pool
    plus a few synchronous callers). SQLite connections are cheap and unbounded.

    Raises:
        ConfigError: the URL is malformed or unsupported; the message names BINDIFY_DATABASE_URL
            and never repeats the URL.
    """
    db: peewee.Database
    path = sqlite_path(url)
    if path is not None:
        db = _SqliteDatabase(
            str(path),
            pragmas=list(SQLITE_PRAGMAS),
            lock_type="IMMEDIATE",
            # Pooled connections move between pool threads; each is used by one thread at a time.
            check_same_thread=False,
            max_connections=None,
        )
        return db
    params = _postgres_params(url)
    dbname = params.pop("dbname")
    pgdriver.attach()
    db = PooledPostgresqlDatabase(
        dbname,
        prefer_psycopg3=True,
        max_connections=max_connections or DEFAULT_WORKERS + _EXTRA_PG_CONNECTIONS,
        stale_timeout=_PG_STALE_AFTER,
        timeout=_PG_POOL_WAIT,
        **params,
    )
    return db


def run_sql(db: peewee.Database, sql: str, params: Sequence[object] | None = None) -> Any:
    """`db.execute_sql` with a typed signature; returns the driver cursor.

    Parameters use the engine's placeholder (`db.param`: `?` on SQLite, `%s` on PostgreSQL).
    """
    return db.execute_sql(sql, params)  # type: ignore[no-untyped-call]


class Store:
    """The database, a connection pool and the thread pool that runs units of work."""

    def __init__(self, url: str, *, workers: int = DEFAULT_WORKERS) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.kind: StoreKind = database_kind(url)
        self.path: Path | None = sqlite_path(url)
        self.url = redact_database_url(url)
        self.db: peewee.Database = open_database(
            url, max_connections=workers + _EXTRA_PG_CONNECTIONS
        )
        models.bind(self.db)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bindify-db")
        self._closed = False
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Store {self.kind} {self.url}>"

    # -- running units of work -------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[peewee.Database]:
        """Hold a connection for this thread for the block (re-entrant), then return it.

        Raises:
            StoreError: no connection could be obtained (server down, pool exhausted, closed).
        """
        if self._closed:
            raise StoreError("the store is closed")
        try:
            opened = self.db.connect(reuse_if_open=True)
        except (peewee.DatabaseError, peewee.InterfaceError, MaxConnectionsExceeded) as exc:
            raise StoreError(f"database unavailable ({type(exc).__name__})") from exc
        try:
            yield self.db
        finally:
            if opened:
                self.db.close()

    def call(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run the unit of work `fn(*args)` in the calling thread (CLI, startup, tests)."""
        with self.connection():
            return fn(*args)

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run the unit of work `fn(*args)` on a pool thread and return its result.

        `fn` is synchronous and does all of its database work itself — never `await` inside a
        transaction: put the whole transaction in `fn`. Its exceptions propagate unchanged.
        """
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call_packed, fn, args)

    def _call_packed(self, fn: Callable[[*Ts], T], args: tuple[*Ts]) -> T:
        return self.call(fn, *args)

    # -- maintenance -----------------------------------------------------------------------

    def ping(self) -> None:
        """`SELECT 1` in the calling thread.

        Raises:
            StoreError: the database did not answer.
        """
        try:
            with self.connection():
                run_sql(self.db, "SELECT 1").fetchone()
        except StoreError:
            raise
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:
            raise StoreError(f"database did not answer ({type(exc).__name__})") from exc

    def checkpoint(self) -> None:
        """Fold the SQLite write-ahead log into the database file and truncate it.

        A no-op on PostgreSQL. Called at graceful shutdown and before file-level copies.
        """
        if self.kind != "sqlite":
            return
        try:
            with self.connection():
                run_sql(self.db, "PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except StoreError:
            raise
        except peewee.DatabaseError as exc:
            raise StoreError(f"WAL checkpoint failed ({type(exc).__name__})") from exc

    def close(self) -> None:
        """Wait for running units, stop the thread pool and close every connection.

        Idempotent. Closing the last SQLite connection also removes the -wal/-shm files.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True)
        # close_all closes idle and checked-out connections of every thread, not just ours.
        cast(Any, self.db).close_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
