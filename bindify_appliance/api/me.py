"""`GET /api/v1/me`: who the caller is and how they authenticated."""

from __future__ import annotations

from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.schema import obj, string
from bindify_appliance.api.users import USER, user_json
from bindify_appliance.store import accounts as accounts_store

__all__ = ["MeHandler"]

_ME = obj(
    {"user": USER, "auth": string(enum=("session", "token"))},
    required=("user", "auth"),
)


class MeHandler(ApiHandler):
    @operation("The signed-in user", access="user", tag="me", response=_ME)
    async def get(self) -> None:
        user = await self.ctx.store.run(accounts_store.get_user, self.user.user_id)
        self.write_json({"user": user_json(user), "auth": self.user.auth})
