"""Logging: one handler on the root logger, JSON or text lines, and a scrubber every record passes.

`configure_logging()` installs exactly one handler (stderr by default). Every record that reaches
it — from our loggers, from Tornado's (`tornado.application`, `tornado.general`, which propagate
to the root) and from libraries — first passes `SecretScrubFilter`, which rewrites the record in
place: the formatted message, every string in its extra fields, the exception text and the stack.
The raw `exc_info` is dropped after scrubbing, so no formatter (ours or any later handler's) can
render the unscrubbed traceback again.

Invariants:
- The scrubber is a backstop, not the plan: modules never log secrets or payloads, and messages
  in `errors.py` name the option or field, never the value. The rules and their fast path live
  in `scrubbing.py` (`scrub`, re-exported here with `add_secret_names`).
- `tornado.access` is silenced: `log_access()` writes the access log with the route template (or
  `<unmatched>`), never the raw path, which for the proxy carries the secret credentials.
- Tornado's "Uncaught exception" record for a closed stream (a client that went away; see
  `ExpectedDisconnectFilter`) is dropped: it is the normal end of a stream, not an error.
- The first-run setup URL is written straight to stderr by the server, never through logging
  (DESIGN §5): the scrubber would redact its token, and log shippers would keep it.
- Configuring is idempotent: calling `configure_logging()` again replaces our handler and filter.
- Library code never adds handlers; only this module configures logging.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from tornado.iostream import StreamClosedError

from bindify_appliance.accesslog import (
    UNMATCHED_ROUTE,
    AccessHead,
    AccessHeads,
    inert_tail,
    json_line,
)
from bindify_appliance.errors import ConfigError
from bindify_appliance.logformat import (
    RECORD_ATTRS,
    JsonFormatter,
    LineFormatter,
    LineParts,
    TextFormatter,
    safe_str,
)
from bindify_appliance.logformat import (
    _timestamp as _timestamp,  # re-exported for the timestamp test
)
from bindify_appliance.scrubbing import (
    SCRUBBED_COOKIE_NAMES,
    SENSITIVE_NAME,
    add_secret_names,
    scrub,
)
from bindify_appliance.scrubbing import (
    _apply_rules as _apply_rules,  # re-exported for the fast-path property test
)
from bindify_appliance.scrubbing import (
    _may_match as _may_match,  # re-exported for the fast-path property test
)

__all__ = [
    "ACCESS_LOGGER_NAME",
    "EXEMPT_FIELDS",
    "SCRUBBED_COOKIE_NAMES",
    "UNMATCHED_ROUTE",
    "ExpectedDisconnectFilter",
    "JsonFormatter",
    "LineParts",
    "SecretScrubFilter",
    "TextFormatter",
    "add_secret_names",
    "configure_logging",
    "log_access",
    "reset_logging",
    "scrub",
]

ACCESS_LOGGER_NAME = "bindify_appliance.access"

#: Structured fields whose scalar values pass unscrubbed. Each holds a number, a closed
#: vocabulary (levels, HTTP and JSON-RPC method names, service ids, event and job names,
#: outcomes) or a key fingerprint (16 hex characters), so it can never carry a credential and
#: scrubbing it could only mangle it. Nothing that can carry a credential is exempt: `path`,
#: `url`, `headers`, `message`, `error`, `detail` hold text a caller or an upstream chose, and
#: even `route` is scrubbed — a route template never trips a rule, so scrubbing it costs nothing,
#: while a caller passing a raw path by mistake would otherwise leak a secret URL. Containers
#: under an exempt name are still scrubbed.
EXEMPT_FIELDS: frozenset[str] = frozenset(
    {"level", "logger", "status", "method", "duration_ms", "bytes_in", "bytes_out", "service"}
    | {"rpc_method", "tool", "event", "category", "upstream_status", "job", "outcome", "count"}
    | {"fingerprint"}
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_SILENT = logging.CRITICAL + 1
_MAX_DEPTH = 5
_CONNECTION_ID_KEEP = 8

# --- the record filter -----------------------------------------------------------------------


def _clean(value: object, key: str | None, depth: int) -> object:
    """A JSON-safe, scrubbed copy of an extra field's value (the field itself is depth 1)."""
    if depth > _MAX_DEPTH:
        return "[TRUNCATED]"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        # NaN and infinities are not JSON; a log line must always parse.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {
            scrub(safe_str(k)): _clean(v, k if isinstance(k, str) else None, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, None, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        # Bytes in a log call are almost always a payload; record only the size.
        return f"[{len(value)} bytes]"
    text = value if isinstance(value, str) else safe_str(value)
    if key is not None and _SECRET_FIELD.fullmatch(key):
        return "[REDACTED]"  # a field named like a secret holds one, whatever it looks like
    if key == "connection_id":
        # Enough to correlate lines, not enough to name the connection in a leaked log.
        return text if len(text) <= _CONNECTION_ID_KEEP else text[:_CONNECTION_ID_KEEP] + "..."
    if key in EXEMPT_FIELDS and isinstance(value, str):
        return text
    return scrub(text)


_SECRET_FIELD = re.compile(SENSITIVE_NAME, re.ASCII | re.IGNORECASE)
_PLAIN = logging.Formatter()


def _scrub_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:
        # Mismatched arguments: keep the template, never the arguments.
        message = safe_str(record.msg) + " [log arguments did not match the message]"
    record.msg = scrub(message)
    record.args = ()
    if "message" in vars(record):
        # A formatter of an earlier handler cached the raw text on the record.
        record.message = record.msg
    for name in [n for n in vars(record) if n not in RECORD_ATTRS]:
        setattr(record, name, _clean(getattr(record, name), name, 1))
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = _PLAIN.formatException(record.exc_info)
    # Dropped so that no formatter re-renders the raw traceback from the live exception.
    record.exc_info = None
    if record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)


