"""E-mail notifications end to end in-process: the real app, API, store, scheduler and a local
SMTP server. Invites, needs-reconnect notices, failing-job notices, retries, several senders."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import html
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.inprocess import Browser, Server, add_token, add_user, fetch, start_appliance
from support.smtp_sink import SmtpSink, free_port

from bindify_appliance.jobs import standard_jobs
from bindify_appliance.mail.outbox import Mailer, mailer_for
from bindify_appliance.scheduler import Job, Scheduler
from bindify_appliance.store import connections as rows
from bindify_appliance.store import outbox as units
from bindify_appliance.store.models import MailOutbox

SENDER = "Bindify <bindify@example.com>"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(login=("mailer", "mail-pass"), auth_in_clear=True) as running:
        yield running


@pytest.fixture
async def server(tmp_path: Path, sink: SmtpSink) -> AsyncIterator[Server]:
    s = await start_appliance(
        tmp_path,
        smtp_url=f"smtp://mailer:mail-pass@127.0.0.1:{sink.port}",
        smtp_from=SENDER,
    )
    yield s
    await s.close()


def _mail_job(server: Server) -> Job:
    [job] = [j for j in standard_jobs(server.ctx) if j.name == "mail-outbox"]
    return job


async def _run_mail_job(server: Server) -> str:
    scheduler = Scheduler(server.store, server.ctx.kv, server.clock, "test")
    return await scheduler.run_once(_mail_job(server))


def _outbox(server: Server) -> list[MailOutbox]:
    return server.store.call(lambda: list(MailOutbox.select().order_by(MailOutbox.created_at)))


async def _invite(server: Server, token: str, email: str) -> dict[str, Any]:
    response = await fetch(
        server.url + "/api/v1/users",
        "POST",
        body=json.dumps({"email": email, "role": "member"}),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_an_invite_is_mailed_with_its_link_and_the_api_still_answers_it(
    server: Server, sink: SmtpSink, tmp_path: Path
) -> None:
    admin = add_user(server, "admin@example.com", "admin")
    answer = await _invite(server, add_token(server, admin), "New.Member@Example.com")
    link = answer["invite_url"]
    assert link.startswith(server.url + "/invite?token=")

    # Queued with the invite, sealed: the one-time token is not in the database in clear.
    [row] = _outbox(server)
    assert row.kind == "invite" and row.sent_at is None
    token = link.split("token=")[1]
    with sqlite3.connect(tmp_path / "bindify.db") as db:
        dump = "\n".join(db.iterdump())
    assert token not in dump and "new.member@example.com" in dump  # the user row, not the mail

    assert await _run_mail_job(server) == "ok"
    [got] = sink.received
    assert got.rcpt_tos == ["new.member@example.com"] and got.login == "mailer"
    assert got.message["From"] == SENDER
    assert link in got.message.get_content()
    [row] = _outbox(server)
    assert row.sent_at is not None and row.attempts == 1

    # The job is listed in /api/v1/jobs.
    jobs = await fetch(
        server.url + "/api/v1/jobs",
        headers={"Authorization": f"Bearer {add_token(server, admin, 'jobs')}"},
    )
    names = {job["name"]: job for job in jobs.json()["items"]}
    assert names["mail-outbox"]["outcome"] == "ok"
    assert names["mail-outbox"]["detail"].startswith("1 sent")
    assert await _run_mail_job(server) == "ok"
    assert len(sink.received) == 1  # sent once


async def test_without_smtp_nothing_is_queued_and_the_link_is_shown(tmp_path: Path) -> None:
    server = await start_appliance(tmp_path)
    try:
        assert mailer_for(server.ctx) is None
        assert "mail-outbox" not in {j.name for j in standard_jobs(server.ctx)}
        admin = add_user(server, "admin@example.com", "admin")
        answer = await _invite(server, add_token(server, admin), "someone@example.com")
        assert answer["invite_url"]
        assert _outbox(server) == []
    finally:
        await server.close()


def _connection(server: Server, user_id: str, n: int = 1, label: str | None = None) -> str:
    new = rows.NewConnection(
        id=f"00000000-0000-4000-8000-{n:012d}",
        user_id=user_id,
        service="github",
        auth_type="api_key",
        key_storage_mode="zero_knowledge",
        secret1_hash=f"hash-{n}",
        encrypted_tokens="v1:x",
        label=label,
    )
    now = server.clock.now()
    return server.store.call(functools.partial(rows.insert_connection, new, now=now)).id


def _flag(server: Server, cid: str) -> None:
    assert server.store.call(
        rows.set_needs_reconnect, cid, "upstream rejected the key", server.clock.now()
    )


async def test_a_needs_reconnect_flag_is_mailed_once_a_day_at_most(
    server: Server, sink: SmtpSink
) -> None:
    member = add_user(server, "member@example.com", "member")
    cid = _connection(server, member, label="work")
    other = _connection(server, member, n=2)  # never flagged: no mail
    await _run_mail_job(server)
    assert sink.received == []

    _flag(server, cid)
    await _run_mail_job(server)
    [got] = sink.received
    assert got.rcpt_tos == ["member@example.com"]
    assert "github (work)" in got.message.get_content()
    assert f"{server.url}/connections/{cid}" in got.message.get_content()

    # Reconnected, flagged again the same day: no second mail.
    server.clock.advance(3600)
    server.store.call(rows.clear_needs_reconnect, cid, server.clock.now())
    server.clock.advance(60)
    _flag(server, cid)
    await _run_mail_job(server)
    await _run_mail_job(server)
    assert len(sink.received) == 1

    # A day after the notice, the flag raised since then is told once more.
    server.clock.advance(24 * 3600)
    await _run_mail_job(server)
    assert len(sink.received) == 2
    await _run_mail_job(server)
    assert len(sink.received) == 2
    assert other not in sink.received[1].message.get_content()


async def test_disabled_members_and_connections_are_not_mailed(
    server: Server, sink: SmtpSink
) -> None:
    gone = add_user(server, "gone@example.com", "member", disabled=True)
    member = add_user(server, "member@example.com", "member")
    _flag(server, _connection(server, gone))
    off = _connection(server, member, n=2)
    disable = functools.partial(rows.set_disabled, actor_role="admin")
    assert server.store.call(disable, off, True, server.clock.now())
    _flag(server, off)
    await _run_mail_job(server)
    assert sink.received == []


@pytest.mark.allow_error_logs  # the scheduler logs each failed run
async def test_a_job_failing_three_times_in_a_row_tells_each_admin_once(
    server: Server, sink: SmtpSink
) -> None:
    add_user(server, "admin@example.com", "admin")
    add_user(server, "second-admin@example.com", "admin")
    add_user(server, "invited-admin@example.com", "admin", password_hash=None)
    add_user(server, "member@example.com", "member")
    outcome = {"fail": True}

    async def flaky() -> str:
        if outcome["fail"]:
            raise RuntimeError("boom")
        return "fine"

    job = Job("flaky", 60.0, flaky, leased=False)
    scheduler = Scheduler(server.store, server.ctx.kv, server.clock, "test")

    async def run(times: int) -> None:
        for _ in range(times):
            await scheduler.run_once(job)
        await _run_mail_job(server)

    await run(2)
    assert sink.received == []
    await run(1)
    assert sorted(r.rcpt_tos[0] for r in sink.received) == [
        "admin@example.com",
        "second-admin@example.com",
    ]
    assert "flaky" in sink.received[0].message["Subject"]
    await run(3)  # the same streak: nothing more
    assert len(sink.received) == 2
    outcome["fail"] = False
    await run(1)  # a success ends the streak
    outcome["fail"] = True
    await run(3)  # a new streak is told again
    assert len(sink.received) == 4


async def test_a_mail_server_that_is_down_is_retried_later_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = await start_appliance(tmp_path, smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=SENDER)
    try:
        admin = add_user(server, "admin@example.com", "admin")
        await _invite(server, add_token(server, admin), "later@example.com")
        await _run_mail_job(server)  # nothing listens: a failed attempt, scheduled again
        [row] = _outbox(server)
        assert (row.attempts, row.sent_at, row.failed_at) == (1, None, None)
        assert row.last_error == "the mail server could not be reached"
        assert row.next_attempt_at == server.clock.now() + units.retry_delay(1)
        with SmtpSink(port=port) as sink:
            await _run_mail_job(server)  # not due yet
            assert sink.received == []
            server.clock.advance(units.retry_delay(1).total_seconds())
            await _run_mail_job(server)
            [got] = sink.received
            assert got.rcpt_tos == ["later@example.com"]
    finally:
        await server.close()


async def test_after_the_last_attempt_the_mail_is_given_up_and_recorded(
    tmp_path: Path,
) -> None:
    server = await start_appliance(
        tmp_path, smtp_url=f"smtp://127.0.0.1:{free_port()}", smtp_from=SENDER
    )
    try:
        admin = add_user(server, "admin@example.com", "admin")
        await _invite(server, add_token(server, admin), "never@example.com")
        for attempt in range(1, units.MAX_ATTEMPTS + 1):
            await _run_mail_job(server)
            [row] = _outbox(server)
            assert row.attempts == attempt
            server.clock.advance(3600)
        assert row.failed_at is not None and row.sent_at is None
        assert row.last_error == "the mail server could not be reached"
        await _run_mail_job(server)
        assert _outbox(server)[0].attempts == units.MAX_ATTEMPTS  # never tried again
    finally:
        await server.close()


async def test_two_instances_sending_at_once_send_each_mail_once(
    server: Server, sink: SmtpSink
) -> None:
    admin = add_user(server, "admin@example.com", "admin")
    token = add_token(server, admin)
    for n in range(6):
        await _invite(server, token, f"user{n}@example.com")
    first = mailer_for(server.ctx)
    assert first is not None
    second_ctx = dataclasses.replace(server.ctx, instance_id="other-instance")
    second = mailer_for(second_ctx)
    assert isinstance(second, Mailer)
    results = await asyncio.gather(first.send_due(), second.send_due())
    assert sum(sent for sent, _, _ in results) == 6
    assert sorted(r.rcpt_tos[0] for r in sink.received) == [
        f"user{n}@example.com" for n in range(6)
    ]


async def test_two_instances_on_postgresql_queue_and_send_each_mail_once(
    tmp_path: Path, pg_migrated_url: str, sink: SmtpSink
) -> None:
    """Two appliances sharing one PostgreSQL database, each with its own store connection."""
    config: dict[str, Any] = {
        "database_url": pg_migrated_url,
        "smtp_url": f"smtp://mailer:mail-pass@127.0.0.1:{sink.port}",
        "smtp_from": SENDER,
        "single_instance": True,
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = await start_appliance(tmp_path / "a", **config)
    b = await start_appliance(tmp_path / "b", **config)
    try:
        b_ctx = dataclasses.replace(b.ctx, instance_id="instance-b", keys=a.ctx.keys)
        mailers = [mailer_for(a.ctx), mailer_for(b_ctx)]
        assert all(isinstance(m, Mailer) for m in mailers)
        admin = add_user(a, "admin@example.com", "admin")
        token = add_token(a, admin)
        for n in range(5):
            await _invite(a, token, f"user{n}@example.com")
        member = add_user(a, "member@example.com", "member")
        _flag(a, _connection(a, member))

        queued = await asyncio.gather(*(m.queue_notices() for m in mailers if m))
        assert sorted(queued) == [0, 1]  # one instance wins the notice
        results = await asyncio.gather(*(m.send_due() for m in mailers if m))
        assert sum(sent for sent, _, _ in results) == 6
        assert sorted(r.rcpt_tos[0] for r in sink.received) == [
            "member@example.com",
            *(f"user{n}@example.com" for n in range(5)),
        ]
    finally:
        await a.close()
        await b.close()


async def test_an_invite_made_on_the_admin_page_is_mailed_and_shown(
    server: Server, sink: SmtpSink
) -> None:
    add_user(server, "admin@example.com", "admin")
    browser = Browser(server.url)
    assert (await browser.login("admin@example.com")).status == 303
    page = await browser.post("/admin/users", {"email": "page@example.com", "role": "member"})
    assert page.status == 201
    await _run_mail_job(server)
    [got] = sink.received
    found = re.search(r"(\S+/invite\?token=\S+)", got.message.get_content())
    assert found is not None
    link = found.group(1)
    assert link.startswith(server.url + "/invite?token=")
    assert html.escape(link) in page.text  # the link is still shown to copy
