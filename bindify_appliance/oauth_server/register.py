"""`POST /oauth/register`: anonymous dynamic client registration (RFC 7591, DESIGN §10).

Rules: redirect URIs per `redirects.py`; 20 registrations a minute per client address (IPv6: its
/64) and at most `MAX_UNUSED` registrations never used in all (429 beyond); identical
registrations of public clients (auth method `none`) are one record, confidential ones never
are; registrations never used within 24 h expire (`jobs.py`). `BINDIFY_OAUTH_DCR=false`
answers 404 here. Confidential clients get a `bndcs_` secret, stored only as a hash.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Final

from bindify_appliance.accounts.login import IpLimiter, Limit
from bindify_appliance.errors import KVError, StoreError
from bindify_appliance.kv import ANONYMOUS
from bindify_appliance.oauth_server.http import OAuthEndpoint
from bindify_appliance.oauth_server.redirects import MAX_REDIRECT_URIS, redirect_uri_problem
from bindify_appliance.oauth_server.settings import dcr_enabled
from bindify_appliance.oauth_server.tokens import CLIENT_SECRET_PREFIX, new_token, token_hash
from bindify_appliance.store import oauth_server as rows

__all__ = ["MAX_UNUSED", "REGISTER_LIMIT", "RegisterHandler", "RegistrationError", "validate"]

MAX_UNUSED: Final = 10_000
REGISTER_LIMIT: Final = Limit(20, 60)
MAX_BODY: Final = 16 * 1024
AUTH_METHODS: Final = ("none", "client_secret_basic", "client_secret_post")
_GRANT_TYPES: Final = frozenset({"authorization_code", "refresh_token"})


class RegistrationError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _string_list(value: Any, name: str, default: list[str]) -> list[str]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistrationError("invalid_client_metadata", f"{name} must be a list of strings")
    return list(dict.fromkeys(value))


def validate(settings: Any, body: Any) -> dict[str, Any]:
    """The accepted metadata (normalised), or `RegistrationError`."""
    if not isinstance(body, dict):
        raise RegistrationError("invalid_client_metadata", "the body must be a JSON object")
    uris = body.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise RegistrationError("invalid_redirect_uri", "redirect_uris must be a non-empty list")
    if len(uris) > MAX_REDIRECT_URIS:
        raise RegistrationError(
            "invalid_redirect_uri", f"at most {MAX_REDIRECT_URIS} redirect URIs"
        )
    for uri in uris:
        problem = redirect_uri_problem(settings, uri)
        if problem is not None:
            raise RegistrationError("invalid_redirect_uri", problem)
    method = body.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise RegistrationError(
            "invalid_client_metadata",
            "token_endpoint_auth_method must be none, client_secret_basic or client_secret_post",
        )
    grant_types = _string_list(body.get("grant_types"), "grant_types", ["authorization_code"])
    if not grant_types or not set(grant_types) <= _GRANT_TYPES:
        raise RegistrationError(
            "invalid_client_metadata",
            "grant_types may be authorization_code and refresh_token only",
        )
    response_types = _string_list(body.get("response_types"), "response_types", ["code"])
    if response_types != ["code"]:
        raise RegistrationError("invalid_client_metadata", 'response_types must be ["code"]')
    name = body.get("client_name")
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise RegistrationError("invalid_client_metadata", "client_name must be a string")
    name = "".join(c for c in name if c.isprintable()).strip()[:100] or "Unnamed client"
    return {
        "redirect_uris": list(dict.fromkeys(uris)),
        "token_endpoint_auth_method": method,
        "grant_types": grant_types,
        "response_types": response_types,
        "client_name": name,
    }


def _fingerprint(issuer: str, metadata: dict[str, Any]) -> str:
    canonical = json.dumps({"issuer": issuer, **metadata}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _answer(client_id: str, issued: datetime, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"client_id": client_id, "client_id_issued_at": int(issued.timestamp()), **metadata}


class RegisterHandler(OAuthEndpoint):
    ALLOW_METHODS = "POST, OPTIONS"

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.limiter = IpLimiter(self.ctx.kv, self.ctx.clock, {"oauth_register": REGISTER_LIMIT})

    async def post(self) -> None:
        ctx = self.ctx
        if not dcr_enabled(ctx.settings):
            self.oauth_error(404, "not_found", "dynamic client registration is turned off here")
            return
        try:
            wait = await self.limiter.hit("oauth_register", self.client_ip(), budget=ANONYMOUS)
        except KVError:
            wait = 60
        if wait is not None:
            self.oauth_error(
                429, "too_many_requests", "too many registrations; try later", retry_after=wait
            )
            return
        if len(self.request.body) > MAX_BODY:
            self.oauth_error(413, "invalid_client_metadata", "the registration is too large")
            return
        try:
            metadata = validate(ctx.settings, json.loads(self.request.body or b"null"))
        except ValueError:
            self.oauth_error(400, "invalid_client_metadata", "the body must be JSON")
            return
        except RegistrationError as refused:
            self.oauth_error(400, refused.error, refused.description)
            return
        try:
            await self._register(metadata)
        except StoreError:
            self.oauth_error(503, "temporarily_unavailable", "try again shortly")

    async def _register(self, metadata: dict[str, Any]) -> None:
        ctx = self.ctx
        issuer = ctx.settings.base_url
        public = metadata["token_endpoint_auth_method"] == "none"  # noqa: S105 - a method name
        fingerprint = _fingerprint(issuer, metadata) if public else None
        if fingerprint is not None:
            existing = await ctx.store.run(rows.find_by_fingerprint, fingerprint)
            if existing is not None:
                self.send_json(_answer(existing.id, existing.created_at, metadata), 201)
                return
        if await ctx.store.run(rows.count_unused_clients) >= MAX_UNUSED:
            self.oauth_error(
                429,
                "too_many_requests",
                "too many unused registrations; try later",
                retry_after=3600,
            )
            return
        now = ctx.clock.now()
        secret = None if public else new_token(CLIENT_SECRET_PREFIX)
        record = await ctx.store.run(
            rows.insert_client,
            {
                "id": "bndc_" + new_token("")[:32],
                "issuer": issuer,
                "client_name": metadata["client_name"],
                "redirect_uris": json.dumps(metadata["redirect_uris"]),
                "auth_method": metadata["token_endpoint_auth_method"],
                "secret_hash": token_hash(secret) if secret is not None else None,
                "fingerprint": fingerprint,
                "created_at": now,
            },
        )
        answer = _answer(record.id, record.created_at, metadata)
        if secret is not None:
            answer["client_secret"] = secret
            answer["client_secret_expires_at"] = 0
        self.send_json(answer, 201)
