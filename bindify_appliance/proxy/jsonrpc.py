"""Replies the proxy makes itself: the DESIGN §6 error table, as bytes ready to send.

Rules (from how real clients react, mcp-protocol §6):
- Errors about the credential keep a real HTTP status (400, 404, 403) — never 401, which would
  send clients into an OAuth dance; the one exception is the OAuth server's own 401 (DESIGN
  §10: no `Authorization` on `/mcp/{service}`, or a dead `bndat_` token), which carries its
  `WWW-Authenticate` challenge.
- Failures of one call are HTTP 200 + `application/json` + a JSON-RPC error carrying the
  request's id; a batch gets one error per request id, as an array.
- A failure with no request id to answer (GET stream, notification-only POST, unparseable body)
  on a "200" row becomes 502 (upstream trouble) or 503 + `Retry-After` (come back later) with no
  JSON-RPC body. Rows with a real status keep it and answer with `id: null`.
- The per-IP limit answers 429 + `Retry-After` with no body; a refused `Origin` 403 with no body.

The request body is parsed only when an error must be answered (never on the success path) and
is never modified: an unparseable body is forwarded upstream unchanged (hosted quirk Q19).
Reading ids is bounded (DESIGN §9): at most `MAX_ANSWERED_IDS` ids are answered (beyond that the
body counts as having none: one error with `id: null`), and JSON too deep for the parser is no
ids, never an exception. A refusal before credential resolution reads at most `ID_SCAN_BYTES`
of the body (the handler's job: it never accepts the rest).

Invariant: messages never contain a credential, a service secret or anything from the payload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bindify_appliance.proxy.target import ProxyRefusal, RefusalKind

__all__ = [
    "ID_SCAN_BYTES",
    "MAX_ANSWERED_IDS",
    "NO_IDS",
    "ErrorReply",
    "RequestIds",
    "error_reply",
    "parse_request_ids",
    "refusal_reply",
    "session_not_found_reply",
]

JsonRpcId = str | int | float

ID_SCAN_BYTES = 64 * 1024  # a refused request's body is read this far for ids, no further
MAX_ANSWERED_IDS = 100  # one error per id up to here; more ids → one error with id null


@dataclass(frozen=True)
class RequestIds:
    """The ids of the requests in a POST body (notifications and responses have none)."""

    ids: tuple[JsonRpcId, ...] = ()
    batch: bool = False

    @property
    def answerable(self) -> bool:
        return bool(self.ids)


NO_IDS = RequestIds()


def _valid_id(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def parse_request_ids(body: bytes) -> RequestIds:
    """Request ids in `body`; empty when it is not JSON-RPC, holds only notifications, holds more
    than `MAX_ANSWERED_IDS` ids, or cannot be parsed (invalid, too deep)."""
    if not body:
        return NO_IDS
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return NO_IDS
    if isinstance(message, list):
        ids = tuple(
            m["id"]
            for m in message
            if isinstance(m, dict) and "method" in m and _valid_id(m.get("id"))
        )
        if len(ids) > MAX_ANSWERED_IDS:
            return NO_IDS
        return RequestIds(ids, batch=True)
    if isinstance(message, dict) and "method" in message and _valid_id(message.get("id")):
        return RequestIds((message["id"],))
    return NO_IDS


@dataclass(frozen=True)
class ErrorReply:
    """A complete reply: status, headers and body (None = no body)."""

    status: int
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


# kind → (HTTP status when there is an id to answer, JSON-RPC code, status without an id)
_TABLE: dict[RefusalKind, tuple[int, int | None, int]] = {
    "malformed": (400, -32600, 400),
    "unknown_service": (404, -32006, 404),
    "unknown_credential": (404, -32001, 404),
    "disabled": (403, -32002, 403),
    "payment_required": (403, -32004, 403),
    "needs_reconnect": (200, -32003, 502),
    "upstream_unavailable": (200, -32603, 502),
    "cooldown": (200, -32007, 503),
    "rate_limited": (200, -31029, 503),
    "ip_limited": (429, None, 429),
    "oauth_required": (401, -32001, 401),
}

_JSON = ("Content-Type", "application/json")
_NO_STORE = ("Cache-Control", "no-store")


def _error_object(rid: JsonRpcId | None, code: int, message: str, data: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": error}


def error_reply(
    kind: RefusalKind,
    message: str,
    ids: RequestIds,
    *,
    data: Any = None,
    retry_after: int | None = None,
) -> ErrorReply:
    """The reply for one row of the DESIGN §6 table."""
    with_id, code, without_id = _TABLE[kind]
    headers: list[tuple[str, str]] = []
    if retry_after is not None and kind in ("cooldown", "rate_limited", "ip_limited"):
        headers.append(("Retry-After", str(max(1, int(retry_after)))))
    if code is None:
        return ErrorReply(with_id, None, tuple(headers))
    if not ids.answerable:
        if without_id >= 500:
            return ErrorReply(without_id, None, tuple(headers))
        payload: Any = _error_object(None, code, message, data)
        status = without_id
    else:
        errors = [_error_object(rid, code, message, data) for rid in ids.ids]
        payload = errors if ids.batch else errors[0]
        status = with_id
    body = json.dumps(payload, separators=(",", ":")).encode()
    return ErrorReply(status, body, (_JSON, _NO_STORE, *headers))


def refusal_reply(refusal: ProxyRefusal, ids: RequestIds) -> ErrorReply:
    """The reply for a resolver's (or the handler's) refusal."""
    kind = refusal.kind
    data: Any = None
    retry_after = refusal.retry_after
    if kind == "upstream_unavailable":
        data = {"proxy": True}
    elif kind in ("cooldown", "rate_limited"):
        retry_after = retry_after or 60
        data = {"retry_after": retry_after}
    elif kind == "needs_reconnect" and refusal.reconnect_url:
        data = {"reconnect_url": refusal.reconnect_url}
    reply = error_reply(kind, refusal.message, ids, data=data, retry_after=retry_after)
    if refusal.challenge:
        reply = ErrorReply(
            reply.status, reply.body, (*reply.headers, ("WWW-Authenticate", refusal.challenge))
        )
    return reply


def session_not_found_reply(ids: RequestIds, *, legacy: bool = False) -> ErrorReply:
    """404 for a session id this connection does not own (or that expired).

    404 is what the transport specifies for a gone session: Streamable HTTP clients start a new
    session on it. The body uses the request's id like every other proxy reply.
    """
    message = (
        "Session not found: the SSE connection may have expired; reconnect."
        if legacy
        else "Session not found."
    )
    code = -32001 if legacy else -32600
    if ids.answerable:
        errors = [_error_object(rid, code, message, None) for rid in ids.ids]
        payload: Any = errors if ids.batch else errors[0]
    else:
        payload = _error_object(None, code, message, None)
    body = json.dumps(payload, separators=(",", ":")).encode()
    return ErrorReply(404, body, (_JSON, _NO_STORE))
