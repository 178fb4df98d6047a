"""0004 the audit trail (DESIGN §12): one append-only, hash-chained table, and its genesis entry.

- `audit_log(seq, at, actor_type, actor_id, actor_email, action, target_type, target_id, ip,
  outcome, detail, key_fp, mac)`: `seq` is assigned by the appender under a lock (gap-free, not
  an auto-increment); `detail` is a small JSON object of metadata; `mac` is the row's
  HMAC-SHA-256 link (hex) under the audit key derived from master key `key_fp`.
- The genesis entry (seq 1, `audit.genesis`) is written here so the chain starts at the
  upgrade. A migration has no master keys, so it is written unsealed (`key_fp` and `mac`
  empty); the first append seals it under the active key before linking to it
  (`bindify_appliance.audit`).

Frozen: the model below is a copy made for this migration; it never imports the app's models.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import peewee as pw


def up(db: pw.Database) -> None:
    class AuditLog(pw.Model):
        seq = pw.IntegerField(primary_key=True)
        at = pw.TextField()
        actor_type = pw.TextField()
        actor_id = pw.TextField(null=True)
        actor_email = pw.TextField(null=True)
        action = pw.TextField()
        target_type = pw.TextField(null=True)
        target_id = pw.TextField(null=True)
        ip = pw.TextField(null=True)
        outcome = pw.TextField()
        detail = pw.TextField(default="{}", constraints=[pw.SQL("DEFAULT '{}'")])
        key_fp = pw.TextField(default="", constraints=[pw.SQL("DEFAULT ''")])
        mac = pw.TextField(default="", constraints=[pw.SQL("DEFAULT ''")])

        class Meta:
            database = db
            table_name = "audit_log"
            indexes = (
                (("at",), False),
                (("action",), False),
                (("actor_id",), False),
                (("target_id",), False),
            )

    db.create_tables([AuditLog], safe=False)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    AuditLog.insert(
        seq=1,
        at=now,
        actor_type="system",
        action="audit.genesis",
        outcome="success",
        detail=json.dumps({"reason": "migration"}, separators=(",", ":"), sort_keys=True),
    ).execute()
