"""Personal API tokens (self): `GET/POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}`.

A token is shown once, in the `POST` answer. Everyone manages only their own tokens: another
user's token id is simply not found (no existence oracle). Revocation takes effect on the very
next request.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance.accounts import personal_tokens
from bindify_appliance.accounts.personal_tokens import MAX_NAME_LENGTH
from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.pagination import (
    PAGE_PARAMS,
    as_timestamp,
    list_schema,
    page_json,
    requested_page,
)
from bindify_appliance.api.schema import ID, TIMESTAMP, Named, nullable, obj, string
from bindify_appliance.clock import iso
from bindify_appliance.errors import NotFoundError
from bindify_appliance.store.sessions import TokenRecord
from bindify_appliance.usecases.accounts import create_personal_token, revoke_personal_token
from bindify_appliance.usecases.acting import from_request

__all__ = ["TOKEN", "TokenHandler", "TokensHandler", "token_json"]

TOKEN = Named(
    "PersonalToken",
    obj(
        {
            "id": ID,
            "name": string(),
            "created_at": TIMESTAMP,
            "last_used_at": nullable(TIMESTAMP),
        },
        required=("id", "name", "created_at", "last_used_at"),
    ),
)
_CREATE = obj({"name": string(min_length=1, max_length=MAX_NAME_LENGTH)}, required=("name",))
_CREATED = obj(
    {
        "id": ID,
        "token": string(description="bndpat_…; shown only in this answer"),
        "name": string(),
        "created_at": TIMESTAMP,
    },
    required=("id", "token", "name", "created_at"),
)


def token_json(token: TokenRecord) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at) if token.last_used_at else None,
    }


class TokensHandler(ApiHandler):
    @operation(
        "List your personal API tokens",
        access="user",
        tag="tokens",
        query=PAGE_PARAMS,
        response=list_schema(TOKEN),
    )
    async def get(self) -> None:
        after, limit = requested_page(self, (as_timestamp, str))
        rows = await personal_tokens.list_tokens(
            self.ctx.store, self.user.user_id, after, limit + 1
        )
        self.write_json(page_json(rows, limit, lambda t: (iso(t.created_at), t.id), token_json))

    @operation(
        "Create a personal API token (shown once)",
        access="user",
        tag="tokens",
        body=_CREATE,
        status=201,
        response=_CREATED,
        errors=(409,),
    )
    async def post(self) -> None:
        record, token = await create_personal_token(
            self.ctx, from_request(self), self.user.user_id, self.body["name"]
        )
        self.write_json(
            {
                "id": record.id,
                "token": token,
                "name": record.name,
                "created_at": iso(record.created_at),
            },
            201,
        )


class TokenHandler(ApiHandler):
    @operation("Revoke one of your tokens", access="user", tag="tokens", status=204)
    async def delete(self, id: str) -> None:
        if not await revoke_personal_token(self.ctx, from_request(self), id):
            raise NotFoundError("no such token")
        self.write_no_content()
