"""Rewriting `tools/list` answers under a tool policy (DESIGN §13): JSON bodies and SSE events.

`ListFilter` knows which answers to rewrite — those whose id is one of the request's `tools/list`
ids, or, on streams where the requests are not seen (GET streams, legacy HTTP+SSE), any JSON-RPC
response whose `result.tools` is a list — and rewrites one message, a JSON body or one raw SSE
event. Everything else in the answer is kept: `nextCursor` (pagination), `_meta`, other
results, the SSE `id:`/`event:`/`retry:` lines and the line endings.

Filtering rule: a listed tool stays when the effective policy permits its name and, under
`read_only`, its own `annotations.readOnlyHint` is exactly `true`. Entries without a string
`name` are dropped (fail closed). Before filtering, every listed name and its read-only flag are
handed to `learn` (the per-connection catalog the call check uses).

`SSERewriter` is the `transform` for `relay.pump`: it cuts the byte stream into whole events
(`sse.EventSplitter`, so an event split across chunks is rewritten once complete), rewrites the
ones that carry a `tools/list` answer and passes the others through byte for byte. It may put
extra events (the proxy's own JSON-RPC errors for refused batch entries) before the first one.

Invariant: nothing here logs; tool lists and events are payload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from bindify_appliance.proxy.policy import EffectivePolicy
from bindify_appliance.proxy.sse import EventSplitter

__all__ = ["ListFilter", "SSERewriter", "id_key", "sse_event"]

Learn = Callable[[list[tuple[str, bool]]], None]
_LINE = re.compile(rb"(\r\n|\r|\n)")


def id_key(rid: object) -> tuple[bool, object]:
    """A JSON-RPC id as a set key that keeps `1` and `"1"` apart."""
    return (isinstance(rid, str), rid)


def sse_event(message: object, eol: bytes = b"\n") -> bytes:
    """One `message` event carrying `message` as JSON."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return b"event: message" + eol + b"data: " + data + eol + eol


class ListFilter:
    """Rewrites the `tools/list` answers of one exchange."""

    __slots__ = ("_ids", "_learn", "_policy")

    def __init__(
        self,
        policy: EffectivePolicy,
        learn: Learn,
        list_ids: frozenset[tuple[bool, object]] | None,
    ) -> None:
        self._policy = policy
        self._learn = learn
        self._ids = list_ids  # None: any answer shaped like a tools/list result

    def message(self, message: object) -> bool:
        """Filter `message` (a response or a batch of them) in place; True if it changed."""
        if isinstance(message, list):
            changed = False
            for item in message:
                changed = self._one(item) or changed
            return changed
        return self._one(message)

    def _one(self, message: object) -> bool:
        if not isinstance(message, dict) or "method" in message:
            return False
        result = message.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            return False
        if self._ids is not None:
            rid = message.get("id")
            if not isinstance(rid, str | int | float) or id_key(rid) not in self._ids:
                return False
        tools = result["tools"]
        seen: list[tuple[str, bool]] = []
        kept: list[Any] = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                continue
            annotations = tool.get("annotations")
            hint = isinstance(annotations, dict) and annotations.get("readOnlyHint") is True
            seen.append((tool["name"], hint))
            if self._policy.visible(tool["name"], hint):
                kept.append(tool)
        self._learn(seen)
        if len(kept) == len(tools):
            return False
        result["tools"] = kept
        return True

    def json_body(self, body: bytes, errors: Iterable[dict[str, Any]] = ()) -> bytes | None:
        """A JSON answer rewritten (and `errors` appended, for a batch); None = unchanged."""
        extra = list(errors)
        try:
            message = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None if not extra else json.dumps(extra, separators=(",", ":")).encode()
        changed = self.message(message) if message is not None else False
        if extra:
            if message is None:
                message = []
            elif not isinstance(message, list):
                message = [message]
            message = [*message, *extra]
            changed = True
        return json.dumps(message, separators=(",", ":")).encode() if changed else None

    def event(self, raw: bytes) -> bytes:
        """One raw SSE event, rewritten when it carries a `tools/list` answer."""
        if b"tools" not in raw and b"\\u" not in raw:
            return raw  # cheap: no answer with a tools list can be in here
        lines = _LINE.split(raw)
        # lines alternate text, terminator, text, terminator…
        data: list[bytes] = []
        first_data = -1
        for index in range(0, len(lines), 2):
            line = lines[index]
            if line.startswith(b"data:"):
                if first_data < 0:
                    first_data = index
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        if first_data < 0:
            return raw
        try:
            message = json.loads(b"\n".join(data))
        except (ValueError, UnicodeDecodeError, RecursionError):
            return raw
        if not self.message(message):
            return raw
        eol = b"\r\n" if b"\r\n" in raw else (b"\r" if b"\n" not in raw else b"\n")
        out: list[bytes] = []
        for index in range(0, len(lines), 2):
            line = lines[index]
            if line.startswith(b"data:"):
                if index == first_data:
                    out.append(b"data: " + json.dumps(message, separators=(",", ":")).encode())
                continue
            if line:
                out.append(line)
        return eol.join(out) + eol + eol


class SSERewriter:
    """`relay.pump` transform for event streams under a policy (see the module docstring)."""

    __slots__ = ("_filter", "_prefix", "_splitter")

    def __init__(self, list_filter: ListFilter, max_event_bytes: int, prefix: bytes = b"") -> None:
        self._filter = list_filter
        self._splitter = EventSplitter(max_event_bytes)
        self._prefix = prefix

    async def __call__(self, chunk: bytes) -> bytes:
        out = [self._filter.event(raw) for raw in self._splitter.feed(chunk)]
        if self._prefix:
            out.insert(0, self._prefix)
            self._prefix = b""
        return b"".join(out)
