"""Personal API tokens (self): `GET/POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}`.

A token is shown once, in the `POST` answer. Everyone manages only their own tokens: another
user's token id is simply not found (no existence oracle). Revocation takes effect on the very
next request.
"""

from __future__ import annotations

from typing import Any

from bindify_appliance import audit
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

__all__ = ["TOKEN", "TokenHandler", "TokensHandler", "create_own_token", "revoke_own_token"]

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


async def create_own_token(handler: Any, user_id: str, name: str) -> tuple[TokenRecord, str]:
    """Create a token for the caller and audit it (the API's POST and the tokens page).

    Raises HTTPFacingError (a bad name) or ConflictError (too many live tokens): nothing made.
    """
    ctx = handler.ctx
    record, token = await personal_tokens.create_token(ctx.store, ctx.clock, user_id, name)
    await audit.by_request(handler, "token.create", audit.Target("personal_token", record.id))
    return record, token


async def revoke_own_token(handler: Any, user_id: str, token_id: str) -> bool:
    """Revoke one of the caller's own tokens and audit it; False when they hold no such one."""
    ctx = handler.ctx
    if not await personal_tokens.revoke_token(ctx.store, ctx.clock, user_id, token_id):
        return False
    await audit.by_request(handler, "token.delete", audit.Target("personal_token", token_id))
    return True


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
        record, token = await create_own_token(self, self.user.user_id, self.body["name"])
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
        if not await revoke_own_token(self, self.user.user_id, id):
            raise NotFoundError("no such token")
        self.write_no_content()
