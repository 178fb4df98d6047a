"""Our identity at authorization servers without a pre-registered app: DCR and CIMD.

Dynamic client registration (RFC 7591): one registration per (service, issuer), stored sealed
in `dcr_registrations` and reused by every member's connect, on every instance, across
restarts. A registration is made again when it expires within `RENEW_MARGIN`
(`client_secret_expires_at`), when our callback URL changed (a new base URL) or when the
registration endpoint did. Client credentials are bound to their issuer: a registration is
never used with another server (the row key says which).

The request carries what strict servers demand: `redirect_uris` (our callback),
`grant_types: ["authorization_code", "refresh_token"]`, `response_types: ["code"]`, an explicit
`token_endpoint_auth_method` (`none` — a public client with PKCE — unless the server lists
only secret-based methods), `application_type` (`native` for a loopback callback, else `web`)
and the scopes we will ask for. If the answer omits `token_endpoint_auth_method` but returns a
secret, RFC 7591's default `client_secret_basic` applies — unless the server lists only
`client_secret_post` (the TS SDK's server does exactly that).

Client ID metadata documents (CIMD): when the base URL is HTTPS we publish
`/oauth/client-metadata.json`; a server advertising `client_id_metadata_document_supported`
gets that URL as our `client_id` and needs no registration at all.

Invariants:
- The registration JSON (it may hold a client secret and a registration access token) is only
  ever stored sealed: `seal_managed(keyring, <row id>, …, field="registration_sealed")`.
- A registration that cannot be opened (lost key) is replaced, never half-used.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from yarl import URL

from bindify_appliance.context import AppContext
from bindify_appliance.crypto.keyring import open_managed, seal_managed
from bindify_appliance.errors import ConflictError, DecryptError, KeyringError, OAuthError
from bindify_appliance.outbound import OutboundClient
from bindify_appliance.services.oauth import CLIENT_AUTH_METHODS, ClientAuth, ClientAuthMethod
from bindify_appliance.store import dcr as dcr_rows
from bindify_appliance.store.models import DcrRegistration, new_id

__all__ = [
    "CALLBACK_PATH",
    "CLIENT_METADATA_PATH",
    "CLIENT_NAME",
    "REGISTRATION_FIELD",
    "RENEW_MARGIN",
    "Registrar",
    "callback_url",
    "client_metadata_document",
    "client_metadata_url",
]

log = logging.getLogger(__name__)

CALLBACK_PATH: Final = "/oauth/callback"
CLIENT_METADATA_PATH: Final = "/oauth/client-metadata.json"
CLIENT_NAME: Final = "Bindify Appliance"
REGISTRATION_FIELD: Final = "registration_sealed"
RENEW_MARGIN: Final = 3600.0
GRANT_TYPES: Final = ("authorization_code", "refresh_token")


def callback_url(base_url: str) -> str:
    return base_url.rstrip("/") + CALLBACK_PATH


def client_metadata_url(base_url: str) -> str | None:
    """Our CIMD URL (the `client_id`), or None when the base URL is not HTTPS."""
    if not base_url.startswith("https://"):
        return None
    return base_url.rstrip("/") + CLIENT_METADATA_PATH


def client_metadata_document(base_url: str) -> dict[str, Any] | None:
    """The client ID metadata document served at `CLIENT_METADATA_PATH` (HTTPS only)."""
    url = client_metadata_url(base_url)
    if url is None:
        return None
    return {
        "client_id": url,
        "client_name": CLIENT_NAME,
        "client_uri": base_url.rstrip("/"),
        "redirect_uris": [callback_url(base_url)],
        "grant_types": list(GRANT_TYPES),
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "web",
    }


def _is_loopback(url: str) -> bool:
    host = (URL(url).host or "").lower()
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")


def _requested_method(supported: Sequence[str]) -> ClientAuthMethod:
    if not supported or "none" in supported:
        return "none"
    if "client_secret_post" in supported:
        return "client_secret_post"
    if "client_secret_basic" in supported:
        return "client_secret_basic"
    return "none"


@dataclass(frozen=True)
class _Stored:
    row: DcrRegistration
    record: dict[str, Any]


class Registrar:
    """Finds or makes our client registration at an authorization server."""

    def __init__(self, ctx: AppContext, outbound: OutboundClient) -> None:
        self._ctx = ctx
        self._outbound = outbound
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def client_for(
        self,
        service_id: str,
        *,
        issuer: str,
        registration_endpoint: str,
        scopes: Sequence[str] = (),
        auth_methods: Sequence[str] = (),
    ) -> ClientAuth:
        """Our client at `issuer` for `service_id`: the stored registration, or a new one.

        Raises OAuthError (registration refused or unusable), OutboundError.
        """
        key = (service_id, issuer)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one registration per process at a time for this issuer
            redirect = callback_url(self._ctx.settings.base_url)
            stored = await self._load(service_id, issuer)
            if stored is not None and self._usable(stored.record, redirect, registration_endpoint):
                return self._client(stored.record)
            record = await self._register(registration_endpoint, redirect, scopes, auth_methods)
            return self._client(await self._save(service_id, issuer, stored, record))

    # -- storage ---------------------------------------------------------------------------

    async def _load(self, service_id: str, issuer: str) -> _Stored | None:
        row = await self._ctx.store.run(dcr_rows.get_registration, service_id, issuer)
        if row is None:
            return None
        try:
            plain = open_managed(
                self._ctx.keys.keyring,
                row.key_fingerprint,
                row.id,
                row.registration_sealed,
                field=REGISTRATION_FIELD,
            )
            record = json.loads(plain)
        except (DecryptError, KeyringError, ValueError):
            log.warning(
                "stored client registration cannot be opened; registering again",
                extra={"service": service_id},
            )
            return _Stored(row, {})
        return _Stored(row, record if isinstance(record, dict) else {})

    def _usable(self, record: Mapping[str, Any], redirect: str, endpoint: str) -> bool:
        if not record.get("client_id"):
            return False
        if record.get("_redirect_uri") != redirect or record.get("_registration_endpoint") != (
            endpoint
        ):
            return False
        expires = record.get("client_secret_expires_at")
        if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0:
            return float(expires) > self._ctx.clock.time() + RENEW_MARGIN
        return True

    async def _save(
        self, service_id: str, issuer: str, stored: _Stored | None, record: dict[str, Any]
    ) -> dict[str, Any]:
        keyring = self._ctx.keys.keyring
        now = self._ctx.clock.now()
        expires = record.get("client_secret_expires_at")
        expires_at = (
            datetime.fromtimestamp(float(expires), UTC)
            if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0
            else None
        )
        plaintext = json.dumps(record, separators=(",", ":")).encode("utf-8")
        if stored is not None:
            row = stored.row
            blob, fp = seal_managed(keyring, row.id, plaintext, field=REGISTRATION_FIELD)
            won = await self._ctx.store.run(
                lambda: dcr_rows.replace_registration(
                    row.id,
                    expected_sealed=row.registration_sealed,
                    registration_sealed=blob,
                    key_fingerprint=fp,
                    client_id_expires_at=expires_at,
                    now=now,
                )
            )
            if won:
                return record
        else:
            row_id = new_id()
            blob, fp = seal_managed(keyring, row_id, plaintext, field=REGISTRATION_FIELD)
            try:
                await self._ctx.store.run(
                    lambda: dcr_rows.insert_registration(
                        row_id,
                        service=service_id,
                        issuer=issuer,
                        registration_sealed=blob,
                        key_fingerprint=fp,
                        client_id_expires_at=expires_at,
                        now=now,
                    )
                )
                return record
            except ConflictError:
                pass
        # Another instance wrote first: use what it stored (ours is simply not kept).
        winner = await self._load(service_id, issuer)
        if winner is None or not winner.record.get("client_id"):
            return record
        return winner.record

    # -- registering -----------------------------------------------------------------------

    async def _register(
        self,
        endpoint: str,
        redirect: str,
        scopes: Sequence[str],
        auth_methods: Sequence[str],
    ) -> dict[str, Any]:
        requested = _requested_method(auth_methods)
        body: dict[str, Any] = {
            "redirect_uris": [redirect],
            "client_name": CLIENT_NAME,
            "grant_types": list(GRANT_TYPES),
            "response_types": ["code"],
            "token_endpoint_auth_method": requested,
            "application_type": "native" if _is_loopback(redirect) else "web",
        }
        if scopes:
            body["scope"] = " ".join(scopes)
        response = await self._outbound.post(
            endpoint,
            json_body=body,
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not 200 <= response.status < 300:
            code = answer.get("error") if isinstance(answer, dict) else None
            detail = f" ({code})" if isinstance(code, str) and code.isprintable() else ""
            raise OAuthError(
                f"dynamic client registration was refused: HTTP {response.status}{detail[:80]}",
                error="registration_failed",
                status=response.status,
            )
        if not isinstance(answer, dict) or not isinstance(answer.get("client_id"), str):
            raise OAuthError(
                "dynamic client registration answered without a client_id",
                error="registration_failed",
            )
        secret = answer.get("client_secret")
        method = answer.get("token_endpoint_auth_method")
        if method is None:
            if not secret:
                method = "none"
            elif requested != "none":
                method = requested
            elif "client_secret_post" in auth_methods and "client_secret_basic" not in (
                auth_methods
            ):
                method = "client_secret_post"
            else:
                method = "client_secret_basic"  # RFC 7591's default
        if method not in CLIENT_AUTH_METHODS:
            raise OAuthError(
                "the registered client uses a token authentication method we do not support",
                error="registration_failed",
            )
        if method != "none" and not (isinstance(secret, str) and secret):
            raise OAuthError(
                "the registered client needs a secret the server did not return",
                error="registration_failed",
            )
        record = dict(answer)
        record.update(
            _redirect_uri=redirect,
            _registration_endpoint=endpoint,
            _auth_method=method,
            _registered_at=int(self._ctx.clock.time()),
        )
        return record

    @staticmethod
    def _client(record: Mapping[str, Any]) -> ClientAuth:
        method = record.get("_auth_method", "none")
        secret = record.get("client_secret")
        return ClientAuth(
            client_id=str(record["client_id"]),
            method=method if method in CLIENT_AUTH_METHODS else "none",
            client_secret=secret if method != "none" and isinstance(secret, str) else None,
            kind="dcr",
        )
