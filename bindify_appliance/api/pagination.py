"""List pagination for the admin API: `?limit=` (1-200, default 50) and an opaque `?cursor=`.

A cursor is base64url JSON of the sort-key values of the last item returned (see
`store/paging.py`); lists answer `{"items": [...], "next_cursor": "…" | null}`. Handlers fetch
`limit + 1` rows: the extra row only tells whether another page exists.

A malformed limit or cursor is `invalid_request` with `field` "limit" or "cursor".
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tornado.web

from bindify_appliance.api.schema import Named, Schema, array, nullable, obj, string
from bindify_appliance.clock import iso, parse_iso
from bindify_appliance.errors import InvalidRequest

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "PAGE_PARAMS",
    "as_timestamp",
    "decode_cursor",
    "encode_cursor",
    "list_schema",
    "page",
    "page_json",
    "parse_limit",
    "requested_page",
    "slice_json",
]

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_MAX_CURSOR = 512

PAGE_PARAMS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "description": "next_cursor of the previous page"},
    },
]


def parse_limit(text: str | None) -> int:
    if text is None or text == "":
        return DEFAULT_LIMIT
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}", field="limit")
    return int(text)


def encode_cursor(values: Sequence[str]) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def as_timestamp(value: str) -> str:
    """Cursor check for a timestamp sort key (raises ValueError when it is not one)."""
    return iso(parse_iso(value))


def decode_cursor(text: str | None, checks: Sequence[Callable[[str], object]]) -> list[str] | None:
    """The sort-key values a cursor holds (one per check), or None without a cursor."""
    if text is None or text == "":
        return None
    bad = InvalidRequest("cursor is not valid", field="cursor")
    if len(text) > _MAX_CURSOR or not text.isascii():
        raise bad
    try:
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        raise bad from None
    if (
        not isinstance(values, list)
        or len(values) != len(checks)
        or not all(isinstance(v, str) for v in values)
    ):
        raise bad
    try:
        for check, value in zip(checks, values, strict=True):
            check(value)
    except (ValueError, TypeError):
        raise bad from None
    return values


def page(
    rows: list[T], limit: int, key: Callable[[T], Sequence[str]]
) -> tuple[list[T], str | None]:
    """Trim a `limit + 1` fetch to `limit` and compute the next cursor."""
    if len(rows) <= limit:
        return rows, None
    kept = rows[:limit]
    return kept, encode_cursor(key(kept[-1]))


def requested_page(
    handler: tornado.web.RequestHandler, checks: Sequence[Callable[[str], object]]
) -> tuple[list[str] | None, int]:
    """The position (`?cursor=`, its sort-key values checked by `checks`) and the size
    (`?limit=`) a list request asks for. Raises HTTPFacingError for a malformed one."""
    limit = parse_limit(handler.get_query_argument("limit", None))
    return decode_cursor(handler.get_query_argument("cursor", None), checks), limit


def page_json(
    rows: list[T],
    limit: int,
    key: Callable[[T], Sequence[str]],
    render: Callable[[T], Any],
) -> dict[str, Any]:
    """The list answer for a `limit + 1` fetch ordered by `key`."""
    items, cursor = page(rows, limit, key)
    return {"items": [render(item) for item in items], "next_cursor": cursor}


def slice_json(
    listed: list[T],
    after: list[str] | None,
    limit: int,
    item_id: Callable[[T], str],
    render: Callable[[T], Any],
) -> dict[str, Any]:
    """The list answer for a page of an in-memory list kept in its own order: the items after
    the one the cursor names. A cursor naming an item no longer listed is invalid (400), so a
    client paging through a changing list starts again rather than looping."""
    ids = [item_id(item) for item in listed]
    start = 0
    if after is not None:
        if after[0] not in ids:
            raise InvalidRequest("cursor is not valid", field="cursor")
        start = ids.index(after[0]) + 1
    items = listed[start : start + limit]
    more = start + limit < len(listed)
    return {
        "items": [render(item) for item in items],
        "next_cursor": encode_cursor([item_id(items[-1])]) if more and items else None,
    }


def list_schema(item: Schema | Named) -> Schema:
    return obj(
        {"items": array(item), "next_cursor": nullable(string())},
        required=("items", "next_cursor"),
    )
