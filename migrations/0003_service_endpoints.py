"""0003 where credentials go: each service's stored endpoint fingerprint, and who disabled a
connection.

- `service_endpoints(service_id, fingerprint, updated_at)`: the fingerprint of everything a
  service's credentials are sent to (DESIGN §9), compared at every start so a changed
  `BINDIFY_{SERVICE}_*` override flags that service's connections for reconnecting. No row yet
  means "not known": the first start records it and flags nothing.
- `connections.disabled_by`: `admin` or `owner` while the connection is disabled (NULL
  otherwise, and for connections disabled before this migration: treated as the owner's).

Frozen: the model below is a copy made for this migration; it never imports the app's models.
"""

from __future__ import annotations

import peewee as pw


def up(db: pw.Database) -> None:
    class ServiceEndpoints(pw.Model):
        service_id = pw.TextField(primary_key=True)
        fingerprint = pw.TextField()
        updated_at = pw.TextField()

        class Meta:
            database = db
            table_name = "service_endpoints"

    db.create_tables([ServiceEndpoints], safe=False)
    db.execute_sql("ALTER TABLE connections ADD COLUMN disabled_by TEXT")
