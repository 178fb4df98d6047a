"""Your own sign-in sessions: `GET /api/v1/sessions`, `DELETE /api/v1/sessions/{id}` (DESIGN §15).

A member lists the browser sessions signed in as them (when, from which address and browser)
and ends any of them; the next request of that browser is signed out, on every instance.

Invariants: a session's stored id is the SHA-256 of its cookie token; the API shows neither, but
a public id derived from the stored one (`public_session_id`), so nothing listed here ever
helps to forge or find a cookie. Only the caller's own sessions are listed or ended; another
user's id is "not found" (no oracle), administrators included. `end_own_session` is the one
ending step (the account page's "End" button uses it too): it deletes the row and records
`session.end` in the audit trail (target: the public id; `detail.current` when it was the
caller's own browser).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from bindify_appliance import audit
from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.pagination import PAGE_PARAMS, list_schema, requested_page, slice_json
from bindify_appliance.api.schema import TIMESTAMP, Named, boolean, nullable, obj, string
from bindify_appliance.clock import iso
from bindify_appliance.errors import NotFound
from bindify_appliance.store import sessions as session_store
from bindify_appliance.store.models import Session

__all__ = [
    "SessionHandler",
    "SessionsHandler",
    "end_own_session",
    "public_session_id",
    "session_json",
]

SESSION = Named(
    "Session",
    obj(
        {
            "id": string(description="a public id (not the cookie, not its hash)"),
            "created_at": TIMESTAMP,
            "last_seen_at": TIMESTAMP,
            "expires_at": TIMESTAMP,
            "ip": nullable(string()),
            "user_agent": nullable(string()),
            "current": boolean(),
        },
        required=(
            "id",
            "created_at",
            "last_seen_at",
            "expires_at",
            "ip",
            "user_agent",
            "current",
        ),
    ),
)


def public_session_id(stored_id: str) -> str:
    return hashlib.sha256(b"bindify-session-public-id:" + stored_id.encode()).hexdigest()[:32]


def session_json(row: Session, current_id: str | None) -> dict[str, Any]:
    return {
        "id": public_session_id(row.id),
        "created_at": iso(row.created_at),
        "last_seen_at": iso(row.last_seen_at),
        "expires_at": iso(row.expires_at),
        "ip": row.ip,
        "user_agent": (row.user_agent or "")[:200] or None,
        "current": row.id == current_id,
    }


async def end_own_session(
    handler: Any, user_id: str, public_id: str, current_id: str | None
) -> bool:
    """End the caller's session listed as `public_id`; False when it is not theirs (or gone)."""
    ctx = handler.ctx
    mine = await ctx.store.run(session_store.list_user_sessions, user_id, ctx.clock.now())
    found = next((s for s in mine if hmac.compare_digest(public_session_id(s.id), public_id)), None)
    if found is None:
        return False
    await ctx.store.run(session_store.delete_session, found.id)
    await audit.by_request(
        handler,
        "session.end",
        audit.Target("session", public_session_id(found.id)),
        detail={"current": found.id == current_id},
    )
    return True


class _Own(ApiHandler):
    async def mine(self) -> list[Session]:
        return await self.ctx.store.run(
            session_store.list_user_sessions, self.user.user_id, self.ctx.clock.now()
        )

    @property
    def current_id(self) -> str | None:
        return self.user.credential_id if self.user.auth == "session" else None


class SessionsHandler(_Own):
    @operation(
        "Your sign-in sessions",
        access="user",
        tag="me",
        query=PAGE_PARAMS,
        response=list_schema(SESSION),
    )
    async def get(self) -> None:
        after, limit = requested_page(self, (str,))
        current = self.current_id
        self.write_json(
            slice_json(
                await self.mine(),
                after,
                limit,
                lambda s: public_session_id(s.id),
                lambda s: session_json(s, current),
            )
        )


class SessionHandler(_Own):
    @operation(
        "End one of your sign-in sessions (effective at once)",
        access="user",
        tag="me",
        status=204,
    )
    async def delete(self, id: str) -> None:
        if not await end_own_session(self, self.user.user_id, id[:64], self.current_id):
            raise NotFound("session not found")
        self.write_no_content()