# Marks a record whose every part was scrubbed when it was built (`log_access`); a private
# object, so no `extra=` of any other caller can claim it.
_PRE_SCRUBBED = object()


def _quarantine(record: logging.LogRecord, error: Exception) -> None:
    """Fail closed: keep only what cannot carry a secret (logger, level, time)."""
    for name in [n for n in vars(record) if n not in RECORD_ATTRS]:
        delattr(record, name)
    record.msg = f"[log record withheld: scrubbing failed with {type(error).__name__}]"
    record.args = ()
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None
    if "message" in vars(record):
        record.message = record.msg


class SecretScrubFilter(logging.Filter):
    """Rewrite every record in place so that no credential reaches any formatter.

    Attached to our handler rather than to loggers, because a logger's filters only see records
    logged on that very logger: on the handler it sees everything, Tornado's propagated records
    and records of loggers that set no filters included. It never drops a record and never
    raises (a filter's exception would escape into the caller's `log.info`); if scrubbing fails,
    the record is replaced by a placeholder that says so.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_bindify_scrubbed", None) is _PRE_SCRUBBED:
            return True  # an access record, built from parts `log_access` already scrubbed
        try:
            _scrub_record(record)
        except Exception as error:
            _quarantine(record, error)
        return True


class ExpectedDisconnectFilter(logging.Filter):
    """Drop `tornado.application` records whose exception is a `StreamClosedError`.

    When an MCP client goes away mid-stream, the proxy's next `flush()` raises
    `StreamClosedError`; raised from an upstream fetch's `streaming_callback`, it aborts the
    upstream request (that is how a departing client cancels upstream work), and Tornado logs it
    as "Uncaught exception" at ERROR (`_ExceptionLoggingContext(app_log)` in
    `http1connection._deliver_body`). That is the normal end of a stream, not a fault, and an
    ERROR line per disconnect would bury real errors. We match the exception type rather than a
    marker class of the proxy's so that this module imports nothing from the proxy; an error
    that merely wraps a closed stream is not matched. Attached to the `tornado.application`
    logger itself, so the record reaches no handler at all. `dropped` counts what was dropped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, StreamClosedError):
            self.dropped += 1
            return False
        return True


