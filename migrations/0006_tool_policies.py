"""0006 tool policies (DESIGN §13): an admin's policy per service, a member's per connection.

- `services.policy_json`: the service's tool policy as JSON
  (`{"tools": {"allow": [...], "deny": [...]}, "read_only": bool}`), NULL = none. Built-in
  services keep theirs on their (OAuth app credentials) row.
- `connections.policy_json`: the member's narrowing of it on one connection, NULL = none.

Both are NULL for every existing row: nothing changes until someone sets a policy.
"""

from __future__ import annotations

import peewee as pw


def up(db: pw.Database) -> None:
    db.execute_sql("ALTER TABLE services ADD COLUMN policy_json TEXT")
    db.execute_sql("ALTER TABLE connections ADD COLUMN policy_json TEXT")
