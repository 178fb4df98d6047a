"""0005 e-mail notifications: the outbox, and what was already told (DESIGN §15).

- `mail_outbox`: e-mails waiting to be sent (sealed message, attempts, next attempt, a claim
  with an expiry so one sender at a time holds a row), sent or given up on.
- `connections.reconnect_notified_at`: when the member was last mailed that the connection
  needs reconnecting (at most daily).
- `job_runs.consecutive_failures`, `job_runs.failure_notified_at`: the current failure streak
  of a job, and when admins were told about it.

Frozen: the model below is a copy made for this migration; it never imports the app's models.
"""

from __future__ import annotations

import peewee as pw


def up(db: pw.Database) -> None:
    class MailOutbox(pw.Model):
        id = pw.TextField(primary_key=True)
        kind = pw.TextField()
        message_sealed = pw.TextField()
        key_fingerprint = pw.TextField()
        created_at = pw.TextField()
        attempts = pw.IntegerField(default=0)
        next_attempt_at = pw.TextField(index=True)
        claimed_by = pw.TextField(null=True)
        claimed_until = pw.TextField(null=True)
        sent_at = pw.TextField(null=True)
        failed_at = pw.TextField(null=True)
        last_error = pw.TextField(null=True)

        class Meta:
            database = db
            table_name = "mail_outbox"

    db.create_tables([MailOutbox], safe=False)
    db.execute_sql("ALTER TABLE connections ADD COLUMN reconnect_notified_at TEXT")
    db.execute_sql(
        "ALTER TABLE job_runs ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0"
    )
    db.execute_sql("ALTER TABLE job_runs ADD COLUMN failure_notified_at TEXT")
