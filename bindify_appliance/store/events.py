"""Connection events: a short, metadata-only history per connection, deduplicated and pruned.

An event is (connection or none, user, event_type, category, detail, upstream_status, time) and
nothing else: the table has no column for a payload, and `record_event` takes no argument that
could carry one. `detail` is short text the code composes from ids and statuses.

Write rules (the hosted worker's, reference/hosted-bindify.md §5.3) — skip the insert when a
matching event of the same connection exists in the window:
- orphan events (no connection): never deduplicated;
- never deduplicated: token_refresh/success, keepalive/success, every connection_created, every
  reauth, every `connection` state change (our addition: an audit trail of disable, enable,
  needs-reconnect and URL rotation), and category d1_write_failed;
- auth/success: written only when the connection's latest `auth` event exists and is not a success
  (a recovery marker);
- proxy_request/success: one per 5 minutes;
- proxy_request/upstream_error: one per upstream_status per hour;
- anything else: one per (event_type, category, detail — NULL included) per hour.
After each insert: keep the newest 200 events of that connection (newest = created_at, then id)
and the newest 20,000 orphan events.

Units of work for `Store.run`; one transaction each (on SQLite `BEGIN IMMEDIATE`, so a check and
its insert cannot interleave with another writer's).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from bindify_appliance.clock import iso, parse_iso
from bindify_appliance.errors import BadQueryError
from bindify_appliance.store.models import ConnectionEvent

__all__ = [
    "EVENT_TYPES",
    "KEEP_ORPHANS",
    "KEEP_PER_CONNECTION",
    "EventPage",
    "EventRecord",
    "decode_cursor",
    "encode_cursor",
    "list_events",
    "record_event",
]

EVENT_TYPES: Final = frozenset(
    {
        "proxy_request",
        "token_refresh",
        "keepalive",
        "auth",
        "connection_created",
        "reauth",
        "api_key_validation",
        "connection",
    }
)
KEEP_PER_CONNECTION: Final = 200
KEEP_ORPHANS: Final = 20_000
MAX_DETAIL: Final = 200
SUCCESS_WINDOW: Final = timedelta(minutes=5)
DEFAULT_WINDOW: Final = timedelta(hours=1)

_CATEGORY_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")
_NEVER_DEDUPED_TYPES: Final = frozenset({"connection_created", "reauth", "connection"})
_NEVER_DEDUPED_PAIRS: Final = frozenset({("token_refresh", "success"), ("keepalive", "success")})


@dataclass(frozen=True)
class EventRecord:
    """One event as the admin API shows it."""

    id: int
    connection_id: str | None
    event_type: str
    category: str
    detail: str | None
    upstream_status: int | None
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event_type": self.event_type,
            "category": self.category,
            "detail": self.detail,
            "upstream_status": self.upstream_status,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class EventPage:
    items: list[EventRecord]
    next_cursor: str | None


def _check(event_type: str, category: str, detail: str | None, upstream_status: int | None) -> None:
    # Programming errors, not user input: the vocabulary is closed and detail is short, printable
    # text, so nothing resembling a payload slips into the table by accident.
    if event_type not in EVENT_TYPES:
        raise ValueError("unknown event type")
    if not isinstance(category, str) or not _CATEGORY_RE.fullmatch(category):
        raise ValueError("event category must be a short lower-case identifier")
    if detail is not None and (
        not isinstance(detail, str)
        or len(detail) > MAX_DETAIL
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in detail)
    ):
        raise ValueError(f"event detail must be at most {MAX_DETAIL} printable characters")
    if upstream_status is not None and (
        not isinstance(upstream_status, int)
        or isinstance(upstream_status, bool)
        or not 100 <= upstream_status <= 599
    ):
        raise ValueError("upstream_status must be an HTTP status code")


def _is_duplicate(
    connection_id: str,
    event_type: str,
    category: str,
    detail: str | None,
    upstream_status: int | None,
    now: datetime,
) -> bool:
    if event_type in _NEVER_DEDUPED_TYPES or (event_type, category) in _NEVER_DEDUPED_PAIRS:
        return False
    if category == "d1_write_failed":
        return False
    mine = ConnectionEvent.connection == connection_id
    if (event_type, category) == ("auth", "success"):
        latest = (
            ConnectionEvent.select(ConnectionEvent.category)
            .where(mine & (ConnectionEvent.event_type == "auth"))
            .order_by(ConnectionEvent.created_at.desc(), ConnectionEvent.id.desc())
            .first()
        )
        return latest is None or latest.category == "success"
    same = (
        mine & (ConnectionEvent.event_type == event_type) & (ConnectionEvent.category == category)
    )
    if (event_type, category) == ("proxy_request", "success"):
        window = SUCCESS_WINDOW
    elif (event_type, category) == ("proxy_request", "upstream_error"):
        window = DEFAULT_WINDOW
        same &= (
            ConnectionEvent.upstream_status.is_null()
            if upstream_status is None
            else ConnectionEvent.upstream_status == upstream_status
        )
    else:
        window = DEFAULT_WINDOW
        same &= (
            ConnectionEvent.detail.is_null() if detail is None else ConnectionEvent.detail == detail
        )
    query = ConnectionEvent.select(ConnectionEvent.id).where(
        same & (ConnectionEvent.created_at > now - window)
    )
    return bool(query.exists())


def _prune(connection_id: str | None) -> None:
    keep = KEEP_PER_CONNECTION if connection_id is not None else KEEP_ORPHANS
    scope = (
        ConnectionEvent.connection.is_null()
        if connection_id is None
        else ConnectionEvent.connection == connection_id
    )
    # The oldest event still kept; everything strictly older (by created_at, then id) goes.
    boundary = (
        ConnectionEvent.select(ConnectionEvent.id, ConnectionEvent.created_at)
        .where(scope)
        .order_by(ConnectionEvent.created_at.desc(), ConnectionEvent.id.desc())
        .offset(keep - 1)
        .limit(1)
        .first()
    )
    if boundary is None:
        return
    older = (ConnectionEvent.created_at < boundary.created_at) | (
        (ConnectionEvent.created_at == boundary.created_at) & (ConnectionEvent.id < boundary.id)
    )
    ConnectionEvent.delete().where(scope & older).execute()


def record_event(
    connection_id: str | None,
    *,
    user_id: str | None,
    event_type: str,
    category: str,
    now: datetime,
    detail: str | None = None,
    upstream_status: int | None = None,
) -> bool:
    """Insert one event unless the dedup rules say it is already recorded; True if inserted."""
    _check(event_type, category, detail, upstream_status)
    db = ConnectionEvent._meta.database
    with db.atomic():
        if connection_id is not None and _is_duplicate(
            connection_id, event_type, category, detail, upstream_status, now
        ):
            return False
        ConnectionEvent.create(
            connection=connection_id,
            user_id=user_id,
            event_type=event_type,
            category=category,
            detail=detail,
            upstream_status=upstream_status,
            created_at=now,
        )
        _prune(connection_id)
    return True


def encode_cursor(record: EventRecord) -> str:
    """An opaque cursor for the page after `record` (its time and id)."""
    raw = f"{iso(record.created_at)}|{record.id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Inverse of `encode_cursor`; `BadQueryError` (field `cursor`) when it is not one."""
    bad = BadQueryError("cursor is not valid", "cursor")
    if not isinstance(cursor, str) or len(cursor) > 100:
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        moment, _, ident = text.partition("|")
        return parse_iso(moment), int(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None


def list_events(
    connection_id: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    before: tuple[datetime, int] | None = None,
) -> EventPage:
    """A connection's events, newest first, `limit` (1-200) per page.

    The page starts after `cursor` (this module's opaque form) or `before` = (created_at, id)
    of the last event already shown (for callers with their own cursor encoding).
    """
    if not 1 <= limit <= KEEP_PER_CONNECTION:
        raise BadQueryError("limit must be between 1 and 200", "limit")
    where = ConnectionEvent.connection == connection_id
    if cursor is not None:
        before = decode_cursor(cursor)
    if before is not None:
        moment, ident = before
        where &= (ConnectionEvent.created_at < moment) | (
            (ConnectionEvent.created_at == moment) & (ConnectionEvent.id < ident)
        )
    rows = list(
        ConnectionEvent.select()
        .where(where)
        .order_by(ConnectionEvent.created_at.desc(), ConnectionEvent.id.desc())
        .limit(limit + 1)
    )
    items = [
        EventRecord(
            id=row.id,
            connection_id=connection_id,
            event_type=row.event_type,
            category=row.category,
            detail=row.detail,
            upstream_status=row.upstream_status,
            created_at=row.created_at,
        )
        for row in rows[:limit]
    ]
    next_cursor = encode_cursor(items[-1]) if len(rows) > limit else None
    return EventPage(items, next_cursor)
