"""The access line's cached heads (`bindify_appliance/accesslog.py`): the direct JSON line is
byte for byte what the formatter renders for the record, a head never outlives the scrubbing
rules it was checked against, and a redacted head is never kept."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bindify_appliance import accesslog, logs, scrubbing
from bindify_appliance.accesslog import AccessHeads, inert_tail, json_line
from bindify_appliance.logformat import JsonFormatter, LineParts, _timestamp
from bindify_appliance.logs import ACCESS_LOGGER_NAME, configure_logging, log_access, reset_logging

CREDENTIALS = "k" * 40 + "Q" * 46  # 86 base64url characters, like a secret-URL segment


def _reference(
    method: str, route: str | None, status: int, duration_ms: float
) -> tuple[str, dict[str, object]]:
    """The message and fields as `log_access` computed them before heads were cached."""
    shown = "<unmatched>" if route is None else scrubbing.scrub(route)
    method = scrubbing.scrub(method)
    message = scrubbing.scrub(f"{method} {shown} {status} {duration_ms:.1f}ms")
    fields: dict[str, object] = {
        "method": method,
        "route": shown,
        "status": status,
        "duration_ms": round(duration_ms, 3) if math.isfinite(duration_ms) else str(duration_ms),
    }
    return message, fields


@settings(max_examples=400, deadline=None)
@given(
    method=st.one_of(st.sampled_from(["GET", "POST", "DELETE", "Bearer", "bnd_x"]), st.text()),
    route=st.one_of(
        st.none(),
        st.sampled_from(["/mcp/{service}/{credentials}", "/mcp/{service}", "/x?key=v"]),
        st.text(),
    ),
    status=st.integers(100, 599),
    duration_ms=st.one_of(st.floats(allow_nan=True), st.floats(0, 1e16)),
    created=st.floats(0, 4_102_444_800),
)
@example(method="POST", route="/mcp/{service}", status=200, duration_ms=1.25, created=0.0)
@example(method="GET", route=None, status=404, duration_ms=1e15, created=1.5)
def test_heads_give_the_reference_message_and_json_line(
    method: str, route: str | None, status: int, duration_ms: float, created: float
) -> None:
    heads = AccessHeads()
    for _ in range(2):  # computed, then (when clean) from the cache
        head = heads.head(method, route, status)
        message, fields = _reference(method, route, status, duration_ms)
        assert (head.method, head.route) == (fields["method"], fields["route"])
        tail = inert_tail(duration_ms) if head.inert else None
        if tail is None:
            continue
        assert head.message_head + tail == message
        expected = JsonFormatter().render(
            LineParts(created, "INFO", ACCESS_LOGGER_NAME, message, fields)
        )
        rounded = fields["duration_ms"]
        assert isinstance(rounded, float)
        assert json_line(_timestamp(created), head, tail, rounded) == expected


@pytest.fixture
def direct_json() -> Iterator[io.StringIO]:
    """Our handler alone on the root logger (pytest's capture removed): the direct path."""
    stream = io.StringIO()
    root = logging.getLogger()
    others = list(root.handlers)
    for handler in others:
        root.removeHandler(handler)
    configure_logging("info", "json", stream)
    try:
        assert logs._only_handler() is not None
        yield stream
    finally:
        reset_logging()
        for handler in others:
            root.addHandler(handler)


def test_direct_line_equals_the_record_path_line(direct_json: io.StringIO) -> None:
    call = {"method": "POST", "route": "/mcp/{service}/{credentials}", "status": 200}
    log_access(**call, duration_ms=1.23456)  # type: ignore[arg-type]
    log_access(**call, duration_ms=1.23456)  # type: ignore[arg-type]  # from the cache
    extra = logging.NullHandler()
    logging.getLogger().addHandler(extra)
    try:
        log_access(**call, duration_ms=1.23456)  # type: ignore[arg-type]
    finally:
        logging.getLogger().removeHandler(extra)
    lines = [json.loads(line) for line in direct_json.getvalue().splitlines()]
    for line in lines:
        assert line.pop("ts")
    assert lines[0] == lines[1] == lines[2]
    assert list(lines[0]) == list(lines[2])
    assert lines[0]["msg"] == "POST /mcp/{service}/{credentials} 200 1.2ms"


@pytest.fixture
def scrub_rules() -> Iterator[None]:
    """Names registered by a test are gone after it (the process keeps them otherwise)."""
    saved = (scrubbing._registered, scrubbing._rules, scrubbing._fragments)
    try:
        yield
    finally:
        scrubbing._registered, scrubbing._rules, scrubbing._fragments = saved


@pytest.mark.usefixtures("scrub_rules")
def test_a_head_is_checked_again_when_the_rules_change(direct_json: io.StringIO) -> None:
    # A name no rule knows yet: the route is clean, and its head is cached.
    route = "/mcp/{service}?zzhotpathstale=abc"
    log_access(method="GET", route=route, status=200, duration_ms=1.0)
    scrubbing.add_secret_names(["zzhotpathstale"])  # a service injects a secret under it
    log_access(method="GET", route=route, status=200, duration_ms=1.0)
    first, second = (json.loads(line) for line in direct_json.getvalue().splitlines())
    assert first["route"] == route
    assert second["route"] == "/mcp/{service}?zzhotpathstale=[REDACTED]"
    assert "abc" not in second["msg"]


@pytest.mark.usefixtures("scrub_rules")
def test_a_numeric_name_makes_every_tail_scrubbed_again() -> None:
    heads = AccessHeads()
    assert heads.head("POST", "/mcp/{service}", 200).inert
    scrubbing.add_secret_names(["1ms"])  # a fragment a duration's text could contain
    assert scrubbing.numeric_fragment() == "1ms"
    assert not heads.head("POST", "/mcp/{service}", 200).inert


def test_a_redacted_head_is_never_kept() -> None:
    heads = AccessHeads()
    head = heads.head("GET", "/mcp/linear/" + CREDENTIALS, 200)
    assert head.route == "/mcp/linear/[REDACTED:86chars]"
    assert heads._heads == {}  # the credential is not held by the cache
    heads.head("GET", "/mcp/{service}", 200)
    assert len(heads._heads) == 1


def test_the_cache_is_bounded() -> None:
    heads = AccessHeads(size=3)
    for index in range(10):
        heads.head(f"M{index}", "/", 200)
    assert len(heads._heads) == 3
    assert heads.head("M9", "/", 200).method == "M9"  # past the bound: computed, still right
    assert accesslog.MAX_HEADS == 256
