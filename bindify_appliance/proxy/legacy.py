"""The legacy HTTP+SSE transport (2024-11-05): the stream relay and the message POSTs.

Routes: `…/sse` (`LegacyStreamHandler`) and `…/messages?session=…` (`LegacyMessagesHandler`);
a GET on the Streamable HTTP URL of a service whose transport is legacy SSE is served by the
same stream relay (`LegacyRelayHandler._legacy_stream`, inherited by `StreamableHandler`), so
clients that fall back from Streamable HTTP to SSE on the same URL work.

Legacy `endpoint` events are rewritten onto `base_url` with a proxy-minted session id
(`LegacySessions`), renewed while the stream lasts and closed when it ends. For API-key users
the rewritten URL carries no credential (hosted quirk Q10 fixed): the client sends its
`Authorization` header with every message POST, as it does on the stream.

Invariants: an `endpoint` event pointing off the upstream's origin ends the stream (never
relayed); a message POST reaches only the URL bound to its session for this connection (else
404); a stream's session bindings are closed when it ends. No log line carries a credential,
session id, URL query or payload.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from bindify_appliance.errors import KVError
from bindify_appliance.proxy.exchange import RelayHandler
from bindify_appliance.proxy.jsonrpc import session_not_found_reply
from bindify_appliance.proxy.sessions import LegacySession
from bindify_appliance.proxy.sse import (
    EventSplitter,
    SSEError,
    endpoint_event,
    parse_event,
    resolve_endpoint,
)
from bindify_appliance.proxy.target import ProxyRefusal, ProxyTarget
from bindify_appliance.proxy.upstream import with_query

__all__ = ["LegacyMessagesHandler", "LegacyRelayHandler", "LegacyStreamHandler"]

log = logging.getLogger(__name__)

_NOT_LEGACY = (
    "This service does not use the legacy SSE transport; use its Streamable HTTP URL "
    "(without /sse)."
)


class LegacyRelayHandler(RelayHandler):
    """The legacy stream relay, shared by `…/sse` and the Streamable HTTP GET of an SSE service."""

    async def _legacy_stream(
        self, service: str, credentials: str | None, target: ProxyTarget
    ) -> None:
        """Relay a legacy HTTP+SSE stream, rewriting its `endpoint` event onto our origin."""
        proxy = self.proxy
        opened = await self._open(
            "GET", target, lambda t: with_query(t.upstream_url, t.inject_query), None
        )
        if opened is None:
            return
        target, response = opened
        sse = self._start_response(response)
        if response.status != 200 or not sse:
            await self._finish_relay(target, response, sse)
            return

        splitter = EventSplitter(proxy.config.max_event_bytes)
        sessions: list[LegacySession] = []
        prefix = f"{proxy.base_url}/mcp/{quote(service, safe='')}"
        if self.form == "path" and credentials:
            prefix += f"/{quote(credentials, safe='')}"
        sse_url = target.upstream_url
        connection_id = target.connection_id
        listed = self.proxy.tools.list_filter(target, None) if target.policy else None

        async def transform(chunk: bytes) -> bytes:
            out: list[bytes] = []
            for raw in splitter.feed(chunk):
                event_type, data = parse_event(raw)
                if event_type != "endpoint":
                    out.append(raw if listed is None else listed.event(raw))
                    continue
                message_url = resolve_endpoint(data, sse_url)
                if message_url is None:
                    log.warning(
                        "legacy endpoint event refused (not on the upstream's origin)",
                        extra={"event": "sse_endpoint_refused"},
                    )
                    raise SSEError("endpoint refused")
                while sessions:
                    await proxy.legacy.close(sessions.pop())
                session = await proxy.legacy.open(connection_id, message_url)
                sessions.append(session)
                url = f"{prefix}/messages?session={session.session_id}"
                out.append(endpoint_event(url, raw))
            return b"".join(out)

        async def renew() -> None:
            for session in sessions:
                await proxy.legacy.renew(session)

        try:
            await self._finish_relay(
                target,
                response,
                True,
                transform=transform,
                every=(max(1.0, proxy.legacy.ttl / 3), renew),
            )
        finally:
            for session in sessions:
                try:
                    await proxy.legacy.close(session)
                except KVError:
                    log.warning("could not end a legacy session binding", extra={"event": "kv"})


class LegacyStreamHandler(LegacyRelayHandler):
    """`…/sse`: the legacy HTTP+SSE stream (2024-11-05 transport)."""

    SUPPORTED_METHODS = ("GET", "OPTIONS")
    ALLOW = "GET, OPTIONS"
    _kind = "sse"

    async def get(self, service: str, credentials: str | None = None) -> None:
        await self._guarded(lambda: self._stream(service, credentials))

    async def _stream(self, service: str, credentials: str | None) -> None:
        target = self._admitted()
        if target is None:
            return
        if target.transport != "sse":
            self._refuse(ProxyRefusal("malformed", _NOT_LEGACY))
            return
        await self._legacy_stream(service, credentials, target)


class LegacyMessagesHandler(RelayHandler):
    """`…/messages?session=…`: client → server messages of a legacy stream."""

    SUPPORTED_METHODS = ("POST", "OPTIONS")
    ALLOW = "POST, OPTIONS"
    _kind = "sse-messages"

    async def post(self, service: str, credentials: str | None = None) -> None:
        await self._guarded(lambda: self._message(service, credentials))

    async def _message(self, service: str, credentials: str | None) -> None:
        target = self._admitted()
        if target is None:
            return
        session_id = self.get_query_argument("session", "") or ""
        message_url = (
            await self.proxy.legacy.lookup(target.connection_id, session_id) if session_id else None
        )
        if message_url is None:
            self._reply(session_not_found_reply(self._request_ids(), legacy=True))
            return
        body: bytes | None = self._body()
        if target.policy is not None:
            admission = await self._gate(target, self._body())
            if admission is None:
                return
            body = admission.body  # answers come on the stream, filtered there
        opened = await self._open(
            "POST",
            target,
            lambda t: with_query(message_url, t.inject_query),
            body,
            timeout=self.proxy.config.legacy_post_timeout,
        )
        if opened is None:
            return
        target, response = opened
        sse = self._start_response(response)
        await self._finish_relay(target, response, sse)
