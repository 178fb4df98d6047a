"""Logging: every scrub rule with its exact output, the record filter, JSON and text lines,
idempotent configuration, the access log, and two real Tornado servers on 127.0.0.1 — one whose
handler raises an exception full of secrets (Tornado's own "Uncaught exception" record must come
out scrubbed), one proxying a stream to a client that hangs up (Tornado's closed-stream record
must not appear at all).

Every test restores the logging configuration it changed (`reset_logging`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest
import tornado.web
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.testing import bind_unused_port

from bindify_appliance import logs
from bindify_appliance.errors import ConfigError
from bindify_appliance.logs import (
    ExpectedDisconnectFilter,
    JsonFormatter,
    SecretScrubFilter,
    TextFormatter,
    configure_logging,
    log_access,
    reset_logging,
    scrub,
)


def _b64url(seed: str, nbytes: int) -> str:
    digest = hashlib.shake_256(seed.encode()).digest(nbytes)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


CREDENTIALS = _b64url("credentials", 64)  # 86 characters, like a secret-URL segment
API_KEY_SECRET = _b64url("api key", 64)
API_KEY = "bnd_live_" + API_KEY_SECRET
PAT_SECRET = _b64url("personal token", 32)  # 43 characters
PAT = "bndpat_" + PAT_SECRET
COOKIE_VALUE = base64.b64encode(hashlib.sha256(b"session").digest()).decode()
COOKIE_SIG = hashlib.sha256(b"sig").hexdigest()
SESSION_COOKIE = f"2|1:0|10:1800000000|15:bindify_session|44:{COOKIE_VALUE}|{COOKIE_SIG}"
SECRET_PARTS = (CREDENTIALS, API_KEY_SECRET, PAT_SECRET, COOKIE_VALUE, COOKIE_SIG)

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    before = (root.level, logging.getLogger("tornado.access").level)
    yield
    reset_logging()
    assert not any(isinstance(h, logs._Handler) for h in root.handlers)
    assert (root.level, logging.getLogger("tornado.access").level) == before


def _configured(fmt: str = "json", level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, fmt, stream)
    return stream


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _assert_no_secret(text: str) -> None:
    assert CREDENTIALS[:43] not in text and CREDENTIALS[43:] not in text
    for secret in SECRET_PARTS:
        for start in range(len(secret) - 11):
            assert secret[start : start + 12] not in text, secret


# --- scrub(): each rule, exact output ----------------------------------------------------------

RUN43 = "A" * 43
RUN86 = "b" * 86


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # bnd_ keys, word-bounded start
        (f"key {API_KEY} ok", "key bnd_[REDACTED] ok"),
        ("bnd_x", "bnd_[REDACTED]"),
        ("xbnd_abc", "xbnd_abc"),
        ("(bnd_test_123)", "(bnd_[REDACTED])"),
        # personal tokens: a rule of their own, ahead of bnd_
        (PAT, "bndpat_[REDACTED]"),
        ("bndpat_short", "bndpat_[REDACTED]"),
        (f"Bearer {PAT}", "Bearer bndpat_[REDACTED]"),
        # Bearer + whitespace + at least 20 of [A-Za-z0-9._-], any case
        ("Bearer " + "a" * 20, "Bearer [REDACTED]"),
        ("Bearer " + "a" * 19, "Bearer " + "a" * 19),
        ("BEARER\t\teyJ.hdr-x_y.sig9876543210", "Bearer [REDACTED]"),
        ("bearer abcdefghij.klmnopqrst+tail", "Bearer [REDACTED]+tail"),
        # long base64url runs, word-bounded
        (f"x {RUN43} y", "x [REDACTED:43chars] y"),
        (f"x {RUN43[:42]} y", f"x {RUN43[:42]} y"),
        (f"/mcp/linear/{CREDENTIALS}/sse", "/mcp/linear/[REDACTED:86chars]/sse"),
        (f"{RUN86}.", "[REDACTED:86chars]."),
        # a trailing '-' is in the class but not a word character: the match backs off to \b
        (f"/{RUN43}-/", "/[REDACTED:43chars]-/"),
        (f"-{RUN43}", "-[REDACTED:43chars]"),
        # ASCII semantics: a non-ASCII letter is not a word character, so it is a boundary
        (f"é{RUN43}", "é[REDACTED:43chars]"),
        (f"{RUN43}ü", "[REDACTED:43chars]ü"),
        (f"Ωmega{RUN43}", "Ω[REDACTED:47chars]"),
        ("Bearer\u00a0" + "a" * 25, "Bearer\u00a0" + "a" * 25),  # NBSP is not ASCII \s
        # URL userinfo: the password goes, the user stays
        ("postgresql://bindify:s3cret@db:5432/x", "postgresql://bindify:[REDACTED]@db:5432/x"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:[REDACTED]@127.0.0.1:6379/0"),
        ("https://u:p@ss@host/x?y=1", "https://u:[REDACTED]@host/x?y=1"),
        ("postgresql://postgres@127.0.0.1/db", "postgresql://postgres@127.0.0.1/db"),
        # credential headers: the whole value
        ("Cookie: bindify_session=abc; _xsrf=def", "Cookie: [REDACTED]"),
        ("set-cookie: theme=dark; Path=/\nnext line", "set-cookie: [REDACTED]\nnext line"),
        ("{'Cookie': 'bindify_session=abc', 'Host': 'h'}", "{'Cookie': '[REDACTED]', 'Host': 'h'}"),
        ('{"cookie": "a=\\"b\\"", "n": 1}', '{"cookie": "[REDACTED]", "n": 1}'),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: [REDACTED]"),
        ("X-Api-Key: k-123", "X-Api-Key: [REDACTED]"),
        ("Cookie header missing", "Cookie header missing"),
        # our cookies wherever they appear
        (
            f"sent bindify_session={SESSION_COOKIE}; theme=x",
            "sent bindify_session=[REDACTED]; theme=x",
        ),
        ("__Host-bindify_session=abc", "__Host-bindify_session=[REDACTED]"),
        ("_xsrf=2|abc|def&x=1", "_xsrf=[REDACTED]&x=1"),
        ("my_xsrf=kept", "my_xsrf=kept"),
        # password=-like pairs, bare and quoted
        ("password=hunter2 user=bob", "password=[REDACTED] user=bob"),
        ("db_password='hunter 2' x", "db_password=[REDACTED] x"),
        ("CLIENT_SECRET=abc,next", "CLIENT_SECRET=[REDACTED],next"),
        ('{"password": "hunter2", "user": "bob"}', '{"password": "[REDACTED]", "user": "bob"}'),
        (
            "{'access_token': 'ya29.x', 'expires_in': 3600}",
            "{'access_token': '[REDACTED]', 'expires_in': 3600}",
        ),
        ("max_tokens=500 password_hash=x", "max_tokens=500 password_hash=x"),
        # secret query parameters, raw and percent-encoded
        (
            "GET /oauth/callback?code=abc123&state=xyz&x=1 HTTP/1.1",
            "GET /oauth/callback?code=[REDACTED]&state=[REDACTED]&x=1 HTTP/1.1",
        ),
        # `token=` is also a secret-named pair, whose value may contain '#' (passwords do)
        ("/setup?token=t0k#frag", "/setup?token=[REDACTED]"),
        ("/connections/9?claim=c1#top", "/connections/9?claim=[REDACTED]#top"),
        ("https://up/mcp?key=k1&limit=5", "https://up/mcp?key=[REDACTED]&limit=5"),
        ("?refresh_token=r&client_secret=s", "?refresh_token=[REDACTED]&client_secret=[REDACTED]"),
        ("?keyboard=1&codes=2", "?keyboard=1&codes=2"),
        (
            "redirect=https%3A%2F%2Fx%2Fcb%3Fcode%3Dabc%26state%3Ddef",
            "redirect=https%3A%2F%2Fx%2Fcb%3Fcode%3D[REDACTED]%26state%3D[REDACTED]",
        ),
        # harmless text is untouched
        ("GET /healthz 200 1.2ms", "GET /healthz 200 1.2ms"),
        ("exit code=1, status code=500", "exit code=1, status code=500"),
        ("Personal tokens are refused on MCP routes", "Personal tokens are refused on MCP routes"),
        ("fingerprint 0123456789abcdef", "fingerprint 0123456789abcdef"),
    ],
)
def test_scrub_rule(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_rules_apply_in_order() -> None:
    # bnd_ first: the run after it is gone before the 43-char rule could report its length.
    assert scrub(f"bnd_{RUN86}") == "bnd_[REDACTED]"
    # Bearer before the long-run rule: one marker, not a length.
    assert scrub(f"Authorization Bearer {RUN86}") == "Authorization Bearer [REDACTED]"
    # the long-run rule before ours: a 43-char query value reports its length, then the
    # query rule replaces the marker itself.
    assert scrub(f"?state={RUN43}") == "?state=[REDACTED]"


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALNUM = _B64URL[:62]


@given(
    prefix=st.text(max_size=20),
    first=st.sampled_from(_ALNUM),
    body=st.text(alphabet=_B64URL, min_size=41, max_size=120),
    last=st.sampled_from(_ALNUM),
    suffix=st.text(max_size=20),
)
def test_long_secret_never_survives(
    prefix: str, first: str, body: str, last: str, suffix: str
) -> None:
    secret = first + body + last
    assert secret not in scrub(prefix + secret + suffix)


@given(st.text(max_size=200))
def test_scrub_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert scrub(once) == once


# --- the record filter ----------------------------------------------------------------------


def test_message_arguments_are_formatted_then_scrubbed() -> None:
    out = _configured()
    logging.getLogger("bindify_appliance.t").info("key %s at %s", API_KEY, "/x?token=abc")
    (line,) = _records(out)
    assert line["msg"] == "key bnd_[REDACTED] at /x?token=[REDACTED]"


def test_record_is_rewritten_in_place_for_later_handlers() -> None:
    out = _configured()
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    root = logging.getLogger()
    root.addHandler(keep)  # after ours: sees the record as our filter left it
    try:
        try:
            raise ValueError(f"bad {API_KEY}")
        except ValueError:
            logging.getLogger("bindify_appliance.t").warning("failed %s", PAT, exc_info=True)
    finally:
        root.removeHandler(keep)
    (record,) = seen
    assert record.msg == "failed bndpat_[REDACTED]" and record.args == ()
    assert record.exc_info is None
    assert record.exc_text is not None and "ValueError: bad bnd_[REDACTED]" in record.exc_text
    (line,) = _records(out)
    assert line["exc"] == record.exc_text
    _assert_no_secret(out.getvalue())


def test_text_cached_by_an_earlier_formatter_is_scrubbed_too() -> None:
    # A handler ahead of ours (pytest's, a library's) formats first and caches exc_text and
    # message on the record; our filter must scrub those rather than trust exc_info.
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "msg %s", (API_KEY,), None)
    try:
        raise RuntimeError(CREDENTIALS)
    except RuntimeError:
        record.exc_info = sys.exc_info()
    logging.Formatter().format(record)
    assert record.exc_text and CREDENTIALS in record.exc_text
    SecretScrubFilter().filter(record)
    assert record.message == "msg bnd_[REDACTED]"
    assert record.exc_text is not None and "RuntimeError: [REDACTED:86chars]" in record.exc_text
    assert CREDENTIALS not in record.exc_text


def test_stack_info_is_scrubbed() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.stack_info = (
        f'Stack (most recent call last):\n  File "a.py", line 1\n    get("{CREDENTIALS}")'
    )
    out = _configured()
    logging.getLogger().handle(record)
    (line,) = _records(out)
    assert line["stack"].endswith('get("[REDACTED:86chars]")')


def test_extra_fields_are_scrubbed_recursively_to_depth_five() -> None:
    out = _configured()
    nested = {"a": {"b": {"c": {"d": {"e": "deep"}}}}}
    logging.getLogger("bindify_appliance.t").info(
        "x",
        extra={
            "detail": f"url /mcp/linear/{CREDENTIALS}",
            "items": [API_KEY, {"auth": f"Bearer {RUN43}"}, 7, None, True],
            "nested": nested,
            "pair": ("ok", PAT),
            "blob": b"\x00payload",
            "ratio": float("nan"),
            "obj": ValueError(f"boom {API_KEY}"),
        },
    )
    (line,) = _records(out)
    assert line["detail"] == "url /mcp/linear/[REDACTED:86chars]"
    assert line["items"] == ["bnd_[REDACTED]", {"auth": "Bearer [REDACTED]"}, 7, None, True]
    # the field is depth 1; "e"'s value would be depth 6
    assert line["nested"] == {"a": {"b": {"c": {"d": {"e": "[TRUNCATED]"}}}}}
    assert line["pair"] == ["ok", "bndpat_[REDACTED]"]
    assert line["blob"] == "[8 bytes]"
    assert line["ratio"] == "nan"
    assert line["obj"] == "boom bnd_[REDACTED]"


def test_exempt_fields_pass_unchanged_and_others_do_not() -> None:
    out = _configured()
    logging.getLogger("bindify_appliance.t").info(
        "x",
        extra={
            "event": RUN43,
            "fingerprint": "0123456789abcdef",
            "status": 502,
            "detail": RUN43,
            "route": f"/mcp/linear/{CREDENTIALS}",  # a raw path passed by mistake
            "service": {"nested": RUN43},  # containers under an exempt name are scrubbed
        },
    )
    (line,) = _records(out)
    assert line["event"] == RUN43
    assert line["fingerprint"] == "0123456789abcdef"
    assert line["status"] == 502
    assert line["detail"] == "[REDACTED:43chars]"
    assert line["route"] == "/mcp/linear/[REDACTED:86chars]"
    assert line["service"] == {"nested": "[REDACTED:43chars]"}
    for name in ("path", "url", "headers", "message", "error", "detail", "route"):
        assert name not in logs.EXEMPT_FIELDS


def test_connection_id_is_shortened_at_any_depth() -> None:
    out = _configured()
    logging.getLogger("bindify_appliance.t").info(
        "x",
        extra={
            "connection_id": "0b9e6c1a-5d2f-4a0e-9a61-2f7d3c4b5a69",
            "batch": [{"connection_id": "123456789"}, {"connection_id": "12345678"}],
        },
    )
    (line,) = _records(out)
    assert line["connection_id"] == "0b9e6c1a..."
    assert line["batch"] == [{"connection_id": "12345678..."}, {"connection_id": "12345678"}]


def test_filter_never_raises_and_fails_closed() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError(API_KEY)

    class Exploding(Mapping[str, str]):
        def __getitem__(self, key: str) -> str:
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError(API_KEY)

        def __len__(self) -> int:
            return 1

    out = _configured()
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]

    def record(level: int, msg: str, *args: object, **extra: object) -> logging.LogRecord:
        made = logging.LogRecord("bindify_appliance.t", level, __file__, 1, msg, args, None)
        made.__dict__.update(extra)
        return made

    # Handed to our handler alone: pytest's own handlers would raise on these records.
    handler.handle(record(logging.INFO, "one %s two %s", API_KEY))  # template only
    handler.handle(record(logging.INFO, "odd", thing=Unprintable()))
    handler.handle(record(logging.ERROR, "has %s", API_KEY, weird=Exploding()))
    first, second, third = _records(out)
    assert first["msg"] == "one %s two %s [log arguments did not match the message]"
    assert second["thing"] == "[unrepresentable Unprintable]"
    assert third == {
        "ts": third["ts"],
        "level": "error",
        "logger": "bindify_appliance.t",
        "msg": "[log record withheld: scrubbing failed with RuntimeError]",
    }
    _assert_no_secret(out.getvalue())
    assert "bnd_live" not in out.getvalue()


# --- formats --------------------------------------------------------------------------------


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("bindify_appliance.t", logging.INFO, __file__, 1, "hello", (), None)
    record.created = 1_795_946_400.123  # 2026-11-29T10:00:00.123Z
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_line_fields() -> None:
    line = JsonFormatter().format(_record(service="linear", count=3))
    assert json.loads(line) == {
        "ts": "2026-11-29T10:00:00.123Z",
        "level": "info",
        "logger": "bindify_appliance.t",
        "msg": "hello",
        "service": "linear",
        "count": 3,
    }


def test_json_extra_named_like_our_keys_is_renamed() -> None:
    line = json.loads(JsonFormatter().format(_record(level="loud", ts="x")))
    assert line["level"] == "info" and line["level_"] == "loud" and line["ts_"] == "x"


def test_json_output_is_one_valid_object_per_line() -> None:
    out = _configured()
    log = logging.getLogger("bindify_appliance.t")
    log.info("line one\nline two\u2028still two", extra={"note": "é"})
    try:
        raise KeyError("k")
    except KeyError:
        log.warning("with traceback", exc_info=True)
    text = out.getvalue()
    assert text.isascii()  # escaped: no splitter breaks a record in two
    first, second = _records(out)
    assert TS.match(first["ts"]) and first["level"] == "info" and first["note"] == "é"
    assert first["msg"] == "line one\nline two\u2028still two"
    assert second["level"] == "warning" and second["exc"].startswith("Traceback")
    assert second["exc"].endswith("KeyError: 'k'")


def test_text_output_is_readable() -> None:
    out = _configured("text")
    log = logging.getLogger("bindify_appliance.t")
    log.info("ready", extra={"service": "linear", "label": "two words", "count": 3})
    try:
        raise ValueError("nope")
    except ValueError:
        log.warning("failed", exc_info=True)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    bindify_appliance\.t: ready"
        r"  service=linear label=\"two words\" count=3",
        lines[0],
    )
    assert re.fullmatch(r"\S+ WARNING bindify_appliance\.t: failed", lines[1])
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: nope"


def test_text_formatter_exact_line() -> None:
    line = TextFormatter().format(_record(service="linear"))
    assert line == "2026-11-29T10:00:00.123Z INFO    bindify_appliance.t: hello  service=linear"


# --- configuration --------------------------------------------------------------------------


def test_levels() -> None:
    out = _configured(level="warning")
    log = logging.getLogger("bindify_appliance.t")
    log.info("hidden")
    log.warning("shown")
    assert [r["msg"] for r in _records(out)] == ["shown"]
    out = _configured(level="DEBUG")
    log.debug("visible")
    logging.getLogger("peewee").debug("('SELECT 1 WHERE x = ?', ['payload'])")
    assert [r["msg"] for r in _records(out)] == ["visible"]


def test_unknown_level_or_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="BINDIFY_LOG_LEVEL"):
        configure_logging("loud")
    with pytest.raises(ConfigError, match="BINDIFY_LOG_FORMAT"):
        configure_logging("info", "xml")


def test_configure_is_idempotent() -> None:
    first = _configured()
    second = _configured("text")
    third = _configured()
    ours = [h for h in logging.getLogger().handlers if isinstance(h, logs._Handler)]
    assert len(ours) == 1
    app_filters = logging.getLogger("tornado.application").filters
    assert sum(isinstance(f, ExpectedDisconnectFilter) for f in app_filters) == 1
    logging.getLogger("bindify_appliance.t").info("once")
    assert first.getvalue() == "" and second.getvalue() == ""
    assert [r["msg"] for r in _records(third)] == ["once"]


def test_reset_removes_everything_configure_added() -> None:
    _configured()
    reset_logging()
    assert not any(isinstance(h, logs._Handler) for h in logging.getLogger().handlers)
    app_filters = logging.getLogger("tornado.application").filters
    assert not any(isinstance(f, ExpectedDisconnectFilter) for f in app_filters)
    reset_logging()  # a second reset is harmless


@pytest.mark.allow_error_logs
def test_tornado_loggers_share_the_handler_and_access_is_silent() -> None:
    out = _configured()
    logging.getLogger("tornado.access").error("500 GET /mcp/linear/%s (127.0.0.1)", CREDENTIALS)
    logging.getLogger("tornado.access").info("200 GET /healthz")
    logging.getLogger("tornado.general").warning("Malformed HTTP message from %s", "/x?code=c0de")
    logging.getLogger("tornado.application").error("Exception in callback %r", API_KEY)
    assert [(r["logger"], r["msg"]) for r in _records(out)] == [
        ("tornado.general", "Malformed HTTP message from /x?code=[REDACTED]"),
        ("tornado.application", "Exception in callback 'bnd_[REDACTED]'"),
    ]


# --- access log -----------------------------------------------------------------------------


def test_log_access_fields() -> None:
    out = _configured()
    log_access(
        method="POST",
        route="/mcp/{service}/{credentials}",
        status=200,
        duration_ms=12.34567,
        service="linear",
        connection_id="0b9e6c1a-5d2f-4a0e-9a61-2f7d3c4b5a69",
        rpc_method="tools/call",
        tool="search",
        bytes_in=120,
        bytes_out=4096,
    )
    (line,) = _records(out)
    del line["ts"]
    assert line == {
        "level": "info",
        "logger": "bindify_appliance.access",
        "msg": "POST /mcp/{service}/{credentials} 200 12.3ms",
        "method": "POST",
        "route": "/mcp/{service}/{credentials}",
        "status": 200,
        "duration_ms": 12.346,
        "service": "linear",
        "connection_id": "0b9e6c1a...",
        "rpc_method": "tools/call",
        "tool": "search",
        "bytes_in": 120,
        "bytes_out": 4096,
    }


def test_log_access_unmatched_route() -> None:
    out = _configured("text")
    log_access(method="GET", route=None, status=404, duration_ms=0.5)
    assert "GET <unmatched> 404 0.5ms" in out.getvalue()
    assert "route=<unmatched>" in out.getvalue()
    out = _configured()
    log_access(method="GET", route=None, status=404, duration_ms=0.5)
    (line,) = _records(out)
    assert line["route"] == "<unmatched>" and line["msg"] == "GET <unmatched> 404 0.5ms"


@pytest.mark.parametrize("field", ["path", "url", "query", "body", "payload", "headers"])
def test_log_access_refuses_paths_and_bodies(field: str) -> None:
    out = _configured()
    with pytest.raises(TypeError, match=field):
        log_access(method="GET", route="/", status=200, duration_ms=1, **{field: "/x"})
    assert out.getvalue() == ""


def test_log_access_refuses_record_attribute_names() -> None:
    with pytest.raises(TypeError, match="name"):
        log_access(method="GET", route="/", status=200, duration_ms=1, name="x")


# --- real Tornado servers -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _serving(app: tornado.web.Application) -> AsyncIterator[int]:
    sock, port = bind_unused_port()
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        yield port
    finally:
        server.stop()
        await server.close_all_connections()


class _Exploding(tornado.web.RequestHandler):
    def get(self, credentials: str) -> None:
        try:
            raise ConnectionError(f"upstream refused {self.request.full_url()}")
        except ConnectionError as cause:
            error = RuntimeError(
                f"proxying /mcp/linear/{credentials} with {API_KEY} and Bearer {PAT} failed"
            )
            error.add_note(f"browser sent bindify_session={SESSION_COOKIE}; theme=dark")
            raise error from cause


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_uncaught_exception_in_a_real_handler_leaks_nothing(fmt: str) -> None:
    out = _configured(fmt)
    app = tornado.web.Application([(r"/mcp/linear/([A-Za-z0-9_-]+)", _Exploding)])
    client = AsyncHTTPClient(force_instance=True)
    try:
        async with _serving(app) as port:
            response = await client.fetch(
                f"http://127.0.0.1:{port}/mcp/linear/{CREDENTIALS}",
                headers={
                    "Authorization": f"Bearer {PAT}",
                    "Cookie": f"bindify_session={SESSION_COOKIE}",
                },
                raise_error=False,
            )
    finally:
        client.close()
    assert response.code == 500
    text = out.getvalue()
    _assert_no_secret(text)
    # not vacuous: Tornado's record is there, with its request line and the whole chain
    summary = "Uncaught exception GET /mcp/linear/[REDACTED:86chars] (127.0.0.1)"
    assert summary in text
    assert "uri='/mcp/linear/[REDACTED:86chars]'" in text
    for fragment in (
        "ConnectionError: upstream refused http://127.0.0.1:",
        "The above exception was the direct cause of the following exception:",
        "RuntimeError: proxying /mcp/linear/[REDACTED:86chars] with bnd_[REDACTED] and "
        "Bearer bndpat_[REDACTED] failed",
        "browser sent bindify_session=[REDACTED]; theme=dark",
    ):
        assert fragment in text if fmt == "text" else fragment in json.dumps(_records(out))
    if fmt == "json":
        (record,) = _records(out)  # tornado.access wrote nothing
        assert record["logger"] == "tornado.application" and record["level"] == "error"
        assert record["msg"].startswith(summary)


async def test_client_disconnect_mid_stream_is_not_an_error() -> None:
    """A client hangs up on a proxied stream: the proxy's flush fails inside the upstream
    fetch's streaming_callback, Tornado logs "Uncaught exception" on tornado.application, and
    the filter drops it. No `allow_error_logs` here: any ERROR record fails the test."""
    out = _configured()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    class Upstream(tornado.web.RequestHandler):
        async def get(self) -> None:
            with contextlib.suppress(StreamClosedError):
                for _ in range(100_000):
                    self.write(b"data: " + b"x" * 16_384 + b"\n\n")
                    await self.flush()

    upstream_app = tornado.web.Application([(r"/stream", Upstream)])
    async with _serving(upstream_app) as upstream_port:

        class Proxy(tornado.web.RequestHandler):
            async def get(self) -> None:
                client = AsyncHTTPClient(force_instance=True)

                async def relay(chunk: bytes) -> None:
                    self.write(chunk)
                    await self.flush()

                try:
                    await client.fetch(
                        f"http://127.0.0.1:{upstream_port}/stream",
                        streaming_callback=relay,
                        request_timeout=30,
                    )
                    outcome.set_result("completed")
                except Exception as exc:
                    outcome.set_result(type(exc).__name__)
                finally:
                    client.close()

        proxy_app = tornado.web.Application([(r"/proxy", Proxy)])
        async with _serving(proxy_app) as proxy_port:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
            writer.write(b"GET /proxy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(100)
            writer.close()
            await writer.wait_closed()
            result = await asyncio.wait_for(outcome, timeout=10)

    assert result != "completed"
    (installed,) = [
        f
        for f in logging.getLogger("tornado.application").filters
        if isinstance(f, ExpectedDisconnectFilter)
    ]
    assert installed.dropped >= 1
    assert "Uncaught exception" not in out.getvalue()


@pytest.mark.allow_error_logs
def test_disconnect_filter_drops_only_closed_streams_on_tornado_application() -> None:
    out = _configured()
    app_log = logging.getLogger("tornado.application")
    ours = logging.getLogger("bindify_appliance.proxy")
    for logger, error in (
        (app_log, StreamClosedError()),
        (app_log, ValueError("real bug")),
        (ours, StreamClosedError()),
    ):
        try:
            raise error
        except Exception:
            logger.error("Uncaught exception", exc_info=True)
    kept = [(r["logger"], r["exc"].splitlines()[-1]) for r in _records(out)]
    assert kept == [
        ("tornado.application", "ValueError: real bug"),
        ("bindify_appliance.proxy", "tornado.iostream.StreamClosedError: Stream is closed"),
    ]


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    logging.getLogger("bindify_appliance.t").info("to stderr %s", API_KEY)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err.splitlines()[-1])["msg"] == "to stderr bnd_[REDACTED]"


_CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/?&=;%@'\" \n")
_WORDS = ["bnd_", "bndpat_", "Bearer ", "password", "token=", "Cookie: ", "bindify_session="]
_WORDS += ["%3D", "://", "secret", "api-key", "code=", "A" * 20, "x" * 43, '"passphrase": ']
_PIECES = st.sampled_from(_CHARS + _WORDS)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join))
@example('{"passphrase": "hunter2"}')  # a name no fragment of the first fast path covered
def test_fast_path_never_changes_the_result(text: str) -> None:
    from bindify_appliance.logs import _apply_rules

    assert scrub(text) == _apply_rules(text)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
@example(1_795_946_400.123)  # not exact in binary: must still read .123
@example(1_795_946_400.9999996)  # rounds up into the next second
def test_timestamps_match_datetime_to_the_millisecond(created: float) -> None:
    from datetime import UTC, datetime

    from bindify_appliance.logs import _timestamp

    moment = datetime.fromtimestamp(created, UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"
    assert _timestamp(created) == expected


def test_log_access_scrubs_whatever_a_caller_passes() -> None:
    # Access records skip the filter's second pass, so log_access itself must scrub every part.
    out = _configured()
    log_access(
        method="Bearer",
        route="/mcp/linear/" + CREDENTIALS,
        status=200,
        duration_ms=1.0,
        error=f"upstream said {API_KEY}",
        detail={"client_secret": "hunter2", "nested": [CREDENTIALS]},
        connection_id="0b9e6c1a-5d2f-4a0e-9a61-2f7d3c4b5a69",
    )
    text = out.getvalue()
    (line,) = _records(out)
    assert CREDENTIALS not in text and API_KEY_SECRET not in text and "hunter2" not in text
    assert line["msg"] == "Bearer /mcp/linear/[REDACTED:86chars] 200 1.0ms"
    assert line["route"] == "/mcp/linear/[REDACTED:86chars]"
    assert line["error"] == "upstream said bnd_[REDACTED]"
    assert line["detail"] == {"client_secret": "[REDACTED]", "nested": ["[REDACTED:86chars]"]}
    assert line["connection_id"] == "0b9e6c1a..."


def test_a_field_named_like_a_secret_is_redacted_whatever_its_value() -> None:
    out = _configured()
    logging.getLogger("bindify_appliance.test").warning(
        "x", extra={"db_password": "hunter2", "ctx": {"api_key": "k1", "max_tokens": 5}}
    )
    (line,) = _records(out)
    assert line["db_password"] == "[REDACTED]"
    assert line["ctx"] == {"api_key": "[REDACTED]", "max_tokens": 5}


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_access_lines_rendered_directly_equal_the_record_path(fmt: str) -> None:
    from bindify_appliance import logs

    out = _configured(fmt)
    root = logging.getLogger()
    others = [h for h in root.handlers if not isinstance(h, logs._Handler)]  # pytest's capture
    call = {
        "method": "POST",
        "route": "/mcp/{service}/{credentials}",
        "status": 502,
        "duration_ms": 3.25,
        "service": "linear",
        "error": f"upstream said {API_KEY}",
        "ts": "a field named like our own key",
    }
    for handler in others:
        root.removeHandler(handler)
    try:
        assert logs._only_handler() is not None  # our handler alone: the direct path
        log_access(**call)  # type: ignore[arg-type]
        extra = logging.NullHandler()
        root.addHandler(extra)
        assert logs._only_handler() is None  # anyone else listening: the record path
        log_access(**call)  # type: ignore[arg-type]
        root.removeHandler(extra)
    finally:
        for handler in others:
            root.addHandler(handler)
    direct, via_record = out.getvalue().splitlines()
    if fmt == "json":
        first, second = json.loads(direct), json.loads(via_record)
        assert first.pop("ts") and second.pop("ts")
        assert first == second and list(first) == list(second)
        assert first["error"] == "upstream said bnd_[REDACTED]" and "ts_" in first
    else:
        assert direct.split(" ", 1)[1] == via_record.split(" ", 1)[1]
        assert "bnd_[REDACTED]" in direct and API_KEY_SECRET not in direct
