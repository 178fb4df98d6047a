"""The request side of tool policies (DESIGN §13): which calls pass, and the read-only catalog.

Only a request whose target carries a policy comes here (`ProxyTarget.policy` is None
otherwise, and the relay never looks at the body). `ToolGate.admit` then:
1. Parses the body once. Under a policy the body must be JSON the proxy reads exactly as the
   upstream would: unparseable JSON, or an object with a repeated key (one parser takes the
   first `name`, another the last), is refused with 400 -32600 instead of being forwarded.
2. Checks the 2026-07-28 mirrored headers against the body: an `Mcp-Method` that is not the
   body's method, or an `Mcp-Name` that is not the called tool's name, is 400 -32600 — the
   body decides, a header is never trusted. (`=?base64?…?=` values are decoded first.)
3. Decides every `tools/call` of the body (single or batch): a name the allow/deny globs hide
   is refused; under `read_only` the tool must be known read-only from the upstream's own
   `tools/list` (the catalog). A name the catalog does not know makes the gate fetch
   `tools/list` from the upstream first, with the member's credential and the client's session
   and revision headers, every page; any failure leaves the tool unknown, and unknown is
   refused (fail closed). Legacy HTTP+SSE answers arrive on the stream, so there a call is
   decided by what the stream's `tools/list` answers taught the catalog.
4. A refused call never reaches the upstream: a single request is answered at once (HTTP 200,
   JSON-RPC -31005 with its id); in a batch only that entry is taken out, the rest forwarded,
   and its error merged into the upstream's answer (`Admission.errors`).

`ToolCatalog` keeps, per connection, tool names and read-only flags only, each for at most the
resolution memo's TTL (`MEMO_TTL`, 1 s), bounded in size.

Each refusal calls `on_denied`: a metric by service, and an event naming the tool (never its
arguments) through the resolver.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bindify_appliance.proxy.jsonrpc import (
    ErrorReply,
    RequestIds,
    error_reply,
    parse_request_ids,
)
from bindify_appliance.proxy.policy import EffectivePolicy
from bindify_appliance.proxy.sse import EventSplitter, SSEError, parse_event
from bindify_appliance.proxy.target import ProxyTarget
from bindify_appliance.proxy.tool_filter import ListFilter, id_key
from bindify_appliance.proxy.upstream import UpstreamClient, UpstreamError, with_query

__all__ = [
    "DENIED_CODE",
    "DENIED_MESSAGE",
    "Admission",
    "ToolCatalog",
    "ToolGate",
    "denied_error",
]

log = logging.getLogger(__name__)

DENIED_CODE: Final = -31005
DENIED_MESSAGE: Final = "tool not allowed by policy"
MISMATCH_MESSAGE: Final = "The Mcp-Method or Mcp-Name header does not match the request body."
UNREADABLE_MESSAGE: Final = (
    "This connection has a tool policy: the request body must be JSON-RPC without repeated keys."
)
FETCH_PAGES: Final = 20  # tools/list pages fetched for one unknown tool, at most
FETCH_TIMEOUT: Final = 15.0
FETCH_LIMIT: Final = 8 * 1024 * 1024
_JSON = ("Content-Type", "application/json")
_NO_STORE = ("Cache-Control", "no-store")
_MODERN_META = "io.modelcontextprotocol/"

Clock = Callable[[], float]


class ToolCatalog:
    """connection id → tool name → (read-only flag, expiry); names and flags only."""

    def __init__(self, clock: Clock, ttl: float, size: int = 10_000) -> None:
        self._clock = clock
        self._ttl = ttl
        self._size = size
        self._tools: dict[str, dict[str, tuple[bool, float]]] = {}

    def learn(self, connection_id: str, tools: list[tuple[str, bool]]) -> None:
        if not tools or self._ttl <= 0:
            return
        if connection_id not in self._tools and len(self._tools) >= self._size:
            self._tools.clear()  # rare; everything here is re-learnt within a second
        known = self._tools.setdefault(connection_id, {})
        expires = self._clock() + self._ttl
        for name, read_only in tools[: self._size]:
            known[name] = (read_only, expires)

    def read_only(self, connection_id: str, name: str) -> bool | None:
        """The flag, or None when the tool was not listed within the TTL."""
        known = self._tools.get(connection_id)
        entry = known.get(name) if known is not None else None
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del known[name]  # type: ignore[union-attr]
            return None
        return entry[0]


class _Unreadable(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Unreadable
    return out


def _header_value(value: str | None) -> str | None:
    """An `Mcp-*` header value, `=?base64?…?=` decoded (2026-07-28 non-ASCII form)."""
    if value is None:
        return None
    text = value.strip()
    if text.startswith("=?base64?") and text.endswith("?="):
        try:
            return base64.b64decode(text[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "\x00"  # matches no method or name: a mismatch
    return text


def denied_error(rid: object) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": DENIED_CODE, "message": DENIED_MESSAGE}}


@dataclass
class Admission:
    """What the gate decided for one request."""

    reply: ErrorReply | None = None  # answer this now, relay nothing
    body: bytes | None = None  # what to forward (the client's bytes unless a batch was cut)
    errors: list[dict[str, Any]] = field(default_factory=list)  # to merge into the answer
    filter: ListFilter | None = None  # rewrite these tools/list answers (None: relay as is)

    @property
    def rewrites(self) -> bool:
        return self.filter is not None or bool(self.errors)


Denied = Callable[[ProxyTarget, str], None]  # records the event off the hot path


class ToolGate:
    """Admission of request bodies under a policy, for one appliance process."""

    def __init__(
        self,
        catalog: ToolCatalog,
        upstream: UpstreamClient,
        on_denied: Denied,
        max_event_bytes: int,
    ) -> None:
        self.catalog = catalog
        self._upstream = upstream
        self._on_denied = on_denied
        self._max_event = max_event_bytes

    def list_filter(
        self, target: ProxyTarget, list_ids: frozenset[tuple[bool, object]] | None
    ) -> ListFilter:
        assert target.policy is not None
        connection_id = target.connection_id
        return ListFilter(
            target.policy, lambda tools: self.catalog.learn(connection_id, tools), list_ids
        )

    async def admit(
        self,
        target: ProxyTarget,
        body: bytes,
        headers: Mapping[str, str],
        client_headers: list[tuple[str, str]],
        *,
        fetch_url: str | None,
    ) -> Admission:
        """Decide a POST body (see the module docstring). `fetch_url`: where `tools/list` may
        be fetched for an unknown tool under `read_only` (None on legacy transports)."""
        policy = target.policy
        assert policy is not None
        try:
            message = json.loads(body, object_pairs_hook=_no_duplicates) if body else None
        except (_Unreadable, ValueError, UnicodeDecodeError, RecursionError):
            return Admission(reply=error_reply("malformed", UNREADABLE_MESSAGE, RequestIds()))
        batch = isinstance(message, list)
        messages: list[Any] = message if isinstance(message, list) else [message]
        header_method = _header_value(headers.get("Mcp-Method"))
        header_name = _header_value(headers.get("Mcp-Name"))
        mirrored = header_method is not None or header_name is not None
        if mirrored and (batch or not self._headers_agree(messages[0], header_method, header_name)):
            ids = parse_request_ids(body)
            return Admission(reply=error_reply("malformed", MISMATCH_MESSAGE, ids))
        list_ids: set[tuple[bool, object]] = set()
        refused: list[int] = []
        for index, item in enumerate(messages):
            if not isinstance(item, dict):
                continue
            method = item.get("method")
            if method == "tools/list" and isinstance(item.get("id"), str | int | float):
                list_ids.add(id_key(item["id"]))
            elif method == "tools/call":
                params = item.get("params")
                name = params.get("name") if isinstance(params, dict) else None
                allowed = isinstance(name, str) and await self._allowed(
                    target, policy, name, item, client_headers, fetch_url
                )
                if not allowed:
                    refused.append(index)
                    self._on_denied(target, name if isinstance(name, str) else "")
        list_filter = self.list_filter(target, frozenset(list_ids)) if list_ids else None
        if not refused:
            return Admission(body=body, filter=list_filter)
        errors = [
            denied_error(messages[i].get("id"))
            for i in refused
            if isinstance(messages[i].get("id"), str | int | float)
            and not isinstance(messages[i].get("id"), bool)
        ]
        cut = set(refused)
        rest = [m for i, m in enumerate(messages) if i not in cut]
        if not rest:
            if not errors:
                return Admission(reply=ErrorReply(202))  # notifications only: nothing to say
            payload = errors if batch else errors[0]
            data = json.dumps(payload, separators=(",", ":")).encode()
            return Admission(reply=ErrorReply(200, data, (_JSON, _NO_STORE)))
        forward = json.dumps(rest, separators=(",", ":")).encode()
        return Admission(body=forward, errors=errors, filter=list_filter)

    @staticmethod
    def _headers_agree(message: object, method: str | None, name: str | None) -> bool:
        if not isinstance(message, dict):
            return False
        if method is not None and message.get("method") != method:
            return False
        if name is not None:
            params = message.get("params")
            if not isinstance(params, dict):
                return False
            called = params.get("name", params.get("uri"))
            if called != name:
                return False
        return True

    async def _allowed(
        self,
        target: ProxyTarget,
        policy: EffectivePolicy,
        name: str,
        request: dict[str, Any],
        client_headers: list[tuple[str, str]],
        fetch_url: str | None,
    ) -> bool:
        if not policy.permits(name):
            return False
        if not policy.read_only:
            return True
        flag = self.catalog.read_only(target.connection_id, name)
        if flag is None and fetch_url is not None:
            await self._fetch(target, request, client_headers, fetch_url)
            flag = self.catalog.read_only(target.connection_id, name)
        return flag is True

    async def _fetch(
        self,
        target: ProxyTarget,
        request: dict[str, Any],
        client_headers: list[tuple[str, str]],
        url: str,
    ) -> None:
        """`tools/list` from the upstream into the catalog, every page; failures are quiet
        (the tool stays unknown, so the call is refused)."""
        from bindify_appliance.proxy.headers import request_headers

        params = request.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        # The stateless revision needs the request's own `_meta` (version, capabilities).
        modern = (
            {k: v for k, v in meta.items() if k.startswith(_MODERN_META)}
            if isinstance(meta, dict)
            else {}
        )
        kept = [
            (k, v)
            for k, v in client_headers
            if k.lower() in ("mcp-protocol-version", "mcp-session-id", "user-agent")
        ]
        if any(k.lower() == "mcp-method" for k, _ in client_headers):
            kept.append(("Mcp-Method", "tools/list"))
        kept += [("Content-Type", "application/json"), ("Accept", _ACCEPT)]
        headers = request_headers(kept, target.inject_headers, target.inject_names)
        learn = self.list_filter(target, None)
        cursor: str | None = None
        for _ in range(FETCH_PAGES):
            rid = "bindify-policy-" + secrets.token_hex(8)
            list_params: dict[str, Any] = {}
            if modern:
                list_params["_meta"] = modern
            if cursor is not None:
                list_params["cursor"] = cursor
            body = json.dumps(
                {"jsonrpc": "2.0", "id": rid, "method": "tools/list", "params": list_params}
            ).encode()
            try:
                answer = await self._ask(url, headers, body, rid)
            except (UpstreamError, SSEError, ValueError, UnicodeDecodeError, RecursionError):
                log.info(
                    "tools/list for a read-only policy failed; the call is refused",
                    extra={"event": "policy_fetch_failed", "connection_id": target.connection_id},
                )
                return
            result = answer.get("result") if isinstance(answer, dict) else None
            if not isinstance(result, dict):
                return
            learn.message({"jsonrpc": "2.0", "id": rid, "result": dict(result)})
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                return

    async def _ask(self, url: str, headers: Mapping[str, str], body: bytes, rid: str) -> Any:
        response = await self._upstream.request("POST", url, headers, body, timeout=FETCH_TIMEOUT)
        try:
            if response.status != 200:
                return None
            if response.content_type != "text/event-stream":
                return json.loads(await response.read_all(FETCH_LIMIT))
            splitter = EventSplitter(self._max_event)
            size = 0
            while size <= FETCH_LIMIT:
                chunk = await response.read_chunk()
                if not chunk:
                    return None
                size += len(chunk)
                for raw in splitter.feed(chunk):
                    _, data = parse_event(raw)
                    if not data:
                        continue
                    message = json.loads(data)
                    if isinstance(message, dict) and message.get("id") == rid:
                        return message
            return None
        finally:
            response.close()


_ACCEPT: Final = "application/json, text/event-stream"


def fetch_url(target: ProxyTarget) -> str | None:
    """Where `tools/list` may be fetched for `target` (Streamable HTTP only)."""
    if target.transport != "streamable-http":
        return None
    return with_query(target.upstream_url, target.inject_query)
