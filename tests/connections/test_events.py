"""Connection events on both engines: metadata only, the dedup rules, pruning, listing."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

import pytest

from bindify_appliance.errors import BadQueryError, http_parts
from bindify_appliance.store import Store, events
from bindify_appliance.store import connections as rows
from bindify_appliance.store.db import run_sql
from bindify_appliance.store.models import ConnectionEvent

from .helpers import NOW, add_user


def _connection(store: Store, user_id: str, n: int = 1) -> str:
    new = rows.NewConnection(
        id=f"00000000-0000-4000-8000-{n:012d}",
        user_id=user_id,
        service="github",
        auth_type="api_key",
        key_storage_mode="zero_knowledge",
        secret1_hash=f"hash-{n}",
        encrypted_tokens="v1:x",
    )
    return store.call(functools.partial(rows.insert_connection, new, now=NOW)).id


def _record(store: Store, cid: str | None, at: datetime, **kw: Any) -> bool:
    values: dict[str, Any] = {"user_id": "u", "event_type": "auth", "category": "unknown"}
    values.update(kw)
    return store.call(functools.partial(events.record_event, cid, now=at, **values))


def _count(store: Store, cid: str | None, **where: object) -> int:
    def unit() -> int:
        q = ConnectionEvent.select()
        q = q.where(
            ConnectionEvent.connection.is_null()
            if cid is None
            else ConnectionEvent.connection == cid
        )
        for name, value in where.items():
            q = q.where(getattr(ConnectionEvent, name) == value)
        return int(q.count())

    return store.call(unit)


@pytest.fixture
def cid(any_store: Store) -> str:
    return _connection(any_store, add_user(any_store))


def test_the_table_holds_metadata_only(any_store: Store) -> None:
    columns = {c.name for c in any_store.db.get_columns("connection_events")}
    assert columns == {
        "id",
        "connection_id",
        "user_id",
        "event_type",
        "category",
        "detail",
        "upstream_status",
        "created_at",
    }
    with pytest.raises(TypeError):
        events.record_event(  # type: ignore[call-arg]
            None, user_id="u", event_type="auth", category="x", now=NOW, payload="{}"
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"event_type": "tool_call"},
        {"category": "Bad Category"},
        {"category": ""},
        {"detail": "x" * 201},
        {"detail": "line\nbreak"},
        {"upstream_status": 99},
        {"upstream_status": True},
    ],
)
def test_record_event_refuses_anything_but_short_metadata(
    store: Store, bad: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        _record(store, None, NOW, **bad)
    assert _count(store, None) == 0


def test_proxy_success_is_deduplicated_for_five_minutes(any_store: Store, cid: str) -> None:
    kw = {"event_type": "proxy_request", "category": "success"}
    assert _record(any_store, cid, NOW, detail="github:streamable-http:post", **kw)
    # Any detail: one success marker per window.
    assert not _record(any_store, cid, NOW + timedelta(minutes=4), detail="github:sse", **kw)
    assert _record(any_store, cid, NOW + timedelta(minutes=5, seconds=1), detail="x", **kw)
    assert _count(any_store, cid, event_type="proxy_request") == 2


def test_upstream_errors_are_deduplicated_per_status_per_hour(any_store: Store, cid: str) -> None:
    kw = {"event_type": "proxy_request", "category": "upstream_error"}
    assert _record(any_store, cid, NOW, upstream_status=500, detail="a", **kw)
    assert not _record(
        any_store, cid, NOW + timedelta(minutes=30), upstream_status=500, detail="b", **kw
    )
    assert _record(any_store, cid, NOW + timedelta(minutes=30), upstream_status=502, **kw)
    assert _record(any_store, cid, NOW + timedelta(minutes=61), upstream_status=500, **kw)
    assert _count(any_store, cid, category="upstream_error") == 3


def test_other_events_are_deduplicated_on_type_category_detail(any_store: Store, cid: str) -> None:
    kw = {"event_type": "token_refresh", "category": "refresh_failed"}
    assert _record(any_store, cid, NOW, detail="Refresh returned 400", **kw)
    assert not _record(
        any_store, cid, NOW + timedelta(minutes=1), detail="Refresh returned 400", **kw
    )
    assert _record(any_store, cid, NOW + timedelta(minutes=1), detail="Refresh returned 500", **kw)
    assert _record(any_store, cid, NOW + timedelta(minutes=1), **kw)  # NULL detail is its own
    assert not _record(any_store, cid, NOW + timedelta(minutes=2), **kw)
    assert _record(any_store, cid, NOW + timedelta(minutes=61), detail="Refresh returned 400", **kw)
    assert _count(any_store, cid, category="refresh_failed") == 4


NEVER_DEDUPED = [
    ("token_refresh", "success"),
    ("keepalive", "success"),
    ("connection_created", "api_key"),
    ("reauth", "success"),
    ("connection", "disabled"),
    ("token_refresh", "d1_write_failed"),
]


def test_never_deduplicated_kinds(any_store: Store, cid: str) -> None:
    for event_type, category in NEVER_DEDUPED:
        before = _count(any_store, cid, event_type=event_type, category=category)
        for _ in range(3):
            assert _record(
                any_store, cid, NOW, event_type=event_type, category=category, detail="d"
            )
        assert _count(any_store, cid, event_type=event_type, category=category) == before + 3


def test_orphan_events_are_never_deduplicated(any_store: Store) -> None:
    kw = {"event_type": "api_key_validation", "category": "upstream_rejected", "detail": "x"}
    assert _record(any_store, None, NOW, **kw)
    assert _record(any_store, None, NOW, **kw)
    assert _count(any_store, None) == 2


def test_auth_success_is_only_a_recovery_marker(any_store: Store, cid: str) -> None:
    ok = {"event_type": "auth", "category": "success"}
    assert not _record(any_store, cid, NOW, **ok)  # no auth event yet
    assert _record(any_store, cid, NOW, event_type="auth", category="decryption_failed")
    assert _record(any_store, cid, NOW + timedelta(seconds=1), **ok)  # recovery after a failure
    assert not _record(any_store, cid, NOW + timedelta(seconds=2), **ok)  # latest is a success


def test_prune_keeps_the_newest_200_per_connection(any_store: Store, cid: str) -> None:
    other = _connection(any_store, add_user(any_store, "o@example.com"), 2)
    _record(any_store, other, NOW, event_type="reauth", category="success")

    def many() -> None:
        for i in range(205):
            events.record_event(
                cid,
                user_id="u",
                event_type="reauth",
                category="success",
                detail=f"n{i}",
                now=NOW + timedelta(seconds=i),
            )

    any_store.call(many)
    assert _count(any_store, cid) == 200
    page = any_store.call(functools.partial(events.list_events, cid, limit=200))
    # The newest survive; the connection_created event and the five oldest went.
    assert page.items[0].detail == "n204" and page.items[-1].detail == "n5"
    assert page.next_cursor is None
    assert _count(any_store, other) == 2  # another connection's history is untouched


def test_prune_caps_orphan_events(any_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "KEEP_ORPHANS", 3)
    for i in range(5):
        _record(
            any_store,
            None,
            NOW + timedelta(seconds=i),
            event_type="api_key_validation",
            category="upstream_rejected",
            detail=f"n{i}",
        )
    details = any_store.call(
        lambda: sorted(
            str(e.detail)
            for e in ConnectionEvent.select().where(ConnectionEvent.connection.is_null())
        )
    )
    assert details == ["n2", "n3", "n4"]


def test_list_events_pages_newest_first(any_store: Store, cid: str) -> None:
    for i in range(5):
        # Same second for two of them: the id breaks the tie.
        at = NOW + timedelta(seconds=min(i, 3))
        _record(any_store, cid, at, event_type="reauth", category="success", detail=f"n{i}")
    seen: list[str | None] = []
    cursor = None
    while True:
        page = any_store.call(functools.partial(events.list_events, cid, limit=2, cursor=cursor))
        seen += [e.detail for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ["n4", "n3", "n2", "n1", "n0", "service:github, mode:zero_knowledge"]
    # The same pages from (created_at, id) keys, for callers with their own cursor format.
    last = any_store.call(functools.partial(events.list_events, cid, limit=3)).items[-1]
    rest = any_store.call(
        functools.partial(events.list_events, cid, before=(last.created_at, last.id))
    )
    assert [e.detail for e in rest.items] == seen[3:]
    public = page.items[-1].public()
    assert set(public) == {
        "id",
        "event_type",
        "category",
        "detail",
        "upstream_status",
        "created_at",
    }
    assert public["created_at"] == "2026-11-29T10:00:00Z"


@pytest.mark.parametrize("cursor", ["!!!", "bm90LWEtY3Vyc29y", "x" * 200])
def test_bad_cursor_and_limit_are_400(store: Store, cursor: str) -> None:
    """The store refuses with a domain error; the HTTP seam answers it 400 with the field."""
    with pytest.raises(BadQueryError) as err:
        store.call(functools.partial(events.list_events, "c", cursor=cursor))
    parts = http_parts(err.value)
    assert parts is not None and parts.status == 400 and parts.field == "cursor"
    for limit in (0, 201):
        with pytest.raises(BadQueryError) as err:
            store.call(functools.partial(events.list_events, "c", limit=limit))
        parts = http_parts(err.value)
        assert parts is not None and parts.status == 400 and parts.field == "limit"


def test_timestamps_are_one_text_format(store: Store) -> None:
    _record(store, None, NOW, event_type="auth", category="unknown")
    raw = store.call(
        lambda: run_sql(store.db, "SELECT created_at FROM connection_events").fetchall()
    )
    assert raw == [("2026-11-29T10:00:00Z",)]
