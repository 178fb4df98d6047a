"""Audit-trail rows: the table access behind `bindify_appliance.audit` (which owns the chain rules).

Units of work for `Store.run` / `Store.call`. Rows are plain `AuditRow` values; `detail` is a
dict here and compact JSON in the table.

Invariants:
- Appending happens only inside `chain_transaction`, which holds the chain lock for the whole
  transaction: on SQLite the transaction is `BEGIN IMMEDIATE` (one writer at a time per file),
  on PostgreSQL it takes `pg_advisory_xact_lock(AUDIT_LOCK_KEY)` first. Reading the head and
  inserting `head.seq + 1` therefore never interleave with another appender, in this process
  or another one, so `seq` is gap-free and unique (the primary key would refuse a duplicate).
- Rows are never updated except by the chain's own re-sealing (`set_mac`: the genesis entry's
  first seal, and re-keying at `keys remove`), and deleted only from the start (`delete_through`).
- `audit_failure_counts` holds the anonymous sign-in failure counts of open windows: one row
  per (hour, address), incremented by an upsert; `take_failure_counts` reads and deletes the
  rows of ended windows inside the caller's chain transaction, so a count is chained once.
- Listing is newest first by `seq` (the cursor is the last `seq` shown); every filter is a
  plain column comparison, the action filter a prefix match on `action`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import peewee

from bindify_appliance.store.models import AuditEntry, AuditFailureCount, User, database_proxy

__all__ = [
    "AUDIT_LOCK_KEY",
    "AuditFilters",
    "AuditRow",
    "chain_transaction",
    "count_failure",
    "delete_through",
    "email_of",
    "head",
    "insert",
    "iter_rows",
    "last_seq_before",
    "list_rows",
    "rows_with_action",
    "set_mac",
    "take_failure_counts",
    "user_by_email",
]

T = TypeVar("T")

# pg_advisory_xact_lock key: "bdfyaudt" as a big-endian integer (distinct from the migrator's).
AUDIT_LOCK_KEY = int.from_bytes(b"bdfyaudt", "big") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at: str
    actor_type: str
    actor_id: str | None
    actor_email: str | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)
    key_fp: str = ""
    mac: str = ""


@dataclass(frozen=True)
class AuditFilters:
    action_prefix: str | None = None
    actor_id: str | None = None
    target_id: str | None = None
    since: str | None = None  # inclusive, `YYYY-MM-DDTHH:MM:SSZ`
    until: str | None = None  # exclusive


def _row(entry: AuditEntry) -> AuditRow:
    try:
        detail = json.loads(entry.detail or "{}")
    except ValueError:
        detail = {"_unreadable": True}  # verification reports the row as broken
    return AuditRow(
        seq=int(entry.seq),
        at=str(entry.at),
        actor_type=str(entry.actor_type),
        actor_id=entry.actor_id,
        actor_email=entry.actor_email,
        action=str(entry.action),
        target_type=entry.target_type,
        target_id=entry.target_id,
        ip=entry.ip,
        outcome=str(entry.outcome),
        detail=detail if isinstance(detail, dict) else {"_unreadable": True},
        key_fp=str(entry.key_fp or ""),
        mac=str(entry.mac or ""),
    )


def _is_postgres() -> bool:
    return isinstance(database_proxy.obj, peewee.PostgresqlDatabase)


def chain_transaction(fn: Callable[[], T]) -> T:
    """Run `fn` in one transaction holding the chain lock (see the module invariants)."""
    db = database_proxy
    with db.atomic():
        if _is_postgres():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_KEY,))
        return fn()


def head() -> AuditRow | None:
    entry = AuditEntry.select().order_by(AuditEntry.seq.desc()).first()
    return _row(entry) if entry is not None else None


def insert(row: AuditRow) -> None:
    AuditEntry.insert(
        seq=row.seq,
        at=row.at,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        actor_email=row.actor_email,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        ip=row.ip,
        outcome=row.outcome,
        detail=json.dumps(row.detail, sort_keys=True, separators=(",", ":")),
        key_fp=row.key_fp,
        mac=row.mac,
    ).execute()


def set_mac(seq: int, key_fp: str, mac: str) -> None:
    AuditEntry.update(key_fp=key_fp, mac=mac).where(AuditEntry.seq == seq).execute()


def iter_rows(after_seq: int = 0, batch: int = 1000) -> Iterator[AuditRow]:
    """Every row with `seq > after_seq`, oldest first, fetched in keyset batches."""
    last = after_seq
    while True:
        entries = list(
            AuditEntry.select().where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
        )
        for entry in entries:
            yield _row(entry)
        if len(entries) < batch:
            return
        last = int(entries[-1].seq)


def rows_with_action(actions: tuple[str, ...]) -> list[AuditRow]:
    query = AuditEntry.select().where(AuditEntry.action.in_(actions)).order_by(AuditEntry.seq)
    return [_row(entry) for entry in query]


def list_rows(filters: AuditFilters, before_seq: int | None, limit: int) -> list[AuditRow]:
    """A page, newest first: rows with `seq < before_seq` (all without) matching `filters`."""
    query = AuditEntry.select()
    if before_seq is not None:
        query = query.where(AuditEntry.seq < before_seq)
    if filters.action_prefix:
        query = query.where(AuditEntry.action.startswith(filters.action_prefix))
    if filters.actor_id:
        query = query.where(AuditEntry.actor_id == filters.actor_id)
    if filters.target_id:
        query = query.where(AuditEntry.target_id == filters.target_id)
    if filters.since:
        query = query.where(AuditEntry.at >= filters.since)
    if filters.until:
        query = query.where(AuditEntry.at < filters.until)
    return [_row(entry) for entry in query.order_by(AuditEntry.seq.desc()).limit(limit)]


def last_seq_before(at: str) -> int | None:
    """The highest `seq` of the leading run of rows older than `at` (None: the first is not).

    Deleting through it removes a prefix only, never a row that has a newer row before it.
    """
    first_new = AuditEntry.select(peewee.fn.MIN(AuditEntry.seq)).where(AuditEntry.at >= at)
    newest_old = first_new.scalar()
    query = AuditEntry.select(peewee.fn.MAX(AuditEntry.seq)).where(AuditEntry.at < at)
    if newest_old is not None:
        query = query.where(AuditEntry.seq < newest_old)
    value = query.scalar()
    return int(value) if value is not None else None


def delete_through(seq: int) -> int:
    return int(AuditEntry.delete().where(AuditEntry.seq <= seq).execute())


def email_of(user_id: str) -> str | None:
    user = User.select(User.email).where(User.id == user_id).first()
    return str(user.email) if user is not None else None


def user_by_email(email: str) -> tuple[str, str] | None:
    """(id, email) of the account with this address, or None."""
    user = User.select(User.id, User.email).where(User.email == email).first()
    return (str(user.id), str(user.email)) if user is not None else None


def count_failure(window_start: str, address: str, cap: int) -> None:
    """Add one anonymous sign-in failure for `address` in the window; past `cap` addresses in
    one window, new addresses are counted under `other` (the table stays bounded)."""
    table = AuditFailureCount
    with database_proxy.atomic():
        known = table.select().where(
            (table.window_start == window_start) & (table.address == address)
        )
        if not known.exists():
            open_rows = table.select().where(table.window_start == window_start).count()
            if open_rows >= cap:
                address = "other"
        table.insert(window_start=window_start, address=address, failures=1).on_conflict(
            conflict_target=[table.window_start, table.address],
            update={table.failures: table.failures + 1},
        ).execute()


def take_failure_counts(before_window: str | None) -> list[tuple[str, str, int]]:
    """Delete and return the (window_start, address, failures) rows of windows starting before
    `before_window` (all of them when None), oldest first. Run it in a chain transaction."""
    table = AuditFailureCount
    query = table.select().order_by(table.window_start, table.address)
    if before_window is not None:
        query = query.where(table.window_start < before_window)
    taken = [(str(r.window_start), str(r.address), int(r.failures)) for r in query]
    for window_start, address, _ in taken:
        table.delete().where(
            (table.window_start == window_start) & (table.address == address)
        ).execute()
    return taken
