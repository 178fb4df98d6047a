"""Failed sign-ins naming no account survive a crash: the count is in the database at once.

A real `bindify serve` counts three such failures, is killed with SIGKILL, restarts, counts two
more and stops; the trail holds `login.failure_count` entries adding up to five for the address.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path

from accounts.harness import Browser

from tests.support.appliance import Appliance, admin_token


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
