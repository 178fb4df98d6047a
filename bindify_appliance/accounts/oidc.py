"""OpenID Connect, the protocol part: discovery, key sets, code exchange, ID-token verification.

Fixes hosted quirk Q15 (algorithm, issuer and not-before unchecked; key-set cache not keyed by
URL). An ID token is accepted only when all of these hold:
- its `alg` is in `ALLOWED_ALGORITHMS` (asymmetric only: `none` and every HMAC algorithm are
  refused before any key is touched, so a token "signed" with the provider's public key as an
  HMAC secret fails), and the key it names has the matching type (and `alg`/`use`, if stated);
- the signature verifies with a key from the issuer's own key set (`jwks_uri` from discovery).
  An unknown `kid` triggers one refetch of the key set (at most one per `REFETCH_AFTER` per
  URL), which is how a key rotation at the provider is picked up;
- `iss` equals the discovered issuer exactly; `aud` contains our client id (and `azp`, when
  present or when there are several audiences, is our client id); `sub` is a non-empty string;
- `exp`, `iat` and `nbf` are checked against the injected clock with `LEEWAY` seconds;
- `nonce` equals the one this login stored.

Every HTTP call goes through `fetch`, never from PyJWT itself. The default (`provider_fetch`) is
the shared outbound client (`outbound.OutboundClient`): its address policy at resolve and
connect time, answers capped at 1 MiB (a larger one is refused while it streams, never read
whole), no redirects followed, no cookies, no proxy environment. The issuer is the operator's
own configuration and an on-premises provider on a private network is common, so the policy
allows private and loopback addresses for it whatever BINDIFY_ALLOW_PRIVATE_UPSTREAMS says;
what stays refused is what is never an identity provider: cloud metadata services,
unspecified and multicast addresses (embedded in IPv6 too) and non-canonical numeric hosts
(`0x7f.1`). Plain `http://` is allowed only when the configured issuer itself is `http://`,
so a discovery document cannot move the token endpoint (and the client secret) off TLS.
Errors are `OidcError` whose messages name the failed check — never a token, code or claim
value.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode, urlsplit

from bindify_appliance.clock import Clock
from bindify_appliance.errors import OidcError, OutboundError, UnsafeDestinationError
from bindify_appliance.outbound import OutboundClient

if TYPE_CHECKING:
    import jwt

__all__ = [
    "ALLOWED_ALGORITHMS",
    "Fetch",
    "OidcClient",
    "ProviderMetadata",
    "provider_fetch",
]

ALLOWED_ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
LEEWAY: Final = 60.0
METADATA_TTL: Final = 3600.0
JWKS_TTL: Final = 3600.0
REFETCH_AFTER: Final = 5.0
_MAX_BODY: Final = 1024 * 1024

# (status, body); raises OidcError when the provider cannot be reached.
Fetch = Callable[..., Awaitable[tuple[int, bytes]]]


def provider_fetch(issuer: str) -> Fetch:
    """The identity provider's HTTP calls under the outbound policy (see the module docstring).

    One short-lived client per call: these calls are rare (discovery and key sets are cached
    for an hour, a code exchange happens once per sign-in) and nothing is left to close.
    """
    allow_http = urlsplit(issuer).scheme == "http"

    async def fetch(
        url: str,
        *,
        method: str = "GET",
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, bytes]:
        client = OutboundClient(
            allow_private=True, allow_http=allow_http, timeout=timeout, max_body=_MAX_BODY
        )
        try:
            response = await client.request(
                method, url, headers=headers, body=body, follow_redirects=False
            )
        except UnsafeDestinationError as exc:
            raise OidcError(f"the identity provider's address is refused ({exc})") from None
        except OutboundError as exc:
            if exc.reason == "too_large":
                raise OidcError("the identity provider's answer is too large") from None
            raise OidcError(f"could not reach the identity provider ({exc.reason})") from None
        finally:
            await client.close()
        return response.status, response.body

    return fetch


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_auth_methods: tuple[str, ...]


@dataclass
class _KeySet:
    fetched_at: float
    keys: list[dict[str, Any]] = field(default_factory=list)


def _http_url(value: object, name: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
        raise OidcError(f"discovery document has no valid {name}")
    return value


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        raise OidcError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise OidcError(f"{what} is not a JSON object")
    return value


class OidcClient:
    """One configured issuer: caches its metadata, and key sets by URL, with the given clock."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        clock: Clock,
        fetch: Fetch | None = None,
    ) -> None:
        self.configured_issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.clock = clock
        self.fetch = fetch or provider_fetch(issuer)
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keysets: dict[str, _KeySet] = {}

    # -- discovery ---------------------------------------------------------------------------

    async def metadata(self) -> ProviderMetadata:
        now = self.clock.monotonic()
        if self._metadata is not None and now - self._metadata[0] < METADATA_TTL:
            return self._metadata[1]
        url = self.configured_issuer + "/.well-known/openid-configuration"
        status, body = await self.fetch(url, headers={"Accept": "application/json"})
        if status != 200:
            raise OidcError(f"discovery failed (HTTP {status})")
        doc = _json_object(body, "discovery document")
        issuer = doc.get("issuer")
        # The discovered issuer must be the configured one; a trailing slash is the only
        # difference tolerated (Auth0-style issuers end with "/"), and the discovered spelling
        # is then what `iss` must equal exactly.
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.configured_issuer:
            raise OidcError("discovery document names a different issuer")
        methods = doc.get("token_endpoint_auth_methods_supported")
        meta = ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=_http_url(
                doc.get("authorization_endpoint"), "authorization_endpoint"
            ),
            token_endpoint=_http_url(doc.get("token_endpoint"), "token_endpoint"),
            jwks_uri=_http_url(doc.get("jwks_uri"), "jwks_uri"),
            token_auth_methods=tuple(m for m in methods if isinstance(m, str))
            if isinstance(methods, list)
            else ("client_secret_basic",),
        )
        self._metadata = (now, meta)
        return meta

    # -- key sets ----------------------------------------------------------------------------

    async def _fetch_keys(self, jwks_uri: str) -> _KeySet:
        status, body = await self.fetch(jwks_uri, headers={"Accept": "application/json"})
        if status != 200:
            raise OidcError(f"key set fetch failed (HTTP {status})")
        doc = _json_object(body, "key set")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise OidcError("key set has no keys")
        keyset = _KeySet(
            fetched_at=self.clock.monotonic(), keys=[k for k in keys if isinstance(k, dict)]
        )
        self._keysets[jwks_uri] = keyset
        return keyset

    async def _keys(self, jwks_uri: str, *, refresh: bool) -> list[dict[str, Any]]:
        keyset = self._keysets.get(jwks_uri)
        now = self.clock.monotonic()
        if keyset is None or now - keyset.fetched_at >= JWKS_TTL:
            return (await self._fetch_keys(jwks_uri)).keys
        if refresh and now - keyset.fetched_at >= REFETCH_AFTER:
            return (await self._fetch_keys(jwks_uri)).keys
        return keyset.keys

    @staticmethod
    def _pick(keys: list[dict[str, Any]], kid: str | None, alg: str) -> jwt.PyJWK | None:
        import jwt  # PyJWT (and cryptography's X.509 layer) load at the first sign-in

        candidates = [k for k in keys if kid is None or k.get("kid") == kid]
        usable = []
        for jwk in candidates:
            if jwk.get("use") not in (None, "sig") or jwk.get("alg") not in (None, alg):
                continue
            try:
                usable.append(jwt.PyJWK(jwk, algorithm=alg))
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # wrong key type for this algorithm, or a malformed key
        # Without a kid only an unambiguous key is used.
        return usable[0] if len(usable) == 1 or (kid is not None and usable) else None

    # -- the code flow -----------------------------------------------------------------------

    async def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> str:
        """Trade an authorization code for tokens; returns the raw ID token."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        if not self.client_secret:
            form["client_id"] = self.client_id
        elif (
            "client_secret_basic" in meta.token_auth_methods
            or "client_secret_post" not in meta.token_auth_methods
        ):
            # RFC 6749 §2.3.1: both parts form-encoded before base64.
            pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
        status, body = await self.fetch(
            meta.token_endpoint, method="POST", body=urlencode(form), headers=headers
        )
        if status != 200:
            error = ""
            try:
                value = json.loads(body).get("error")
                if isinstance(value, str) and value.replace("_", "").isalpha():
                    error = f", {value[:40]}"
            except (ValueError, AttributeError):
                pass
            raise OidcError(f"the identity provider refused the code (HTTP {status}{error})")
        tokens = _json_object(body, "token response")
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError("token response has no ID token")
        return id_token

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """Check an ID token completely (see the module docstring); returns its claims."""
        import jwt

        meta = await self.metadata()
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise OidcError("ID token is malformed") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise OidcError("ID token algorithm is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("ID token key id is malformed")
        key = self._pick(await self._keys(meta.jwks_uri, refresh=False), kid, alg)
        if key is None:  # unknown key: perhaps the provider rotated; look once more
            key = self._pick(await self._keys(meta.jwks_uri, refresh=True), kid, alg)
        if key is None:
            raise OidcError("ID token is signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=key.key,
                algorithms=[alg],
                audience=self.client_id,
                issuer=meta.issuer,
                options={
                    # Time is checked below against the injected clock.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "aud", "sub", "exp", "iat"],
                },
            )
        except jwt.InvalidAudienceError:
            raise OidcError("ID token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise OidcError("ID token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise OidcError("ID token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise OidcError(f"ID token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise OidcError(f"ID token rejected ({type(exc).__name__})") from None
        self._check_claims(claims, nonce)
        return claims

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        now = self.clock.time()

        def number(name: str) -> float | None:
            value = claims.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise OidcError(f"ID token {name} is not a number")
            return float(value)

        exp, iat, nbf = number("exp"), number("iat"), number("nbf")
        if exp is None or now > exp + LEEWAY:
            raise OidcError("ID token has expired")
        if iat is not None and iat > now + LEEWAY:
            raise OidcError("ID token is issued in the future")
        if nbf is not None and nbf > now + LEEWAY:
            raise OidcError("ID token is not valid yet")
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(
            got.encode("utf-8"), nonce.encode("utf-8")
        ):
            raise OidcError("ID token nonce does not match this sign-in")
        aud = claims.get("aud")
        azp = claims.get("azp")
        several = isinstance(aud, list) and len(aud) > 1
        if (several or azp is not None) and azp != self.client_id:
            raise OidcError("ID token is for another client (azp)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise OidcError("ID token subject is malformed")
