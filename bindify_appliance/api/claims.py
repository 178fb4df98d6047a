"""`GET /api/v1/claims/{token}`: a new connection's secrets, once, to the user who made it.

After an OAuth connect the callback redirects the browser to `/connections/{id}?claim=TOKEN`;
the same one-time claim is readable here by its owner (DESIGN §5): the first read consumes it,
an unknown or used token is 404, and another user gets 403 without consuming it.
"""

from __future__ import annotations

from bindify_appliance.api.base import operation
from bindify_appliance.api.services import ConnectApiHandler
from bindify_appliance.services.claims import take_claim

__all__ = ["ClaimHandler"]

# The same shape as a connect answer; the component is declared by api/connections.py.
_CLAIMED = {"$ref": "#/components/schemas/ConnectionSecrets"}


class ClaimHandler(ConnectApiHandler):
    @operation(
        "Read a one-time claim: {connection, secret_url, api_key} (consumes it)",
        access="user",
        tag="connections",
        response=_CLAIMED,
        errors=(403,),
    )
    async def get(self, token: str) -> None:
        result = await take_claim(self.ctx.kv, token, self.user.user_id)
        self.write_json(result)
