"""Optional e-mail (DESIGN §15): seal and queue messages, and the `mail-outbox` job that sends.

With `BINDIFY_SMTP_URL` unset `mailer_for` answers None, nothing is queued and no job runs:
invite links are shown to copy, as without e-mail.

The `mail-outbox` job (every instance, every `MAIL_JOB_INTERVAL` seconds; rows are claimed by
compare-and-swap, so no KV lease is needed) does, in order:
1. queue needs-reconnect notices: a connection flagged since its member was last told, at
   most once a day per connection (`connections.reconnect_notified_at`);
2. queue failing-job notices: one to each administrator when a job has failed
   `FAILING_JOB_THRESHOLD` times in a row, once per streak;
3. send due rows, one claimed row at a time, `smtplib` in an executor (never on the loop);
4. forget old sent and given-up rows.

Invariants:
- Queued messages are sealed under the active master key, bound to their row: an invite's
  one-time link is never stored in the clear. A row whose key is gone is given up, recorded.
- Logs name the row id, its kind and our own error text; never an address, a subject, a body
  or anything from `BINDIFY_SMTP_URL`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Mapping
from typing import Final

from bindify_appliance.context import AppContext
from bindify_appliance.crypto.sealing import managed_key, open_json, seal_json
from bindify_appliance.errors import CryptoError, MailError
from bindify_appliance.mail.messages import build_message, job_failing_mail, reconnect_mail
from bindify_appliance.mail.transport import SmtpTarget, parse_smtp_url, send_message
from bindify_appliance.scheduler import Job
from bindify_appliance.store import outbox as units
from bindify_appliance.store.models import new_id

__all__ = ["MAIL_JOB_INTERVAL", "Mailer", "mail_job", "mailer_for"]

log = logging.getLogger(__name__)

MAIL_JOB_INTERVAL: Final = 15.0
MAIL_JOB_FIRST_DELAY: Final = 5.0
SEND_BATCH: Final = 50  # at most this many mails per run, so one run stays short
_SEAL_FIELD: Final = "mail"


class Mailer:
    """Seals and queues messages; sends what is due. One per process and SMTP configuration.

    `ssl_context` and `require_starttls` are for tests (a private CA; a loopback server
    treated as remote); the appliance leaves them to the transport's defaults.
    """

    def __init__(
        self,
        ctx: AppContext,
        target: SmtpTarget,
        *,
        ssl_context: ssl.SSLContext | None = None,
        require_starttls: bool | None = None,
    ) -> None:
        self._ctx = ctx
        self._target = target
        self._ssl_context = ssl_context
        self._require_starttls = require_starttls

    def seal(self, kind: str, payload: Mapping[str, str]) -> units.QueuedMail:
        """A queued-mail row for `payload` ({to, subject, body}), sealed for a fresh row id."""
        key = self._ctx.keys.keyring.active
        row_id = new_id()
        blob = seal_json(managed_key(key.key, row_id), payload, row=row_id, field=_SEAL_FIELD)
        return units.QueuedMail(row_id, kind, blob, key.fingerprint)

    # -- the job ------------------------------------------------------------------------------

    async def run(self) -> str:
        queued = await self.queue_notices()
        sent, retried, failed = await self.send_due()
        await self._ctx.store.run(units.prune, self._ctx.clock.now())
        return f"{sent} sent, {retried} to retry, {failed} given up; {queued} notice(s) queued"

    async def queue_notices(self) -> int:
        ctx = self._ctx
        base = ctx.settings.base_url
        now = ctx.clock.now()
        queued = 0
        for notice in await ctx.store.run(units.reconnect_notices_due, now):
            payload = reconnect_mail(
                notice.email, base, notice.connection_id, notice.service, notice.label
            )
            mail = self.seal("reconnect", payload)
            queued += await ctx.store.run(units.queue_reconnect_notice, notice, mail, now)
        failing = await ctx.store.run(units.failing_jobs_due)
        if failing:
            admins = await ctx.store.run(units.active_admin_emails)
            for name, count in failing:
                mails = [
                    self.seal("job_failing", job_failing_mail(a, base, name, count)) for a in admins
                ]
                if await ctx.store.run(units.queue_job_notice, name, mails, now):
                    queued += len(mails)
                    log.warning(
                        "background job keeps failing; administrators notified",
                        extra={"event": "job_failing_notice", "job": name, "count": count},
                    )
        return queued

    async def send_due(self) -> tuple[int, int, int]:
        ctx = self._ctx
        owner = ctx.instance_id
        sent = retried = failed = 0
        loop = asyncio.get_running_loop()
        for _ in range(SEND_BATCH):
            claimed = await ctx.store.run(units.claim_next, owner, ctx.clock.now())
            if claimed is None:
                break
            try:
                message = build_message(
                    self._open(claimed), ctx.settings.smtp_from, ctx.clock.now()
                )
                send = functools.partial(
                    send_message,
                    self._target,
                    message,
                    require_starttls=self._require_starttls,
                    ssl_context=self._ssl_context,
                )
                await loop.run_in_executor(None, send)
            except MailError as exc:
                outcome = await ctx.store.run(
                    functools.partial(
                        units.finish_failed,
                        claimed.id,
                        owner,
                        ctx.clock.now(),
                        str(exc),
                        permanent=exc.permanent,
                    )
                )
                retried += outcome == "retry"
                failed += outcome == "failed"
                log.warning(
                    "e-mail not sent: %s",
                    exc,
                    extra={"event": f"mail_{outcome}", "mail_id": claimed.id, "kind": claimed.kind},
                )
                continue
            await ctx.store.run(units.finish_sent, claimed.id, owner, ctx.clock.now())
            sent += 1
            log.info(
                "e-mail sent",
                extra={"event": "mail_sent", "mail_id": claimed.id, "kind": claimed.kind},
            )
        return sent, retried, failed

    def _open(self, claimed: units.ClaimedMail) -> dict[str, str]:
        try:
            key = self._ctx.keys.keyring.get(claimed.key_fingerprint)
            payload = open_json(
                managed_key(key.key, claimed.id),
                claimed.message_sealed,
                row=claimed.id,
                field=_SEAL_FIELD,
            )
        except CryptoError:
            raise MailError(
                "the queued message cannot be opened (master key)", permanent=True
            ) from None
        return {k: str(payload[k]) for k in ("to", "subject", "body")}


def mailer_for(ctx: AppContext) -> Mailer | None:
    """The mailer when `BINDIFY_SMTP_URL` is set (validated at start-up), else None."""
    if not ctx.settings.smtp_url:
        return None
    return Mailer(ctx, parse_smtp_url(ctx.settings.smtp_url))


def mail_job(ctx: AppContext) -> Job | None:
    mailer = mailer_for(ctx)
    if mailer is None:
        return None
    return Job(
        "mail-outbox",
        MAIL_JOB_INTERVAL,
        mailer.run,
        leased=False,
        first_delay=MAIL_JOB_FIRST_DELAY,
    )
