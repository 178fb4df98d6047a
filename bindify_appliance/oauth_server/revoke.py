"""`POST /oauth/revoke` (RFC 7009): either token; a refresh token ends its whole grant.

The client authenticates as at the token endpoint; a token of another client, an unknown or
malformed token all answer 200 and change nothing (RFC 7009 §2.2), so the endpoint tells no
one whether a token exists.
"""

from __future__ import annotations

from bindify_appliance.errors import StoreError
from bindify_appliance.oauth_server.client_auth import ClientAuthError, authenticate_client
from bindify_appliance.oauth_server.http import OAuthEndpoint
from bindify_appliance.oauth_server.token_endpoint import grant_ended
from bindify_appliance.oauth_server.tokens import token_hash, token_kind
from bindify_appliance.store import oauth_server as rows

__all__ = ["RevokeHandler"]


class RevokeHandler(OAuthEndpoint):
    ALLOW_METHODS = "POST, OPTIONS"

    def _arg(self, name: str) -> str | None:
        values = self.request.body_arguments.get(name)
        return values[0].decode("utf-8", "replace") if values else None

    async def post(self) -> None:
        ctx = self.ctx
        try:
            client = await authenticate_client(
                ctx,
                self.request.headers.get("Authorization", ""),
                self._arg("client_id"),
                self._arg("client_secret"),
            )
        except ClientAuthError as failed:
            if failed.basic:
                self.set_header("WWW-Authenticate", 'Basic realm="bindify"')
            status = 401 if failed.error == "invalid_client" else 400
            self.oauth_error(status, failed.error, failed.description)
            return
        token = self._arg("token")
        if not token:
            self.oauth_error(400, "invalid_request", "token is required")
            return
        kind = token_kind(token)
        if kind in ("access", "refresh"):
            try:
                found = await ctx.store.run(
                    rows.token_grant, token_hash(token), ctx.settings.base_url
                )
                if found is not None and found[0].client_id == client.client_id:
                    grant, row = found
                    if kind == "refresh":
                        if await ctx.store.run(rows.delete_grant, grant.id):
                            await grant_ended(
                                self, grant.id, grant.user_id, grant.connection_id, "client"
                            )
                    else:
                        await ctx.store.run(rows.delete_token, row.token_hash)
            except StoreError:
                self.oauth_error(503, "temporarily_unavailable", "try again shortly")
                return
        self.set_status(200)
        self.finish()
