"""Where the suite finds its PostgreSQL and Redis servers (environment, else the local ones).

Under pytest-xdist (`make test-fast` runs `-n`), each worker process must have a Redis
database of its own, because some tests flush the whole database and some write keys under the
appliance's default namespace. Worker `gwK` therefore uses database N+K, where N is the
database named by `BINDIFY_TEST_REDIS_URL` (default 0): `-n 4` on `/0` uses databases 0-3. A
run without xdist (no `PYTEST_XDIST_WORKER`) uses database N itself, as before.

PostgreSQL needs no such split: every database the suite creates has a random name
(`support.databases`), so workers never share one.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PG_SERVER_URL", "REDIS_URL", "WORKER_INDEX", "redis_database_url"]

PG_SERVER_URL = os.environ.get(
    "BINDIFY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_BASE_REDIS_URL = os.environ.get("BINDIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# A Redis server has 16 databases unless configured otherwise (`databases` in redis.conf).
REDIS_DATABASES = 16


def _worker_index(worker: str) -> int:
    """0 outside xdist; K for xdist's worker id `gwK`."""
    if not worker.startswith("gw"):
        return 0
    return int(worker[2:])


WORKER_INDEX = _worker_index(os.environ.get("PYTEST_XDIST_WORKER", ""))


def redis_database_url(base: str, offset: int) -> str:
    """`base` with its database number moved up by `offset` (a missing number counts as 0)."""
    parts = urlsplit(base)
    number = int(parts.path.strip("/") or 0) + offset
    if number >= REDIS_DATABASES:
        raise RuntimeError(
            f"Redis database {number} is past the server's {REDIS_DATABASES}: choose a lower "
            "database in BINDIFY_TEST_REDIS_URL or fewer xdist workers"
        )
    return urlunsplit((parts.scheme, parts.netloc, f"/{number}", parts.query, parts.fragment))


REDIS_URL = redis_database_url(_BASE_REDIS_URL, WORKER_INDEX)
