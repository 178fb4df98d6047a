"""Single sign-on login: the authorization-code flow and who may sign in as whom.

Flow: `/login/oidc` → `begin()` stores {nonce, PKCE verifier, next} in the KV under the hash of
a random `state` (10 minutes, one use) and returns the provider's authorization URL; the same
state goes into a short-lived signed cookie, binding the flow to this browser (a callback URL
pasted into another browser fails). `/login/oidc/callback` → `finish()` consumes the state
(get-and-delete), exchanges the code, verifies the ID token (`accounts.oidc`) and resolves the
user:

1. an identity already linked by (issuer, subject) signs in as its user;
2. otherwise a *verified* email that a local account has links the identity to that account
   (an unverified email never links: anyone can claim any address at some providers), but only
   when the email's domain is in `BINDIFY_OIDC_ALLOWED_DOMAINS` (when that is set), and never
   to an administrator: an admin account is not taken over by an email a provider vouches for;
   the page says an administrator signs in with their password, and nothing changes;
3. otherwise, with a verified email, the user is provisioned with `BINDIFY_OIDC_DEFAULT_ROLE`
   when the email's domain is in `BINDIFY_OIDC_ALLOWED_DOMAINS` or one of the token's groups
   (`BINDIFY_OIDC_GROUPS_CLAIM`) is in `BINDIFY_OIDC_ALLOWED_GROUPS`;
4. otherwise the sign-in is refused. Disabled users are refused whichever way they matched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from bindify_appliance.accounts.oidc import Fetch, OidcClient
from bindify_appliance.accounts.tokens import hash_token, new_token
from bindify_appliance.accounts.users import normalize_email
from bindify_appliance.clock import Clock
from bindify_appliance.config import Settings
from bindify_appliance.errors import Forbidden, HTTPFacingError, OidcError
from bindify_appliance.kv.base import ANONYMOUS, KVStore
from bindify_appliance.store import Store
from bindify_appliance.store import accounts as accounts_store

__all__ = ["CALLBACK_PATH", "MAX_NEXT", "STATE_COOKIE", "SingleSignOn", "SsoOutcome", "safe_next"]

log = logging.getLogger(__name__)

CALLBACK_PATH: Final = "/login/oidc/callback"
STATE_COOKIE: Final = "bindify_oidc"
STATE_TTL: Final = 600
_SCOPES: Final = "openid email profile"
_MAX_STATE: Final = 64


# An OAuth authorize request (PKCE challenge, state, resource, client URL) fits well within.
MAX_NEXT = 2048


def safe_next(value: str | None) -> str:
    """A same-origin path to go to after sign-in; anything else becomes "/"."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 or c == "\x7f" for c in value)
        or len(value) > MAX_NEXT
    ):
        return "/"
    return value


@dataclass(frozen=True)
class SsoOutcome:
    user_id: str
    how: str  # "existing" | "linked" | "provisioned"
    next: str


def _verified_email(claims: dict[str, Any]) -> str | None:
    verified = claims.get("email_verified")
    email = claims.get("email")
    if not isinstance(email, str) or verified not in (True, "true"):
        return None
    try:
        return normalize_email(email)
    except HTTPFacingError:
        return None


def _groups(claims: dict[str, Any], claim: str) -> set[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {g for g in value if isinstance(g, str)}
    return set()


class SingleSignOn:
    """The configured issuer's login flow (None of this runs when SSO is not configured)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        kv: KVStore,
        clock: Clock,
        fetch: Fetch | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.kv = kv
        self.clock = clock
        self.redirect_uri = settings.base_url + CALLBACK_PATH
        self.client = OidcClient(
            settings.oidc_issuer,
            settings.oidc_client_id,
            settings.oidc_client_secret,
            clock,
            fetch,
        )

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.oidc_issuer and settings.oidc_client_id)

    async def begin(self, next_path: str | None) -> tuple[str, str]:
        """(authorization URL, state for the browser cookie)."""
        meta = await self.client.metadata()
        state = new_token()
        nonce = new_token()
        verifier = new_token() + new_token()  # 86 characters, within RFC 7636's 43..128
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        record = json.dumps({"nonce": nonce, "verifier": verifier, "next": safe_next(next_path)})
        # Nobody is signed in yet: the anonymous budget. A full budget raises KVFullError
        # (the caller answers 429) rather than dropping someone else's sign-in state.
        await self.kv.set(
            f"oidc:state:{hash_token(state)}", record, ttl=STATE_TTL, budget=ANONYMOUS
        )
        params = {
            "response_type": "code",
            "client_id": self.settings.oidc_client_id,
            "redirect_uri": self.redirect_uri,
            "scope": _SCOPES,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in meta.authorization_endpoint else "?"
        return meta.authorization_endpoint + separator + urlencode(params), state

    async def finish(self, cookie_state: str | None, state: str, code: str) -> SsoOutcome:
        """Complete the callback.

        Raises:
            OidcError: the state is unknown/used/from another browser, the exchange failed, or
                the ID token failed a check (the message names which).
            HTTPFacingError: 403 — verified, but this identity may not sign in here.
        """
        if not state or len(state) > _MAX_STATE or not cookie_state:
            raise OidcError("sign-in state is missing")
        if not hmac.compare_digest(cookie_state.encode(), state.encode()):
            raise OidcError("sign-in state belongs to another browser")
        raw = await self.kv.get_and_delete(f"oidc:state:{hash_token(state)}")
        if raw is None:
            raise OidcError("sign-in state is unknown, used or expired")
        saved = json.loads(raw)
        id_token = await self.client.exchange_code(code, self.redirect_uri, saved["verifier"])
        claims = await self.client.verify_id_token(id_token, saved["nonce"])
        meta = await self.client.metadata()
        email = _verified_email(claims)
        role = self._provision_role(email, claims)
        found = await self.store.run(
            accounts_store.resolve_oidc_identity,
            meta.issuer,
            str(claims["sub"]),
            email,
            role,
            self.clock.now(),
            self._may_link(email),
        )
        if found is not None and found[1] == "admin_not_linked":
            log.info("sso link to an administrator refused", extra={"event": "sso_refused"})
            raise Forbidden(
                "This email belongs to an administrator account, which single sign-on never "
                "links by email. An administrator signs in with their password. Nothing was "
                "changed."
            )
        if found is None:
            log.info("sso sign-in refused by policy", extra={"event": "sso_refused"})
            raise Forbidden(
                "This account may not sign in here. Ask an administrator for an invite."
            )
        user, how = found
        if user.status == "disabled":
            raise Forbidden("This account is disabled.")
        log.info("sso sign-in", extra={"event": "sso_login", "outcome": how})
        return SsoOutcome(user_id=user.id, how=how, next=str(saved.get("next") or "/"))

    def _allowed_domains(self) -> set[str]:
        return {d.lower().lstrip("@") for d in self.settings.oidc_allowed_domains}

    def _may_link(self, email: str | None) -> bool:
        """Whether a verified email may link to an existing account: within the allowed domains
        when they are set (groups never widen linking: they vouch for access, not for owning
        an existing mailbox's account)."""
        if email is None:
            return False
        domains = self._allowed_domains()
        return not domains or email.rpartition("@")[2] in domains

    def _provision_role(self, email: str | None, claims: dict[str, Any]) -> str | None:
        if email is None:
            return None
        domain = email.rpartition("@")[2]
        groups = set(self.settings.oidc_allowed_groups)
        if domain in self._allowed_domains() or (
            _groups(claims, self.settings.oidc_groups_claim) & groups
        ):
            return self.settings.oidc_default_role
        return None
