"""The suite's pytest plugin: real Redis, the ERROR-log guard, and the markers.

Loaded from `tests/conftest.py` through `pytest_plugins`, with the shared fixture modules beside
it (`support.databases`, `support.appliance_fixtures`, `support.store_fixtures`,
`support.client_programs`), so every test folder sees the same fixtures without importing them
from a sibling folder.

PostgreSQL: `BINDIFY_TEST_DATABASE_URL` names a server (default: the local one); the
`pg_url` (empty) and `pg_migrated_url` (migrated) fixtures live in `support.databases`.
Redis: `BINDIFY_TEST_REDIS_URL` (default redis://127.0.0.1:6379/0); tests use a unique key prefix.

Markers (`pyproject.toml` registers them; `make test-fast` deselects the first four):
- `process`: starts a process (the appliance, an MCP peer, a CLI run); applied here to every test
  whose module imports `subprocess` or the process harness (`support.appliance`), and to every
  test that uses an MCP peer-process fixture (a test that spawns processes otherwise, say with
  `multiprocessing`, carries the marker itself);
- `browser`: drives Chromium (`tests/browser/`; `tests/oauth_e2e/`, which starts processes too);
- `packaging`: builds or runs the shipped artefacts (`tests/packaging/`, `tests/test_wheel.py`);
- `binary`: runs against the frozen executable when `BINDIFY_TEST_BINARY` is set (applied by
  the tests themselves).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bindify_appliance.accounts import passwords

from .servers import REDIS_URL

# scrypt at the production work factor costs 0.1-0.2 s of CPU per hash, and the in-process
# sign-in tests hash and verify hundreds of times: it was the largest CPU cost of `make
# test-fast`. A stored hash carries its own parameters, so hashes made under this lower factor
# go through exactly the production code paths; only the cost differs. Set here, before any test
# module hashes its fixture passwords at import. Processes the suite starts (the `process` tests)
# keep the production factor; tests/accounts/test_passwords.py checks it in process too.
PRODUCTION_SCRYPT = (passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P)
passwords.SCRYPT_N, passwords.SCRYPT_R = 2**8, 8


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


TESTS = Path(__file__).resolve().parents[1]
_BY_FOLDER: dict[str, tuple[str, ...]] = {
    "browser": ("browser",),
    "packaging": ("packaging",),
    "clients": ("process",),
    "oauth_e2e": ("process", "browser"),
}
_BY_FILE = {"test_wheel.py": "packaging"}
# Fixtures that start a process (MCP peers in subprocesses, the client programs).
_PROCESS_FIXTURES = frozenset(
    {"mcp2_stateful", "mcp2_stateless", "mcp2_sse", "mcp2_resumable", "mcp2_restartable"}
    | {"mcp1_streamable", "mcp1_sse", "mcp1_python", "live", "node_bins", "mcp_upstream"}
)


def _starts_processes(module: object) -> bool:
    names = vars(module).values() if module is not None else ()
    for value in names:
        if value is subprocess:
            return True
        if getattr(value, "__module__", "").endswith("support.appliance"):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply `browser`, `packaging` and `process` by folder, file, module and fixture."""
    seen: dict[object, bool] = {}
    for item in items:
        path = Path(str(item.path))
        try:
            relative = path.relative_to(TESTS)
        except ValueError:
            continue
        wanted: set[str] = set()
        if len(relative.parts) > 1 and relative.parts[0] in _BY_FOLDER:
            wanted.update(_BY_FOLDER[relative.parts[0]])
        if relative.name in _BY_FILE:
            wanted.add(_BY_FILE[relative.name])
        module = getattr(item, "module", None)
        if module not in seen:
            seen[module] = _starts_processes(module)
        if seen[module] or _PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            wanted.add("process")
        for name in sorted(wanted):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)


@pytest.fixture
def redis_url() -> str:
    """The real Redis server's URL (tests namespace their keys themselves)."""
    return REDIS_URL
