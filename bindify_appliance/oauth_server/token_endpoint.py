"""`POST /oauth/token` (RFC 6749 §3.2, OAuth 2.1): `authorization_code` and `refresh_token`.

A code is taken (consumed) before anything is checked, so a wrong verifier or redirect URI
spends it: it is one-time whatever happens. It must then be this issuer's, this client's,
for this exact redirect URI, and its S256 challenge must match the verifier; a `resource`, when
sent, must be the code's. A code presented a second time ends the grant it made. A refresh
token rotates; presenting a spent one ends its grant (`grants.refresh_grant`).

Answers are RFC 6749 JSON: tokens with `no-store`, errors as `{"error", "error_description"}`
(`invalid_client` is 401, with a Basic challenge when the client tried Basic).
"""

from __future__ import annotations

import logging

from bindify_appliance import audit
from bindify_appliance.errors import KVError, StoreError
from bindify_appliance.oauth_server.client_auth import ClientAuthError, authenticate_client
from bindify_appliance.oauth_server.clients import OAuthClient
from bindify_appliance.oauth_server.codes import mark_spent, spent_grant, take_code
from bindify_appliance.oauth_server.grants import (
    IssuedTokens,
    RefreshRefused,
    issue_grant,
    refresh_grant,
)
from bindify_appliance.oauth_server.http import OAuthEndpoint
from bindify_appliance.oauth_server.pkce import verifier_matches
from bindify_appliance.oauth_server.tokens import token_kind
from bindify_appliance.store import oauth_server as rows

__all__ = ["TokenHandler", "grant_ended"]

log = logging.getLogger(__name__)


async def grant_ended(
    handler: OAuthEndpoint, grant_id: str, user_id: str, connection_id: str, reason: str
) -> None:
    """The audit entry of a grant the token endpoint or the client ended."""
    await audit.by_request(
        handler,
        "oauth.revoke",
        audit.Target("connection", connection_id),
        who=audit.user(user_id),
        detail={"grant": grant_id, "reason": reason},
    )


class _Refused(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class TokenHandler(OAuthEndpoint):
    ALLOW_METHODS = "POST, OPTIONS"

    def _arg(self, name: str) -> str | None:
        values = self.request.body_arguments.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise _Refused("invalid_request", f"{name} is repeated")
        return values[0].decode("utf-8", "replace")

    async def post(self) -> None:
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            self.oauth_error(400, "invalid_request", "send the request form-encoded")
            return
        try:
            client = await authenticate_client(
                self.ctx,
                self.request.headers.get("Authorization", ""),
                self._arg("client_id"),
                self._arg("client_secret"),
            )
            grant_type = self._arg("grant_type")
            if grant_type == "authorization_code":
                issued = await self._exchange_code(client)
            elif grant_type == "refresh_token":
                issued = await self._refresh(client)
            elif not grant_type:
                raise _Refused("invalid_request", "grant_type is required")
            else:
                raise _Refused("unsupported_grant_type", "use authorization_code or refresh_token")
        except ClientAuthError as failed:
            status = 401 if failed.error == "invalid_client" else 400
            if failed.basic:
                self.set_header("WWW-Authenticate", 'Basic realm="bindify"')
            self.oauth_error(status, failed.error, failed.description)
            return
        except _Refused as refused:
            self.oauth_error(refused.status, refused.error, refused.description)
            return
        except (StoreError, KVError):
            self.oauth_error(503, "temporarily_unavailable", "try again shortly")
            return
        self.send_json(
            {
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "refresh_token": issued.refresh_token,
                "scope": "mcp",
            }
        )

    async def _exchange_code(self, client: OAuthClient) -> IssuedTokens:
        ctx = self.ctx
        code = self._arg("code")
        if not code:
            raise _Refused("invalid_request", "code is required")
        granted = await take_code(ctx, code)
        if granted is None:
            spent = await spent_grant(ctx, code)
            if spent is not None:
                found = await ctx.store.run(rows.get_grant, spent)
                if found is not None and await ctx.store.run(rows.delete_grant, spent):
                    await grant_ended(self, spent, found.user_id, found.connection_id, "code_reuse")
            raise _Refused("invalid_grant", "the code is unknown, expired or already used")
        if granted.issuer != ctx.settings.base_url or granted.client_id != client.client_id:
            raise _Refused("invalid_grant", "the code was not issued to this client")
        if self._arg("redirect_uri") != granted.redirect_uri:
            raise _Refused("invalid_grant", "redirect_uri does not match the authorization")
        if not verifier_matches(self._arg("code_verifier"), granted.code_challenge):
            raise _Refused("invalid_grant", "the PKCE code_verifier is missing or wrong")
        resource = self._arg("resource")
        expected = granted.resource or f"{ctx.settings.base_url}/mcp/{granted.service}"
        if resource is not None and resource.rstrip("/") != expected.rstrip("/"):
            raise _Refused("invalid_target", "resource does not match the authorization")
        issued = await issue_grant(ctx, granted, client.client_name)
        if issued is None:
            raise _Refused("invalid_grant", "the connection no longer exists")
        try:
            await mark_spent(ctx, code, issued.grant_id)
        except KVError:  # the code is spent already; only reuse detection is lost
            log.warning("could not mark a code spent", extra={"event": "oauth_code_spent"})
        await audit.by_request(
            self,
            "oauth.grant",
            audit.Target("connection", granted.connection_id),
            who=audit.user(granted.user_id),
            detail={"grant": issued.grant_id, "client": client.client_id[:200]},
        )
        return issued

    async def _refresh(self, client: OAuthClient) -> IssuedTokens:
        token = self._arg("refresh_token")
        if not token:
            raise _Refused("invalid_request", "refresh_token is required")
        if token_kind(token) != "refresh":
            raise _Refused("invalid_grant", "the refresh token is unknown, expired or revoked")
        try:
            return await refresh_grant(self.ctx, token, client.client_id)
        except RefreshRefused as refused:
            if refused.reused and refused.grant is not None:
                grant = refused.grant
                await grant_ended(
                    self, grant.id, grant.user_id, grant.connection_id, "refresh_reuse"
                )
            raise _Refused(
                "invalid_grant", "the refresh token is unknown, expired or revoked"
            ) from None
