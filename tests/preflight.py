"""Check that what the test suite needs is here before running it.

Stops with one line naming what is missing — the suite never silently skips a part.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 3
        ):
            return True
    except OSError:
        return False


def main() -> int:
    pg = os.environ.get(
        "BINDIFY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis = os.environ.get("BINDIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    missing = []
    if not _reachable(pg, 5432):
        missing.append(
            f"PostgreSQL at {urlsplit(pg).hostname}:{urlsplit(pg).port or 5432} "
            "(start it, or set BINDIFY_TEST_DATABASE_URL; .ci/run starts it)"
        )
    if not _reachable(redis, 6379):
        missing.append(
            f"Redis at {urlsplit(redis).hostname}:{urlsplit(redis).port or 6379} "
            "(start it, or set BINDIFY_TEST_REDIS_URL; .ci/run starts it)"
        )
    if missing:
        print("make test: missing " + "; ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
