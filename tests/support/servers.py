"""Where the suite finds its PostgreSQL and Redis servers (environment, else the local ones)."""

from __future__ import annotations

import os

__all__ = ["PG_SERVER_URL", "REDIS_URL"]

PG_SERVER_URL = os.environ.get(
    "BINDIFY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BINDIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
