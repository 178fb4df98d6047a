"""The access line's per-request work done once per (method, route, status): `AccessHeads`.

An access line (`logs.log_access`) shows the scrubbed method and route, the status and the
duration, and its message is `scrub(f"{method} {route} {status} {duration:.1f}ms")`. All of it
but the duration repeats from request to request, so `AccessHeads.head` keeps, per
(method, route, status): the scrubbed method and route, the message up to the duration, and
whether scrubbing could change any message with that head. A head is kept only while the
scrubbing rules it was checked against are current (`scrubbing.rules_token`) and only when
nothing in it was redacted, so no credential a caller passed by mistake is ever held here.

Why the message needs no scrub per request when its head is inert: `scrub` changes only text
in which `scrubbing._may_match` finds a run of 20 token characters or a trigger fragment, and
neither contains a space. The head ends with a space, so every run or fragment of the message
lies wholly in the head or wholly in the duration tail (`<at most 15 digits>.<digit>ms`, see
`inert_tail`); the head is checked once, and the tail is inert unless a fragment is made of
digits, `.`, `m` and `s` only (`scrubbing.numeric_fragment`), checked once per rule set.

`json_line` renders the line byte for byte as `logformat.JsonFormatter` renders the record
(`tests/test_accesslog.py` compares the two on generated input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bindify_appliance import scrubbing
from bindify_appliance.logformat import _JSON

__all__ = ["UNMATCHED_ROUTE", "AccessHead", "AccessHeads", "inert_tail", "json_line"]

UNMATCHED_ROUTE: Final = "<unmatched>"

# Heads kept at most; past it a head is computed per request (methods are client text).
MAX_HEADS: Final = 256
# A duration below this has at most 15 digits before its point: no run of 20 in the tail.
_MAX_INERT_MS: Final = 1e15


@dataclass(frozen=True, slots=True)
class AccessHead:
    """What an access line shows before its duration, for one (method, route, status)."""

    method: str  # scrubbed
    route: str  # scrubbed (or `<unmatched>`)
    message_head: str  # f"{method} {route} {status} "
    inert: bool  # no message with this head and an inert tail is changed by `scrub`
    json_message_head: str  # `"msg": ` value up to the duration, JSON-escaped, no closing quote
    json_fields_head: str  # from the closing quote of `msg` to the duration's value


def inert_tail(duration_ms: float) -> str | None:
    """The message's tail `f"{duration_ms:.1f}ms"` when it can never trip a scrub rule by
    itself (finite, 0 ≤ d < 1e15 ms, so digits, one point and `ms`); else None."""
    if 0.0 <= duration_ms < _MAX_INERT_MS:
        return f"{duration_ms:.1f}ms"
    return None


class AccessHeads:
    """A bounded cache of `AccessHead`s, emptied whenever the scrubbing rules change."""

    def __init__(self, size: int = MAX_HEADS) -> None:
        self._size = size
        self._heads: dict[tuple[str, str | None, int], AccessHead] = {}
        self._rules: object = None
        self._tails_inert = False

    def head(self, method: str, route: str | None, status: int) -> AccessHead:
        """The head for a method, a route template (None: no route matched, shown as
        `<unmatched>`) and a status; cached only when scrubbing redacted nothing in it."""
        rules = scrubbing.rules_token()
        if rules is not self._rules:
            self._heads = {}
            self._tails_inert = scrubbing.numeric_fragment() is None
            self._rules = rules
        key = (method, route, status)
        found = self._heads.get(key)
        if found is not None:
            return found
        shown_method = scrubbing.scrub(method)
        shown_route = UNMATCHED_ROUTE if route is None else scrubbing.scrub(route)
        message_head = f"{shown_method} {shown_route} {status} "
        inert = self._tails_inert and scrubbing.inert(message_head)
        head = AccessHead(
            method=shown_method,
            route=shown_route,
            message_head=message_head,
            inert=inert,
            json_message_head=_JSON.encode(message_head)[:-1],
            json_fields_head=(
                f'", "method": {_JSON.encode(shown_method)}, "route": '
                f'{_JSON.encode(shown_route)}, "status": {status}, "duration_ms": '
            ),
        )
        clean = shown_method == method and (route is None or shown_route == route)
        if clean and len(self._heads) < self._size and rules is scrubbing.rules_token():
            self._heads[key] = head
        return head


_JSON_LINE_HEAD: Final = '{"ts": "'
_JSON_AFTER_TS: Final = '", "level": "info", "logger": "bindify_appliance.access", "msg": '


def json_line(ts: str, head: AccessHead, tail: str, duration_ms: float) -> str:
    """The JSON access line of a head whose message is inert, with no extra fields: what
    `JsonFormatter.render` gives for it (`duration_ms` finite, already rounded)."""
    return (
        _JSON_LINE_HEAD
        + ts
        + _JSON_AFTER_TS
        + head.json_message_head
        + tail
        + head.json_fields_head
        + repr(duration_ms)
        + "}"
    )
