"""Log line formatting: JSON or text lines rendered from plain parts.

A `LineParts` is what a line shows; both formatters render it, so `logs.log_access` can render an
access line without building a `LogRecord` and get exactly what the record would have given.
Formatters never scrub: every record reaching them passed `logs.SecretScrubFilter` first.
"""

from __future__ import annotations

import abc
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from `extra=`.
RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",  # Python 3.12+
}
# Keys our JSON lines own; an extra field with one of these names is written as `name_`.
_OWN_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})


def safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"[unrepresentable {type(value).__name__}]"


_second_cache: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the part up to the second is formatted once a second."""
    global _second_cache
    second = math.floor(created)
    # Rounded to the microsecond first, as datetime.fromtimestamp does.
    micros = round((created - second) * 1_000_000)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, prefix)
    return f"{prefix}.{micros // 1000:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(record).items()
        if name not in RECORD_ATTRS and not name.startswith("_")
    }


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    # After SecretScrubFilter only `exc_text` is set; `exc_info` is a fallback for records that
    # reach a formatter some other way.
    if record.exc_text:
        return record.exc_text
    if record.exc_info and record.exc_info[0] is not None:
        return formatter.formatException(record.exc_info)
    return None


# One encoder for every line (json.dumps with options builds a new one per call).
_JSON = json.JSONEncoder(ensure_ascii=True, default=safe_str)


@dataclass(frozen=True, slots=True)
class LineParts:
    """What a log line shows, taken from a `LogRecord` or given directly (`log_access`)."""

    created: float
    levelname: str
    logger: str
    message: str
    extras: Mapping[str, object]
    exc: str | None = None
    stack: str | None = None


class LineFormatter(logging.Formatter, abc.ABC):
    """A formatter that renders a line from plain parts, so `log_access` can render an access
    line without a `LogRecord` and get exactly what the record would have given."""

    def format(self, record: logging.LogRecord) -> str:
        return self.render(
            LineParts(
                record.created,
                record.levelname,
                record.name,
                record.getMessage(),
                _extras(record),
                _exception_text(self, record),
                record.stack_info,
            )
        )

    @abc.abstractmethod
    def render(self, line: LineParts) -> str:
        """The text of one log line (without the line terminator)."""


class JsonFormatter(LineFormatter):
    """One JSON object per line: ts, level, logger, msg, the extra fields, then exc and stack.

    Non-ASCII characters are escaped, so a line is one record for every line splitter (even
    those that split on U+2028). Extra fields named like our own keys are written as `name_`.
    """

    def render(self, line: LineParts) -> str:
        payload: dict[str, object] = {
            "ts": _timestamp(line.created),
            "level": line.levelname.lower(),
            "logger": line.logger,
            "msg": line.message,
        }
        for name, value in line.extras.items():
            payload[f"{name}_" if name in _OWN_KEYS else name] = value
        if line.exc:
            payload["exc"] = line.exc
        if line.stack:
            payload["stack"] = line.stack
        return _JSON.encode(payload)


def _text_value(value: object) -> str:
    if isinstance(value, str) and value and not any(c in value for c in ' ="\\\n\t'):
        return value
    return json.dumps(value, ensure_ascii=False, default=safe_str)


class TextFormatter(LineFormatter):
    """Readable lines for a terminal: `ts LEVEL logger: msg  key=value …`, traceback below."""

    def render(self, line: LineParts) -> str:
        text = f"{_timestamp(line.created)} {line.levelname:<7} {line.logger}: {line.message}"
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in line.extras.items())
        if fields:
            text += "  " + fields
        if line.exc:
            text += "\n" + line.exc
        if line.stack:
            text += "\n" + line.stack
        return text
