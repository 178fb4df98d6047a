"""Shared fixtures: real PostgreSQL and Redis servers, and a guard that fails any test whose
code logs an unexpected ERROR (Tornado's own suite does the same).

PostgreSQL: `BINDIFY_TEST_DATABASE_URL` names a server (default: the local one); each test that
asks for `pg_url` gets a database of its own, created and dropped here.
Redis: `BINDIFY_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0); tests use a unique key prefix.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_SERVER_URL = os.environ.get(
    "BINDIFY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BINDIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def fail_on_error_logs(request: pytest.FixtureRequest) -> Iterator[_ErrorCollector]:
    """Fail the test if anything logs at ERROR or above, unless marked `allow_error_logs`."""
    collector = _ErrorCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        yield collector
    finally:
        root.removeHandler(collector)
    if request.node.get_closest_marker("allow_error_logs"):
        return
    if collector.records:
        lines = "; ".join(f"{r.name}: {r.getMessage()}" for r in collector.records[:5])
        pytest.fail(f"unexpected ERROR log records: {lines}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_error_logs: the test expects ERROR log records")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A freshly created PostgreSQL database, dropped after the test."""
    import psycopg

    name = "bindify_test_" + secrets.token_hex(6)
    with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(PG_SERVER_URL, name)
    finally:
        with psycopg.connect(PG_SERVER_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    """The real Redis server's URL (tests namespace their keys themselves)."""
    return REDIS_URL
