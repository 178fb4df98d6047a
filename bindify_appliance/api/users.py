"""Users (admin): `GET/POST /api/v1/users`, `GET/PATCH/DELETE /api/v1/users/{id}`.

`POST` without a password creates an invited user and answers the one-time `invite_url`
(shown once). `PATCH` takes `{role?, disabled?}`; disabling ends the user's sessions and tokens
at once. `DELETE …?revoke=true` offboards (`accounts/offboarding.py`): grants revoked at the
providers, a per-connection report answered. The last active administrator cannot be
demoted, disabled or deleted (409 `last_admin`). No response ever contains a password hash.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance.accounts.passwords import MAX_PASSWORD_LENGTH
from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.pagination import (
    PAGE_PARAMS,
    as_timestamp,
    list_schema,
    page_json,
    requested_page,
)
from bindify_appliance.api.schema import (
    ID,
    TIMESTAMP,
    Named,
    boolean,
    nullable,
    obj,
    string,
)
from bindify_appliance.api.services import ConnectApiHandler
from bindify_appliance.clock import iso
from bindify_appliance.errors import InvalidRequest
from bindify_appliance.mail.outbox import mailer_for
from bindify_appliance.services.revoke import RESULTS
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store.accounts import UserRecord
from bindify_appliance.store.models import ROLES
from bindify_appliance.usecases.accounts import create_user
from bindify_appliance.usecases.acting import from_request
from bindify_appliance.usecases.users import delete_user, offboard_user, update_user

__all__ = [
    "OFFBOARDING",
    "REVOKE_PARAMS",
    "USER",
    "UserHandler",
    "UsersHandler",
    "flag",
    "user_json",
]

USER = Named(
    "User",
    obj(
        {
            "id": ID,
            "email": string(fmt="email"),
            "role": string(enum=ROLES),
            "status": string(enum=("active", "invited", "disabled")),
            "disabled_at": nullable(TIMESTAMP),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        },
        required=("id", "email", "role", "status", "disabled_at", "created_at", "updated_at"),
    ),
)

_CREATE = obj(
    {
        "email": string(min_length=3, max_length=254, fmt="email"),
        "role": string(enum=ROLES),
        "password": string(
            max_length=MAX_PASSWORD_LENGTH, description="omit to get an invite link instead"
        ),
    },
    required=("email", "role"),
)
_CREATED = obj(
    {"user": USER, "invite_url": nullable(string(description="one-time link, 7 days"))},
    required=("user", "invite_url"),
)
_PATCH = obj({"role": string(enum=ROLES), "disabled": boolean()})
OFFBOARDING = Named(
    "Offboarding",
    obj(
        {
            "user_id": ID,
            "deleted": boolean(),
            "connections": {
                "type": "array",
                "items": obj(
                    {
                        "id": ID,
                        "service": string(),
                        "label": nullable(string()),
                        "auth_type": string(),
                        "key_storage_mode": string(),
                        "result": string(enum=RESULTS),
                        "revoke_at": nullable(
                            string(description="the provider's page to revoke it by hand")
                        ),
                        "detail": nullable(string()),
                    },
                    required=("id", "service", "result", "revoke_at"),
                ),
            },
        },
        required=("user_id", "deleted", "connections"),
    ),
)
REVOKE_PARAMS = [
    {
        "name": "revoke",
        "in": "query",
        "required": False,
        "schema": {
            "type": "boolean",
            "description": "revoke each connection's grant at its provider first; answers 200 "
            "with the per-connection report instead of 204",
        },
    },
    {
        "name": "confirm",
        "in": "query",
        "required": False,
        "schema": {
            "type": "boolean",
            "description": "with revoke: delete even connections whose revocation failed",
        },
    },
]


def flag(handler: ApiHandler, name: str) -> bool:
    """A boolean query parameter: `true`/`1` or `false`/`0`/absent; anything else is 400."""
    value = handler.get_query_argument(name, None)
    if value is None or value.lower() in ("false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise InvalidRequest(f"{name} must be true or false", field=name)


_ONE = obj({"user": USER}, required=("user",))


def user_json(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "status": user.status,
        "disabled_at": iso(user.disabled_at) if user.disabled_at else None,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
    }


class UsersHandler(ApiHandler):
    @operation(
        "List users",
        access="admin",
        tag="users",
        query=PAGE_PARAMS,
        response=list_schema(USER),
    )
    async def get(self) -> None:
        after, limit = requested_page(self, (as_timestamp, str))
        rows = await self.ctx.store.run(accounts_store.list_users, after, limit + 1)
        self.write_json(page_json(rows, limit, lambda u: (iso(u.created_at), u.id), user_json))

    @operation(
        "Create a user (with a password) or invite one (without)",
        access="admin",
        tag="users",
        body=_CREATE,
        status=201,
        response=_CREATED,
        errors=(409,),
    )
    async def post(self) -> None:
        created = await create_user(
            self.ctx,
            from_request(self),
            email=self.body["email"],
            role=self.body["role"],
            password=self.body.get("password"),
            mailer=mailer_for(self.ctx),
        )
        self.write_json({"user": user_json(created.user), "invite_url": created.invite_url}, 201)


class UserHandler(ConnectApiHandler):
    @operation("Read a user", access="admin", tag="users", response=_ONE)
    async def get(self, id: str) -> None:
        user = await self.ctx.store.run(accounts_store.get_user, id)
        self.write_json({"user": user_json(user)})

    @operation(
        "Change a user's role or disable/enable them",
        access="admin",
        tag="users",
        body=_PATCH,
        response=_ONE,
        errors=(409,),
    )
    async def patch(self, id: str) -> None:
        user = await update_user(
            self.services,
            from_request(self),
            id,
            role=self.body.get("role"),
            disabled=self.body.get("disabled"),
        )
        self.write_json({"user": user_json(user)})

    @operation(
        "Delete a user with their tokens, sessions and connections",
        access="admin",
        tag="users",
        status=204,
        query=REVOKE_PARAMS,
        also=((200, OFFBOARDING),),
        errors=(409,),
        description="With ?revoke=true (offboarding, DESIGN §15) the member is disabled, each "
        "connection's grant is revoked at its provider, and the answer is 200 with the "
        "Offboarding report: per connection revoked, not_supported, zero_knowledge or api_key "
        "(with the provider's page to revoke it by hand), or failed (that connection stays, "
        "disabled, and so does the member, until a retry succeeds or ?confirm=true).",
    )
    async def delete(self, id: str) -> None:
        confirm = flag(self, "confirm")
        if flag(self, "revoke"):
            report = await offboard_user(self.services, from_request(self), id, confirm=confirm)
            self.write_json(report.json())
            return
        await delete_user(self.services, from_request(self), id)
        self.write_no_content()
