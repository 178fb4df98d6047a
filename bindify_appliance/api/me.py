"""`GET /api/v1/me`: who the caller is; `DELETE /api/v1/me[?revoke=true]`: delete one's account.

Deleting one's own account with `?revoke=true` runs the same offboarding as an administrator's
"Remove member" (`accounts/offboarding.py`) and answers its report; the last active
administrator cannot delete themselves (409 `last_admin`).
"""

from __future__ import annotations

from bindify_appliance.api.base import operation
from bindify_appliance.api.schema import obj, string
from bindify_appliance.api.services import ConnectApiHandler
from bindify_appliance.api.users import (
    OFFBOARDING,
    REVOKE_PARAMS,
    USER,
    flag,
    user_json,
)
from bindify_appliance.billing.api import BILLING
from bindify_appliance.billing.service import billing_json, billing_service
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.usecases.acting import from_request
from bindify_appliance.usecases.users import delete_user, offboard_user

__all__ = ["MeHandler"]

_ME = obj(
    {
        "user": USER,
        "auth": string(enum=("session", "token")),
        "billing": {**BILLING, "description": "only when billing is on (DESIGN §11)"},
    },
    required=("user", "auth"),
)


class MeHandler(ConnectApiHandler):
    @operation("The signed-in user", access="user", tag="me", response=_ME)
    async def get(self) -> None:
        user = await self.ctx.store.run(accounts_store.get_user, self.user.user_id)
        answer = {"user": user_json(user), "auth": self.user.auth}
        billing = billing_service(self.ctx)  # None when billing is off: no `billing` field
        if billing is not None:
            member = await billing.sync(self.user.user_id)
            if member is not None:
                answer["billing"] = billing_json(member)
        self.write_json(answer)

    @operation(
        "Delete your own account (with ?revoke=true: revoke your grants at the providers)",
        access="user",
        tag="me",
        status=204,
        query=REVOKE_PARAMS,
        also=((200, OFFBOARDING),),
        errors=(409,),
        description="Without revoke: 204. With revoke=true: 200 and the Offboarding report "
        "(see DELETE /api/v1/users/{id}).",
    )
    async def delete(self) -> None:
        confirm = flag(self, "confirm")
        if flag(self, "revoke"):
            report = await offboard_user(
                self.services, from_request(self), self.user.user_id, confirm=confirm
            )
            self.write_json(report.json())
            return
        await delete_user(self.services, from_request(self), self.user.user_id)
        self.write_no_content()
