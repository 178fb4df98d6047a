"""The proxy's pure parts: SSE framing, header filters, JSON-RPC replies, session bindings."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bindify_appliance.clock import ManualClock
from bindify_appliance.kv import KVStore, MemoryKV, RedisKV
from bindify_appliance.proxy.headers import (
    FORWARDED_REQUEST_HEADERS,
    HOP_BY_HOP,
    injected_names,
    request_headers,
    response_headers,
)
from bindify_appliance.proxy.jsonrpc import (
    RequestIds,
    error_reply,
    parse_request_ids,
    session_not_found_reply,
)
from bindify_appliance.proxy.sessions import LegacySessions, SessionBindings
from bindify_appliance.proxy.sse import (
    BoundaryTracker,
    EventSplitter,
    endpoint_event,
    parse_event,
    resolve_endpoint,
)
from bindify_appliance.proxy.target import ProxyTarget
from bindify_appliance.proxy.upstream import with_query

# ----------------------------------------------------------------------------- SSE framing

_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20
)


@st.composite
def event_streams(
    draw: st.DrawFn, eols: tuple[bytes, ...] = (b"\n", b"\r\n", b"\r")
) -> list[tuple[bytes, tuple[str, str]]]:
    """Whole events, each with its own line ending, and what each should parse to."""
    events = []
    for _ in range(draw(st.integers(1, 5))):
        eol = draw(st.sampled_from(eols))
        lines: list[bytes] = []
        event_type = draw(st.sampled_from(["message", "endpoint", "ping"]))
        if event_type != "message" or draw(st.booleans()):
            lines.append(b"event: " + event_type.encode())
        data = draw(st.lists(_text, min_size=1, max_size=3))
        if draw(st.booleans()):
            lines.append(b": a comment")
        lines += [b"data: " + d.encode() for d in data]
        raw = eol.join(lines) + eol + eol
        events.append((raw, (event_type, "\n".join(data))))
    return events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, start = [], 0
    for p in points:
        out.append(data[start:p])
        start = p
    out.append(data[start:])
    return out


@settings(max_examples=300, deadline=None)
@given(events=event_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_splitter_finds_every_event_however_the_bytes_arrive(
    events: list[tuple[bytes, tuple[str, str]]], cuts: list[int]
) -> None:
    stream = b"".join(raw for raw, _ in events)
    splitter = EventSplitter()
    out: list[bytes] = []
    for chunk in _split(stream, cuts):
        out.extend(splitter.feed(chunk))
    out_bytes = b"".join(out) + splitter.flush()
    assert out_bytes == stream  # nothing lost, nothing changed
    parsed = [parse_event(raw) for raw in out]
    parsed = [p for p in parsed if p != ("message", "")]  # a stray LF of a split CRLF
    assert parsed == [e for _, e in events if e != ("message", "")]


@settings(max_examples=300, deadline=None)
@given(
    events=event_streams(eols=(b"\n", b"\r\n")),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_boundary_tracker_knows_when_an_event_is_complete(
    events: list[tuple[bytes, tuple[str, str]]], cuts: list[int]
) -> None:
    stream = b"".join(raw for raw, _ in events)
    ends = {0}
    position = 0
    for raw, _ in events:
        position += len(raw)
        ends.add(position)
    tracker = BoundaryTracker()
    assert tracker.at_boundary
    position = 0
    for chunk in _split(stream, cuts):
        tracker.feed(chunk)
        position += len(chunk)
        assert tracker.at_boundary == (position in ends), (stream[:position], chunk)


def test_boundary_tracker_waits_for_the_lf_of_a_trailing_cr() -> None:
    tracker = BoundaryTracker()
    tracker.feed(b"data: x\r\n\r")
    assert not tracker.at_boundary
    tracker.feed(b"\n")
    assert tracker.at_boundary


def test_splitter_refuses_an_oversized_event() -> None:
    from bindify_appliance.proxy.sse import SSEError

    splitter = EventSplitter(max_event_bytes=10)
    with pytest.raises(SSEError):
        splitter.feed(b"data: " + b"x" * 20)


def test_endpoint_event_keeps_the_line_endings() -> None:
    assert endpoint_event("http://a/b", b"event: endpoint\r\ndata: x\r\n\r\n") == (
        b"event: endpoint\r\ndata: http://a/b\r\n\r\n"
    )
    assert endpoint_event("http://a/b", b"event: endpoint\ndata: x\n\n") == (
        b"event: endpoint\ndata: http://a/b\n\n"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("/messages/?session_id=1", "http://up:8/messages/?session_id=1"),
        ("messages?sessionId=2", "http://up:8/base/messages?sessionId=2"),
        ("http://up:8/m?x=1", "http://up:8/m?x=1"),
        ("  /m  ", "http://up:8/m"),
        ("http://other:8/m", None),
        ("https://up:8/m", None),
        ("//evil.example/m", None),
        ("javascript:alert(1)", None),
        ("", None),
    ],
)
def test_resolve_endpoint(data: str, expected: str | None) -> None:
    assert resolve_endpoint(data, "http://up:8/base/sse") == expected


# ----------------------------------------------------------------------------- headers


def test_request_headers_drop_hop_by_hop_and_let_injection_win() -> None:
    client = [
        ("Connection", "close, X-Drop"),
        ("X-Drop", "1"),
        ("traceparent", "00-abc-def-01"),
        ("connection", "Traceparent"),  # an allow-listed header declared hop-by-hop goes too
        ("authorization", "Bearer client"),
        ("Accept", "application/json"),
        ("Accept", "text/event-stream"),
        ("mcp-param-Region", "eu"),
        ("Host", "proxy.example"),
        ("Content-Length", "5"),
        ("Transfer-Encoding", "chunked"),
    ]
    out = request_headers(client, {"Authorization": "Bearer upstream"})
    assert out == {
        "Accept": "application/json, text/event-stream",
        "mcp-param-Region": "eu",
        "Accept-Encoding": "identity",
        "Authorization": "Bearer upstream",
    }
    assert not HOP_BY_HOP & set(FORWARDED_REQUEST_HEADERS)
    # A client header with the injected name (any case) never survives.
    out = request_headers([("X-API-KEY", "client")], {"x-api-key": "upstream"})
    assert out == {"Accept-Encoding": "identity", "x-api-key": "upstream"}


def _reference_request_headers(
    client_headers: list[tuple[str, str]], inject: dict[str, str]
) -> dict[str, str]:
    """`request_headers` as it was before the injected names were kept per target."""
    out: dict[str, str] = {}
    lowered: dict[str, str] = {}
    declared: list[str] = []
    for name, value in client_headers:
        lower = name.lower()
        canonical = FORWARDED_REQUEST_HEADERS.get(lower)
        if canonical is None:
            if lower == "connection":
                declared.extend(t.strip().lower() for t in value.split(","))
                continue
            if not lower.startswith("mcp-param-"):
                continue
            canonical = name
        previous = out.get(canonical)
        out[canonical] = value if previous is None else f"{previous}, {value}"
        lowered[canonical] = lower
    if declared:
        dropped = set(declared)
        for canonical in [c for c, lower in lowered.items() if lower in dropped]:
            del out[canonical]
    out["Accept-Encoding"] = "identity"
    if inject:
        lowered_inject = {k.lower() for k in inject}
        for key in [k for k in out if k.lower() in lowered_inject]:
            del out[key]
        out.update(inject)
    return out


_HEADER_NAMES = st.sampled_from(
    [
        *FORWARDED_REQUEST_HEADERS.values(),
        *("accept", "CONNECTION", "Connection", "Host", "Mcp-Param-Region", "mcp-param-region"),
        *("Accept-Encoding", "Authorization", "X-Key"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    client=st.lists(
        st.tuples(
            _HEADER_NAMES,
            st.one_of(st.sampled_from(["a", "x-key, accept", "Mcp-Param-Region"]), st.text()),
        ),
        max_size=8,
    ),
    inject=st.dictionaries(_HEADER_NAMES, st.text(max_size=5), max_size=3),
)
def test_request_headers_match_the_reference(
    client: list[tuple[str, str]], inject: dict[str, str]
) -> None:
    expected = _reference_request_headers(client, inject)
    for names in (None, injected_names(inject)):
        out = request_headers(client, inject, names)
        assert out == expected and list(out) == list(expected)


def test_a_targets_injected_names_follow_its_headers() -> None:
    target = ProxyTarget(
        connection_id="c",
        user_id="u",
        service_id="s",
        upstream_url="https://up.example/mcp",
        transport="streamable-http",
        inject_headers={"X-Api-Key": "k"},
    )
    assert target.inject_names == {"x-api-key"}
    moved = dataclasses.replace(target, inject_headers={"Authorization": "Bearer t"})
    assert moved.inject_names == {"authorization"}  # recomputed, never the old names
    out = request_headers([("x-api-key", "client"), ("Accept", "a")], {}, moved.inject_names)
    assert "x-api-key" not in {k.lower() for k in out}  # not allow-listed, whatever the names


def test_response_headers_allow_list() -> None:
    upstream = [
        ("content-type", "text/event-stream"),
        ("mcp-session-id", "s"),
        ("Set-Cookie", "a=b"),
        ("WWW-Authenticate", "Bearer"),
        ("Content-Length", "10"),
        ("Allow", "POST"),
        ("Retry-After", "3"),
        ("Cache-Control", "no-cache"),
        ("Connection", "keep-alive"),
    ]
    assert response_headers(upstream) == [
        ("Content-Type", "text/event-stream"),
        ("Mcp-Session-Id", "s"),
        ("Allow", "POST"),
        ("Retry-After", "3"),
        ("Cache-Control", "no-cache"),
    ]


def test_with_query() -> None:
    assert with_query("http://u/mcp", {}) == "http://u/mcp"
    assert with_query("http://u/mcp", {"key": "a b&c"}) == "http://u/mcp?key=a+b%26c"
    assert with_query("http://u/m?x=1", {"k": "v"}) == "http://u/m?x=1&k=v"
    assert with_query("http://u/m?", {"k": "v"}) == "http://u/m?k=v"


# ----------------------------------------------------------------------------- JSON-RPC


@pytest.mark.parametrize(
    ("body", "ids", "batch"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"x"}', (1,), False),
        (b'{"jsonrpc":"2.0","id":"a","method":"x"}', ("a",), False),
        (b'{"jsonrpc":"2.0","id":null,"method":"x"}', (), False),
        (b'{"jsonrpc":"2.0","id":true,"method":"x"}', (), False),
        (b'{"jsonrpc":"2.0","method":"notifications/x"}', (), False),
        (b'{"jsonrpc":"2.0","id":3,"result":{}}', (), False),  # a response, not a request
        (b'[{"id":1,"method":"a"},{"method":"n"},{"id":"z","method":"b"},7]', (1, "z"), True),
        (b"[]", (), True),
        (b"", (), False),
        (b"not json", (), False),
        (b"\xff\xfe", (), False),
        (b'"string"', (), False),
    ],
)
def test_parse_request_ids(body: bytes, ids: tuple[object, ...], batch: bool) -> None:
    parsed = parse_request_ids(body)
    assert parsed.ids == ids
    if ids:
        assert parsed.batch == batch


def test_ip_limited_reply_is_bare() -> None:
    reply = error_reply("ip_limited", "", RequestIds((1,)), retry_after=30)
    assert (reply.status, reply.body) == (429, None)
    assert ("Retry-After", "30") in reply.headers


def test_session_not_found_reply() -> None:
    reply = session_not_found_reply(RequestIds((1, 2), batch=True))
    assert reply.status == 404
    assert [e["id"] for e in json.loads(reply.body or b"")] == [1, 2]


# ----------------------------------------------------------------------------- sessions


@pytest.fixture(params=["memory", "redis"])
async def kv_and_clock(
    request: pytest.FixtureRequest, redis_url: str
) -> AsyncIterator[tuple[KVStore, ManualClock]]:
    clock = ManualClock()
    store: KVStore
    if request.param == "memory":
        store = MemoryKV(clock=clock)
    else:
        store = RedisKV(redis_url, namespace=f"bindify-test-{secrets.token_hex(4)}:")
    yield store, clock
    await store.close()


async def test_session_bindings(kv_and_clock: tuple[KVStore, ManualClock]) -> None:
    kv, clock = kv_and_clock
    bindings = SessionBindings(kv, clock, session_ttl=60, renew_every=10)
    await bindings.bind("conn-a", "S1")
    assert await bindings.owns("conn-a", "S1")
    assert not await bindings.owns("conn-b", "S1")
    assert not await bindings.owns("conn-a", "S2")
    await bindings.bind("conn-b", "S1")  # an upstream may hand one id to several connections
    assert await bindings.owns("conn-b", "S1")
    await bindings.forget("conn-a", "S1")
    assert not await bindings.owns("conn-a", "S1")
    assert await bindings.owns("conn-b", "S1")


async def test_session_ids_are_never_stored_in_clear() -> None:
    kv = MemoryKV()
    bindings = SessionBindings(kv, ManualClock())
    await bindings.bind("conn-a", "visible-session-id")
    assert not any("visible-session-id" in key for key in kv._data)


async def test_session_binding_expires_unless_used() -> None:
    clock = ManualClock()
    kv = MemoryKV(clock=clock)
    bindings = SessionBindings(kv, clock, session_ttl=100, renew_every=10)
    await bindings.bind("c", "S")
    clock.advance(90)
    assert await bindings.owns("c", "S")  # renews: 100 s more from now
    clock.advance(90)
    assert await bindings.owns("c", "S")
    clock.advance(101)
    assert not await bindings.owns("c", "S")


async def test_legacy_sessions(kv_and_clock: tuple[KVStore, ManualClock]) -> None:
    kv, _ = kv_and_clock
    legacy = LegacySessions(kv, ttl=60)
    session = await legacy.open("conn-a", "http://up/messages?session_id=1")
    assert len(session.session_id) >= 32
    assert "session_id" not in repr(session)
    assert await legacy.lookup("conn-a", session.session_id) == "http://up/messages?session_id=1"
    assert await legacy.lookup("conn-b", session.session_id) is None
    assert await legacy.lookup("conn-a", "x" * 500) is None
    assert await legacy.renew(session)
    await legacy.close(session)
    assert await legacy.lookup("conn-a", session.session_id) is None
