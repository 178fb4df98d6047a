"""Server-sent events, incrementally: where events end, and the legacy `endpoint` rewrite.

Two tools, both fed raw chunks exactly as they arrive from the upstream (an event may be split
anywhere, lines may end in `\\n`, `\\r\\n` or `\\r`):

- `BoundaryTracker` answers "do the bytes relayed so far end between two events?" in O(1) per
  chunk. The relay only injects a keep-alive comment when they do, so a comment never lands inside
  a half-received event (the client would otherwise see a corrupted event).
- `EventSplitter` cuts the byte stream into complete raw events (used on legacy HTTP+SSE streams,
  where every event is inspected so the `endpoint` event can be rewritten onto the appliance's
  origin). Bytes of events that are not rewritten pass through unchanged.

Invariant: nothing here logs; event data may be payload.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from bindify_appliance.errors import SSEError

__all__ = [
    "KEEPALIVE",
    "BoundaryTracker",
    "EventSplitter",
    "SSEError",
    "endpoint_event",
    "parse_event",
    "resolve_endpoint",
    "same_origin",
]

# A comment line and the blank line that ends it: ignored by every SSE client.
KEEPALIVE = b": keep-alive\n\n"

# Two line terminators in a row = the end of an event. A lone CR counts only when it is not the
# first half of a CRLF (at the end of the buffer the next chunk may still bring the LF; cutting
# there is harmless: the LF becomes an empty line that dispatches nothing).
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_LINE_SPLIT = re.compile(rb"\r\n|\r|\n")


class BoundaryTracker:
    """Tracks whether the stream relayed so far ends at an event boundary."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b"\n\n"  # the start of a stream is between events

    def feed(self, chunk: bytes) -> None:
        if chunk:
            self._tail = (self._tail + chunk)[-4:] if len(chunk) < 4 else chunk[-4:]

    @property
    def at_boundary(self) -> bool:
        tail = self._tail
        # A trailing CR may be the first half of a CRLF still on its way: not yet a boundary.
        if not tail.endswith(b"\n"):
            return False
        rest = tail[:-2] if tail.endswith(b"\r\n") else tail[:-1]
        return rest.endswith((b"\n", b"\r"))


class EventSplitter:
    """Cuts a byte stream into complete raw events (each including its terminating blank line)."""

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    @property
    def pending(self) -> int:
        """Bytes held back: the start of an event whose end has not arrived yet."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[bytes] = []
        start = 0
        for match in _EVENT_END.finditer(buffer):
            events.append(buffer[start : match.end()])
            start = match.end()
        self._buffer = buffer[start:]
        if len(self._buffer) > self._max:
            raise SSEError("an event from the upstream exceeds the size limit")
        return events

    def flush(self) -> bytes:
        """Whatever is held back (at the end of the stream)."""
        rest, self._buffer = self._buffer, b""
        return rest


def parse_event(raw: bytes) -> tuple[str, str]:
    """(event type, data) of one raw event; type defaults to "message"."""
    event_type = "message"
    data: list[str] = []
    for line in _LINE_SPLIT.split(raw):
        if not line or line.startswith(b":"):
            continue
        name, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            event_type = value.decode("utf-8", "replace")
        elif name == b"data":
            data.append(value.decode("utf-8", "replace"))
    return event_type, "\n".join(data)


def endpoint_event(url: str, raw: bytes) -> bytes:
    """An `endpoint` event carrying `url`, with the line endings `raw` used."""
    eol = b"\r\n" if b"\r\n" in raw else (b"\r" if b"\n" not in raw else b"\n")
    return b"event: endpoint" + eol + b"data: " + url.encode() + eol + eol


def same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme.lower(), pa.hostname, pa.port or _default_port(pa.scheme)) == (
        pb.scheme.lower(),
        pb.hostname,
        pb.port or _default_port(pb.scheme),
    )


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme.lower())


def resolve_endpoint(data: str, sse_url: str) -> str | None:
    """The absolute upstream message URL an `endpoint` event names, or None if unusable.

    Relative values resolve against the SSE URL (as clients do). A URL on another origin is
    refused: the proxy would otherwise send the connection's credentials to a host the service
    definition never named.
    """
    value = data.strip()
    if not value or any(c in value for c in "\r\n\x00"):
        return None
    absolute = urljoin(sse_url, value)
    if urlsplit(absolute).scheme not in ("http", "https") or not same_origin(absolute, sse_url):
        return None
    return absolute
