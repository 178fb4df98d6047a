"""Check that what the test suite needs is here before running it (`make test` runs this).

Debian packages that are missing are installed when we can (root with apt-get); services that
are down are named. Anything still missing stops the run with one line naming it — the suite
never silently skips a part. First it says which PostgreSQL server and Redis databases the suite
will use (it creates and drops `bindify_test_*` databases on the one and flushes the others), with
any password in those URLs masked.

`--workers N` (`make test-fast`, N pytest-xdist workers): checks the two services only (the
fast tests need none of the Debian tools) and names the N Redis databases the workers use, one
each, counted up from the one in `BINDIFY_TEST_REDIS_URL` (tests/support/servers.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

REDIS_DATABASES = 16  # a Redis server's default `databases`, as in tests/support/servers.py

# command → Debian package providing it (browser tests, nginx and Caddy in front, the systemd
# unit check)
DEBIAN_TOOLS = {
    "chromium": "chromium",
    "nginx": "nginx-light",
    "caddy": "caddy",
    "systemd-analyze": "systemd",
    "npm": "npm",
}


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 3
        ):
            return True
    except OSError:
        return False


def shown(url: str) -> str:
    """The URL as printed: a password in it is masked (a log is no place for one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _install(packages: list[str]) -> None:
    if not packages or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *packages],
        check=False,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def redis_databases(url: str, workers: int) -> str:
    """The Redis databases a run flushes: the URL's own, or one per xdist worker from it up."""
    number = int(urlsplit(url).path.strip("/") or 0)
    if workers <= 1:
        return "flushed"
    return f"databases {number}-{number + workers - 1}, one per worker, flushed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="pytest-xdist workers")
    args = parser.parse_args(argv)
    fast = args.workers is not None
    missing_tools = [] if fast else [cmd for cmd in DEBIAN_TOOLS if shutil.which(cmd) is None]
    _install([DEBIAN_TOOLS[cmd] for cmd in missing_tools])
    missing = [
        f"{cmd} (Debian package {DEBIAN_TOOLS[cmd]})"
        for cmd in missing_tools
        if shutil.which(cmd) is None
    ]
    pg = os.environ.get(
        "BINDIFY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis = os.environ.get("BINDIFY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    target = "make test-fast" if fast else "make test"
    print(
        f"{target}: PostgreSQL {shown(pg)} (creates and drops bindify_test_* databases; "
        f"BINDIFY_TEST_DATABASE_URL), Redis {shown(redis)} "
        f"({redis_databases(redis, args.workers or 1)}; BINDIFY_TEST_REDIS_URL)",
        flush=True,
    )
    if not _reachable(pg, 5432):
        where = f"{urlsplit(pg).hostname}:{urlsplit(pg).port or 5432}"
        missing.append(
            f"PostgreSQL at {where} (start it, or set BINDIFY_TEST_DATABASE_URL; .ci/run starts it)"
        )
    if not _reachable(redis, 6379):
        where = f"{urlsplit(redis).hostname}:{urlsplit(redis).port or 6379}"
        missing.append(
            f"Redis at {where} (start it, or set BINDIFY_TEST_REDIS_URL; .ci/run starts it)"
        )
    last = int(urlsplit(redis).path.strip("/") or 0) + max(args.workers or 1, 1) - 1
    if last >= REDIS_DATABASES:
        missing.append(
            f"Redis database {last} (a server has {REDIS_DATABASES}: lower the database in "
            "BINDIFY_TEST_REDIS_URL or FAST_WORKERS)"
        )
    if missing:
        print(f"{target}: missing " + "; ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
