"""Failed sign-ins naming no account survive a crash: the count is in the database at once.

A real `bindify serve` counts three such failures, is killed with SIGKILL, restarts, counts two
more and stops; the trail holds `login.failure_count` entries adding up to five for the address.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from store import ENGINES, engine_url
from support.appliance import Appliance, admin_token
from support.inprocess import Browser

from audit.test_chain import KEYRING
from bindify_appliance.audit.record import _flush_unit
from bindify_appliance.audit.verify import verify_chain
from bindify_appliance.store import Store, apply
from bindify_appliance.store import audit as audit_rows


async def _fail(url: str, times: int) -> None:
    browser = Browser(url)
    for n in range(times):
        answer = await browser.login(f"nobody-{n}@example.com", "not the password at all")
        assert answer.status == 400


def _counted(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT ip, detail FROM audit_log WHERE action = 'login.failure_count'"
        ).fetchall()
    assert {ip for ip, _ in rows} <= {"127.0.0.1"}
    return sum(int(json.loads(detail)["count"]) for _, detail in rows)


def test_anonymous_failure_counts_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin_token(data)
    app = Appliance(data).start()
    try:
        asyncio.run(_fail(app.url, 3))
    finally:
        assert app.stop(signal.SIGKILL) == -signal.SIGKILL
    app = Appliance(data).start()
    try:
        asyncio.run(_fail(app.url, 2))
    finally:
        assert app.stop() == 0
    assert _counted(data / "bindify.db") == 5


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with Store(engine_url(request, tmp_path, migrated=True)) as s:
        apply(s, backup_dir=None)
        yield s


def test_counts_are_upserted_then_chained_once_per_window(store: Store) -> None:
    for address in ("192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.3"):
        store.call(audit_rows.count_failure, "2026-11-29T10:00:00Z", address, 2)
    store.call(audit_rows.count_failure, "2026-11-29T11:00:00Z", "192.0.2.1", 2)
    now = datetime(2026, 11, 29, 11, 30, tzinfo=UTC)
    # Only the ended window is chained; past the cap a new address is counted as `other`.
    assert store.call(_flush_unit, KEYRING, "2026-11-29T11:00:00Z", now) == 3
    assert store.call(_flush_unit, KEYRING, "2026-11-29T11:00:00Z", now) == 0
    rows = store.call(audit_rows.rows_with_action, ("login.failure_count",))
    assert [(r.ip, r.detail["count"]) for r in rows] == [
        ("192.0.2.1", 2),
        ("192.0.2.2", 1),
        ("other", 1),
    ]
    assert rows[0].detail["window_end"] == "2026-11-29T11:00:00Z"
    assert store.call(_flush_unit, KEYRING, None, now) == 1  # at shutdown: the open window too
    assert store.call(verify_chain, KEYRING, []).ok
