"""A real `bindify serve` killed between queueing a mail and sending it loses nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from support.appliance import Appliance, admin_token, api_post
from support.smtp_sink import SmtpSink

pytestmark = pytest.mark.slow

PASSWORD = "smtp-secret-hunter2"


def _outbox(data_dir: Path) -> list[tuple[str, int, str | None]]:
    with sqlite3.connect(data_dir / "bindify.db") as db:
        return list(db.execute("SELECT kind, attempts, sent_at FROM mail_outbox"))


def test_an_invite_queued_before_a_crash_is_mailed_after_the_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with SmtpSink(login=("mailer", PASSWORD), auth_in_clear=True) as sink:
        env = {
            "BINDIFY_SMTP_URL": f"smtp://mailer:{PASSWORD}@127.0.0.1:{sink.port}",
            "BINDIFY_SMTP_FROM": "Bindify <bindify@example.com>",
        }
        token = admin_token(data_dir, env)
        first = Appliance(data_dir, env).start()
        try:
            answer = api_post(
                first, token, "/users", {"email": "ann@example.com", "role": "member"}
            )
            # Freeze the process right after it answered: the mail is queued, not sent (the
            # mail job's first run is seconds after start-up).
            assert first.proc is not None
            os.kill(first.proc.pid, signal.SIGSTOP)
            assert _outbox(data_dir) == [("invite", 0, None)]
            assert sink.received == []
        finally:
            first.stop(signal.SIGKILL)  # a crash, no graceful shutdown

        second = Appliance(data_dir, env, port=first.port).start()
        try:
            [got] = sink.wait_for(1, timeout=60)
            assert got.rcpt_tos == ["ann@example.com"] and got.login == "mailer"
            assert answer["invite_url"] in got.message.get_content()
            [(kind, attempts, sent_at)] = _outbox(data_dir)
            assert (kind, attempts) == ("invite", 1) and sent_at is not None
        finally:
            second.stop()
        records = second.log_records()
        assert any(r.get("event") == "mail_sent" for r in records), records[-5:]
        logs = first.stderr() + second.stderr()
        assert PASSWORD not in logs and "ann@example.com" not in logs
        assert json.dumps(PASSWORD)[1:-1] not in logs