# --- configuration ---------------------------------------------------------------------------


class _Handler(logging.StreamHandler[TextIO]):
    """Our handler's own class, so reconfiguring finds and replaces exactly it."""

    def write_line(self, line: str) -> bool:
        """Write one rendered line as `emit` would; False if the stream refused it."""
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:
            return False
        finally:
            self.release()
        return True


@dataclass
class _Saved:
    root_level: int
    levels: dict[str, int]
    propagate: dict[str, bool]


_TORNADO_KEPT = ("tornado.application", "tornado.general")
_MANAGED = ("tornado.access", *_TORNADO_KEPT, "peewee")
_saved: _Saved | None = None
_ours: _Handler | None = None


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Install our handler on the root logger (replacing a previous one) at `level`.

    `fmt` is `json` or `text`; `stream` defaults to stderr. Tornado's application and general
    loggers propagate to this handler and its scrubber; `tornado.access` is silenced because
    `log_access()` writes our access log. Raises `ConfigError` for an unknown level or format.
    """
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ConfigError("BINDIFY_LOG_LEVEL must be one of " + ", ".join(_LEVELS))
    formatters: dict[str, type[logging.Formatter]] = {"json": JsonFormatter, "text": TextFormatter}
    formatter = formatters.get(fmt.lower())
    if formatter is None:
        raise ConfigError("BINDIFY_LOG_FORMAT must be json or text")

    global _saved
    if _saved is None:
        _saved = _Saved(
            root_level=logging.getLogger().level,
            levels={n: logging.getLogger(n).level for n in _MANAGED},
            propagate={n: logging.getLogger(n).propagate for n in _MANAGED},
        )
    _remove_ours()

    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter())
    handler.addFilter(SecretScrubFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(numeric)
    global _ours
    _ours = handler

    for name in _TORNADO_KEPT:
        tornado_logger = logging.getLogger(name)
        tornado_logger.setLevel(logging.NOTSET)
        tornado_logger.propagate = True
    logging.getLogger("tornado.application").addFilter(ExpectedDisconnectFilter())
    logging.getLogger("tornado.access").setLevel(_SILENT)
    # peewee logs every SQL statement with its parameters at DEBUG; parameters are payload
    # (ciphertext, hashes, labels), so it stays at INFO even when we run at debug.
    logging.getLogger("peewee").setLevel(logging.INFO)


def reset_logging() -> None:
    """Undo `configure_logging()`: remove our handler and filters, restore the saved levels.

    For tests and embedders that configure logging temporarily.
    """
    global _saved
    _remove_ours()
    if _saved is None:
        return
    logging.getLogger().setLevel(_saved.root_level)
    for name in _MANAGED:
        managed = logging.getLogger(name)
        managed.setLevel(_saved.levels[name])
        managed.propagate = _saved.propagate[name]
    _saved = None


def _remove_ours() -> None:
    global _ours
    _ours = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
            handler.close()  # flushes; a StreamHandler never closes its stream
    app_log = logging.getLogger("tornado.application")
    for installed in list(app_log.filters):
        if isinstance(installed, ExpectedDisconnectFilter):
            app_log.removeFilter(installed)


# --- access log ------------------------------------------------------------------------------

_access_log = logging.getLogger(ACCESS_LOGGER_NAME)
_heads = AccessHeads()
# What an access line must never hold: the raw path and query (the proxy's carry credentials),
# headers and bodies. Refused loudly rather than scrubbed quietly, because it is a caller bug.
_FORBIDDEN_ACCESS_FIELDS = frozenset(
    {"path", "raw_path", "uri", "url", "query", "query_string", "arguments", "params"}
    | {"headers", "body", "payload", "request_body", "response_body"}
)


def log_access(
    *, method: str, route: str | None, status: int, duration_ms: float, **fields: object
) -> None:
    """Write one INFO access record on `bindify_appliance.access` with structured fields.

    `route` is the route template (`/mcp/{service}/{credentials}`), `None` when no route
    matched (written as `<unmatched>`). `fields` adds metadata such as `service`,
    `connection_id`, `rpc_method`, `tool`, `bytes_in`, `bytes_out`.
    Raises `TypeError` for a field that names a path, query, header or body, or that clashes
    with a `LogRecord` attribute.
    """
    if fields:
        refused = _FORBIDDEN_ACCESS_FIELDS.intersection(fields)
        if refused:
            raise TypeError(
                f"log_access() refuses {', '.join(sorted(refused))}: "
                "raw paths, queries, headers and bodies are never logged"
            )
        clashing = RECORD_ATTRS.intersection(fields)
        if clashing:
            raise TypeError(f"log_access() field names clash with LogRecord: {sorted(clashing)}")
    if not _access_log.isEnabledFor(logging.INFO):
        return
    # One record per request on the proxy's hot path, so it is built here from scrubbed parts
    # (the method and route as strings, the status and duration as numbers, each extra field as
    # the filter would clean it) and marked so the filter does not scrub it a second time; no
    # caller lookup either (only the unused file and line fields would need it). What repeats
    # from request to request (the scrubbed method and route, the message up to the duration)
    # comes from `_heads` (`accesslog.py`). It then goes to the same handlers as every other
    # record, or straight to our handler when it is the only one (`_only_handler`).
    status = int(status)
    duration_ms = float(duration_ms)
    head = _heads.head(method, route, status)
    tail = inert_tail(duration_ms) if head.inert else None
    if tail is not None:
        message = head.message_head + tail
    else:
        message = scrub(f"{head.message_head}{duration_ms:.1f}ms")
    rounded = round(duration_ms, 3) if math.isfinite(duration_ms) else None
    shown_duration: object = rounded if rounded is not None else str(duration_ms)
    handler = _only_handler()
    if handler is not None:
        formatter = handler.formatter
        if (
            tail is not None
            and rounded is not None
            and not fields
            and type(formatter) is JsonFormatter
        ):
            line = json_line(_timestamp(time.time()), head, tail, rounded)
            if handler.write_line(line):
                return
        elif isinstance(formatter, LineFormatter):
            extra = _access_extra(head, status, shown_duration, fields)
            line = formatter.render(
                LineParts(time.time(), "INFO", ACCESS_LOGGER_NAME, message, extra)
            )
            if handler.write_line(line):
                return
    record = _access_log.makeRecord(
        ACCESS_LOGGER_NAME,
        logging.INFO,
        "",
        0,
        message,
        (),
        None,
        extra=_access_extra(head, status, shown_duration, fields),
    )
    record._bindify_scrubbed = _PRE_SCRUBBED
    _access_log.handle(record)


def _access_extra(
    head: AccessHead, status: int, duration: object, fields: Mapping[str, object]
) -> dict[str, object]:
    extra: dict[str, object] = {
        "method": head.method,
        "route": head.route,
        "status": status,
        "duration_ms": duration,
    }
    for name, value in fields.items():
        extra[name] = _clean(value, name, 1)
    return extra


def _only_handler() -> _Handler | None:
    """Our handler, when an access record would reach it and nothing else: then `log_access`
    renders the line itself, exactly as the record would have been rendered (same formatter),
    skipping the record machinery. Any other handler or filter on the way (a test's capture, an
    embedder's handler) sends records the ordinary way."""
    handler = _ours
    root = logging.root
    if handler is None or handler.level > logging.INFO or len(handler.filters) != 1:
        return None
    if type(handler.filters[0]) is not SecretScrubFilter:
        return None
    if len(root.handlers) != 1 or root.handlers[0] is not handler or root.filters:
        return None
    logger: logging.Logger | None = _access_log
    while logger is not None and logger is not root:
        if logger.handlers or logger.filters or not logger.propagate or logger.disabled:
            return None
        logger = logger.parent
    return handler
