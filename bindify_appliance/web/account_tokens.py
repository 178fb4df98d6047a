"""The account's "API tokens" page: personal API tokens for `/api/v1` (DESIGN §5).

- `GET /account/tokens` — the signed-in user's live tokens (name, created, last used) and the
  form to create one; the same store query as `GET /api/v1/tokens`.
- `POST /account/tokens` — creates one through `usecases.accounts.create_personal_token`
  (the API's operation: name rules, the per-user cap, the `token.create` audit) and answers
  the page itself with the token shown once (never in a URL, a redirect or a log;
  `Cache-Control: no-store`).
- `POST /account/tokens/{id}/revoke` — through `usecases.accounts.revoke_personal_token`
  (`token.delete`); another user's token, or one already revoked, is "not found" (no
  existence oracle).

A refused name re-renders the page (400, or 409 at the cap) with the message; nothing is made.
"""

from __future__ import annotations

from typing import Any

from tornado.routing import URLSpec

from bindify_appliance.accounts import personal_tokens
from bindify_appliance.accounts.personal_tokens import MAX_NAME_LENGTH
from bindify_appliance.api.tokens import token_json
from bindify_appliance.context import AppContext
from bindify_appliance.errors import ConflictError, HTTPFacingError, NotFound
from bindify_appliance.routes import route
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.usecases.accounts import create_personal_token, revoke_personal_token
from bindify_appliance.usecases.acting import from_request
from bindify_appliance.web.pages import UiPage

__all__ = ["account_token_routes"]

_LISTED = 200  # the cap on live tokens is far lower (personal_tokens.MAX_ACTIVE_TOKENS)


class _Tokens(UiPage):
    async def _show(self, status: int = 200, **values: Any) -> None:
        who = self.member()
        rows = await personal_tokens.list_tokens(self.ctx.store, who.user_id, None, _LISTED)
        values.setdefault("created", None)
        values.setdefault("error", None)
        values.setdefault("name", "")
        done = self.get_query_argument("done", "") if status == 200 else ""
        self.render_page(
            "account_tokens.html",
            status=status,
            tokens=[token_json(r) for r in rows],
            max_name=MAX_NAME_LENGTH,
            flash="Token revoked: it no longer works." if done == "revoked" else None,
            **values,
        )


class TokensPage(_Tokens):
    async def get(self) -> None:
        self.member()
        await self._show()

    async def post(self) -> None:
        who = self.member()
        name = self.form("name", 4 * MAX_NAME_LENGTH)
        try:
            record, token = await create_personal_token(
                self.ctx, from_request(self), who.user_id, name
            )
        except HTTPFacingError as exc:
            await self._show(exc.status, error=f"The token's {exc.public_message}.", name=name)
            return
        except ConflictError as exc:
            await self._show(409, error=f"No token was created: {exc}.", name=name)
            return
        self.set_header("Cache-Control", "no-store")
        await self._show(201, created={"name": record.name, "token": token})


class RevokeTokenPage(_Tokens):
    async def post(self, id: str) -> None:
        self.member()
        if not await revoke_personal_token(self.ctx, from_request(self), id[:64]):
            raise NotFound("There is no such token.")
        self.redirect("/account/tokens?done=revoked", status=303)


def account_token_routes(ctx: AppContext, services: ConnectServices) -> list[URLSpec]:
    return [
        route("/account/tokens", TokensPage, ctx, services=services),
        route("/account/tokens/{id}/revoke", RevokeTokenPage, ctx, services=services),
    ]
