"""Keeping a non-expiring OAuth grant alive (Todoist): an MCP `initialize` with the stored token,
and the session it opened ended again.

Called through `OAuthRefresher.keep_alive` (the scheduled job, `jobs.py`); it uses the
refresher's own ways to open a row's credential and to flag a dead grant (`Refreshing`).

Invariants:
- Only managed OAuth rows that are neither flagged nor disabled are touched.
- 2xx → `keepalive/success`; 401/403 → needs-reconnect; anything else is transient.
- A session the `initialize` opened (`Mcp-Session-Id`) is ended with a DELETE on the same
  endpoint with the same credential (MCP Streamable HTTP): best effort, it never changes the
  outcome. Nothing here logs the token, the session id or a body (status or reason only).
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any, Final, Protocol

from bindify_appliance.errors import OutboundError
from bindify_appliance.outbound import OutboundClient, OutboundResponse
from bindify_appliance.services.apikeys import MCP_PROTOCOL_VERSION
from bindify_appliance.services.definitions import ServiceDefinition
from bindify_appliance.services.mcp_answers import rpc_result
from bindify_appliance.store import refresh as units
from bindify_appliance.store.events import record_event
from bindify_appliance.store.refresh import RefreshRow

if TYPE_CHECKING:
    from bindify_appliance.context import AppContext
    from bindify_appliance.crypto.credentials import Credentials

__all__ = ["Refreshing", "keep_alive"]

log = logging.getLogger(__name__)

SESSION_END_TIMEOUT: Final = 10.0


class Refreshing(Protocol):
    """What the keep-alive uses of the refresher (`services/refresh.py`)."""

    _ctx: AppContext
    _outbound: OutboundClient

    def _open(self, row: RefreshRow, creds: Credentials | None) -> dict[str, Any] | None: ...

    async def _fatal(
        self,
        row: RefreshRow,
        reason: str,
        detail: str,
        category: str,
        status: int | None = None,
        *,
        event_type: str = "token_refresh",
    ) -> None: ...


def _header_token(value: object) -> str | None:
    """`value` if it is safe to send back as a header: 1 to 256 visible ASCII characters.

    MCP session ids are visible ASCII by definition; anything else is not echoed upstream.
    """
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        return None
    return value if all("\x21" <= ch <= "\x7e" for ch in value) else None


def _negotiated_version(answer: OutboundResponse) -> str:
    """The `protocolVersion` of the `initialize` result (JSON or SSE), else the one we asked."""
    try:
        version = rpc_result(answer, 1).get("protocolVersion")
    except ValueError:
        return MCP_PROTOCOL_VERSION
    return _header_token(version) or MCP_PROTOCOL_VERSION


async def keep_alive(refresher: Refreshing, connection_id: str, service: ServiceDefinition) -> bool:
    """MCP `initialize` with the stored token of a non-expiring grant (Todoist).

    2xx → `keepalive/success`; 401/403 → needs-reconnect (`keepalive/auth_failed`);
    anything else → `keepalive/transient_error`. True on success. A session the 2xx answer
    opened is ended first (`_end_session`, best effort, never changes the outcome).
    """
    row = await refresher._ctx.store.run(units.read_refresh_row, connection_id)
    if row is None or row.key_storage_mode != "managed" or row.auth_type != "oauth":
        return False
    if row.needs_reconnect_at is not None or row.disabled:
        return False  # flagged or disabled since the job listed it: nothing to keep alive
    payload = refresher._open(row, None)
    token = payload.get("access_token") if payload else None
    if not isinstance(token, str) or not token:
        return False
    injection = service.oauth.injection if service.oauth else None
    credential = injection.headers(token) if injection else {"Authorization": f"Bearer {token}"}
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        **credential,
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": MCP_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bindify-keepalive", "version": "1"},
        },
    }
    now = refresher._ctx.clock.now()
    try:
        answer = await refresher._outbound.request(
            "POST", service.mcp_url, headers=headers, json_body=body, timeout=30
        )
    except OutboundError as exc:
        refresher._ctx.metrics.refresh(service.id, "keepalive_transient_error")
        reason = exc.reason
        await refresher._ctx.store.run(
            lambda: record_event(
                connection_id,
                user_id=row.user_id,
                event_type="keepalive",
                category="transient_error",
                detail=f"Keep-alive failed: {reason}",
                now=now,
            )
        )
        return False
    if 200 <= answer.status < 300:
        kept = "keepalive_success"
    elif answer.status in (401, 403):
        kept = "keepalive_auth_failed"
    else:
        kept = "keepalive_transient_error"
    refresher._ctx.metrics.refresh(service.id, kept)
    if 200 <= answer.status < 300:
        await _end_session(refresher._outbound, connection_id, service.mcp_url, credential, answer)
        await refresher._ctx.store.run(
            functools.partial(
                units.note_keepalive,
                connection_id,
                user_id=row.user_id,
                now=now,
                detail=f"Keep-alive for {service.id}",
            )
        )
        return True
    if answer.status in (401, 403):
        await refresher._fatal(
            row,
            "the provider no longer accepts the token",
            f"Keep-alive refused: {answer.status}",
            "auth_failed",
            answer.status,
            event_type="keepalive",
        )
        return False
    await refresher._ctx.store.run(
        lambda: record_event(
            connection_id,
            user_id=row.user_id,
            event_type="keepalive",
            category="transient_error",
            detail=f"Keep-alive failed: {answer.status}",
            upstream_status=answer.status if 100 <= answer.status <= 599 else None,
            now=now,
        )
    )
    return False


async def _end_session(
    outbound: OutboundClient,
    connection_id: str,
    mcp_url: str,
    credential: dict[str, str],
    answer: OutboundResponse,
) -> None:
    """DELETE the MCP session `answer` opened, if it opened one (MCP Streamable HTTP).

    Best effort: any answer (a 405 means the server keeps sessions itself) or failure is
    only logged, by status or reason — never the token, the session id or a body. Same
    outbound client (SSRF guard) and endpoint as the `initialize`; no redirect is followed.
    """
    session_id = _header_token(answer.headers.get("Mcp-Session-Id"))
    if session_id is None:
        return
    headers = {
        **credential,
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": _negotiated_version(answer),
    }
    try:
        ended = await outbound.request(
            "DELETE",
            mcp_url,
            headers=headers,
            follow_redirects=False,
            timeout=SESSION_END_TIMEOUT,
        )
    except OutboundError as exc:
        log.info(
            "keep-alive session not ended",
            extra={"connection_id": connection_id, "event": "keepalive", "reason": exc.reason},
        )
        return
    if not (200 <= ended.status < 300 or ended.status in (404, 405)):
        # 404: already gone; 405: the server does not let clients end sessions.
        log.info(
            "keep-alive session not ended",
            extra={
                "connection_id": connection_id,
                "event": "keepalive",
                "upstream_status": ended.status,
            },
        )
