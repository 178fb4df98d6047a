"""0007 failed sign-ins naming no account, counted in the database (DESIGN §12).

- `audit_failure_counts(window_start, address, failures)`: one row per client address (IPv4, or
  the IPv6 /64) and hour, incremented by an upsert at each failure, so a crash loses no count.
  When the hour has ended the row becomes one chained `login.failure_count` entry in
  `audit_log` and is deleted, in the same transaction (`bindify_appliance.audit`).

Frozen: the model below is a copy made for this migration; it never imports the app's models.
"""

from __future__ import annotations

import peewee as pw


def up(db: pw.Database) -> None:
    class AuditFailureCount(pw.Model):
        window_start = pw.TextField()
        address = pw.TextField()
        failures = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])

        class Meta:
            database = db
            table_name = "audit_failure_counts"
            primary_key = pw.CompositeKey("window_start", "address")

    db.create_tables([AuditFailureCount], safe=False)
