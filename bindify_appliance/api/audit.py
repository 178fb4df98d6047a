"""`GET /api/v1/audit` (admin): the audit trail, newest first, filtered and paged (DESIGN §12).

Filters (all optional, combined with AND): `action` (a prefix: `connection.` or
`connection.rotate`), `actor` (a user id), `target` (a target id), `since` (inclusive) and
`until` (exclusive) as UTC timestamps. The answer is the list shape `{"items", "next_cursor"}`;
each item is exactly what `bindify audit export` writes for that entry.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.pagination import PAGE_PARAMS, list_schema, page_json, requested_page
from bindify_appliance.api.schema import TIMESTAMP, Named, integer, nullable, obj, string
from bindify_appliance.audit.chain import entry_json
from bindify_appliance.clock import iso, parse_iso
from bindify_appliance.errors import InvalidRequest
from bindify_appliance.store import audit as audit_store
from bindify_appliance.store.audit import AuditFilters

__all__ = ["AUDIT_ENTRY", "AuditHandler", "parse_filters"]

_ACTOR = obj(
    {"type": string(), "id": nullable(string()), "email": nullable(string())},
    required=("type", "id", "email"),
)
_TARGET = obj({"type": nullable(string()), "id": nullable(string())}, required=("type", "id"))
AUDIT_ENTRY = Named(
    "AuditEntry",
    obj(
        {
            "seq": integer(minimum=1),
            "at": TIMESTAMP,
            "actor": _ACTOR,
            "action": string(description="area.verb, e.g. connection.rotate"),
            "target": nullable(_TARGET),
            "ip": nullable(string()),
            "outcome": string(enum=("success", "failure", "denied")),
            "detail": {"type": "object", "description": "metadata only: ids, states, counts"},
            "key_fp": string(description="master key the MAC key derives from"),
            "mac": string(description="HMAC-SHA-256 chain link (hex)"),
        },
        required=(
            "seq",
            "at",
            "actor",
            "action",
            "target",
            "ip",
            "outcome",
            "detail",
            "key_fp",
            "mac",
        ),
    ),
)
_FILTERS: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": text,
    }
    for name, text in (
        ("action", "action prefix, e.g. connection."),
        ("actor", "actor user id"),
        ("target", "target id"),
        ("since", "UTC timestamp, inclusive"),
        ("until", "UTC timestamp, exclusive"),
    )
]


def _text(value: str | None, name: str, limit: int = 200) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise InvalidRequest(f"{name} is too long", field=name)
    return value


def _time(value: str | None, name: str) -> str | None:
    if not value:
        return None
    try:
        return iso(parse_iso(value))
    except (ValueError, TypeError):
        raise InvalidRequest(f"{name} must be a UTC timestamp", field=name) from None


def parse_filters(get: Any) -> AuditFilters:
    """The filters of a request (`get(name)` reads a query argument); 400 for a bad one."""
    return AuditFilters(
        action_prefix=_text(get("action"), "action", 64),
        actor_id=_text(get("actor"), "actor"),
        target_id=_text(get("target"), "target"),
        since=_time(get("since"), "since"),
        until=_time(get("until"), "until"),
    )


def _seq(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise ValueError(value)
    return int(value)


class AuditHandler(ApiHandler):
    @operation(
        "The audit trail, newest first",
        access="admin",
        tag="audit",
        query=[*_FILTERS, *PAGE_PARAMS],
        response=list_schema(AUDIT_ENTRY),
    )
    async def get(self) -> None:
        filters = parse_filters(lambda name: self.get_query_argument(name, None))
        after, limit = requested_page(self, (_seq,))
        before = int(after[0]) if after else None
        found = await self.ctx.store.run(audit_store.list_rows, filters, before, limit + 1)
        self.write_json(page_json(found, limit, lambda r: (str(r.seq),), entry_json))
