"""A small OpenID Connect provider for the tests, served by Tornado on loopback.

It implements what the appliance's SSO login uses — discovery, a key set, an authorization
endpoint that approves at once (redirecting back with a code), and a token endpoint that checks
the client's credentials, the redirect URI and the PKCE verifier before returning a signed ID
token — and can misbehave on request, one login at a time, through `next_token`:

- `claims`: claims to add or override (`iss`, `aud`, `exp`, `nonce`, `email_verified`, …;
  a value of `None` removes the claim);
- `alg`: "none" (unsigned) or "HS256-public" (HMAC keyed with the provider's public key PEM,
  the classic key-confusion forgery);
- `kid`: a key id to put in the header instead of the signing key's;
- `sign_with`: a key that is *not* published.

`rotate()` publishes a new key (dropping the old ones unless `keep_old`) and signs with it.
`discovery_overrides` replaces fields of the discovery document (endpoints pointing elsewhere);
`jwks_size` > 0 makes the key set a JSON document of about that many bytes, streamed in 64 KiB
chunks: `jwks_sent` counts the bytes the client took, `jwks_complete` says whether it took all.
Times come from the clock the test gives (the appliance's `ManualClock`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import tornado.iostream
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support.ports import free_socket
from tornado.httpserver import HTTPServer

from bindify_appliance.clock import Clock

__all__ = ["OidcProvider", "SigningKey"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# A 2048-bit RSA key costs ~0.1 s of CPU to generate and the OIDC tests ask for about a hundred.
# Keys come from a ring of _RSA_RING distinct keys, generated on first use: any _RSA_RING keys
# asked for in a row are distinct (a test that signs with an "unknown key" still gets one the
# provider never published), and a key is only reused by a later test, against another provider.
_RSA_RING = 16
_rsa_keys: list[rsa.RSAPrivateKey] = []
_rsa_next = 0


def _next_rsa_key() -> rsa.RSAPrivateKey:
    global _rsa_next
    if len(_rsa_keys) < _RSA_RING:
        _rsa_keys.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return _rsa_keys[-1]
    key = _rsa_keys[_rsa_next]
    _rsa_next = (_rsa_next + 1) % _RSA_RING
    return key


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str | None = None) -> SigningKey:
        return cls(kid or "rsa-" + secrets.token_hex(4), "RS256", _next_rsa_key())

    @classmethod
    def ec(cls, kid: str | None = None) -> SigningKey:
        return cls(
            kid or "ec-" + secrets.token_hex(4), "ES256", ec.generate_private_key(ec.SECP256R1())
        )

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": self.alg})
        return jwk

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@dataclass
class Login:
    """What the next ID token says and how it is (mis)signed."""

    sub: str = "user-1"
    email: str | None = "sso.user@example.com"
    email_verified: Any = True
    groups: list[str] | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    alg: str | None = None
    kid: str | None = None
    sign_with: SigningKey | None = None


class OidcProvider:
    def __init__(self, clock: Clock, *, client_id: str, client_secret: str) -> None:
        self.clock = clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.keys: list[SigningKey] = [SigningKey.rsa()]
        self.signing = self.keys[0]
        self.next_token = Login()
        self.codes: dict[str, dict[str, str]] = {}
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self.discovery_overrides: dict[str, Any] = {}
        self.jwks_size = 0
        self.jwks_sent = 0
        self.jwks_complete = False
        self.jwks_handlers_done = 0
        self.token_requests: list[dict[str, Any]] = []
        self.sockets, port = free_socket()
        self.url = f"http://127.0.0.1:{port}"
        self.server: HTTPServer | None = None

    def start(self) -> OidcProvider:
        app = tornado.web.Application(
            [
                (r"/\.well-known/openid-configuration", _Discovery, {"p": self}),
                (r"/jwks", _Jwks, {"p": self}),
                (r"/authorize", _Authorize, {"p": self}),
                (r"/token", _Token, {"p": self}),
            ]
        )
        self.server = HTTPServer(app)
        self.server.add_sockets(self.sockets)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()

    def rotate(self, key: SigningKey | None = None, *, keep_old: bool = False) -> SigningKey:
        new = key or SigningKey.rsa()
        self.keys = [*self.keys, new] if keep_old else [new]
        self.signing = new
        return new

    # -- token minting -----------------------------------------------------------------------

    def id_token(self, nonce: str) -> str:
        login = self.next_token
        now = int(self.clock.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": self.client_id,
            "sub": login.sub,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
        }
        if login.email is not None:
            claims["email"] = login.email
            claims["email_verified"] = login.email_verified
        if login.groups is not None:
            claims["groups"] = login.groups
        for name, value in login.claims.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        key = login.sign_with or self.signing
        kid = login.kid or key.kid
        if login.alg == "none":
            header = {"alg": "none", "typ": "JWT", "kid": kid}
            return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
        if login.alg == "HS256-public":
            header = {"alg": "HS256", "typ": "JWT", "kid": kid}
            signing_input = (
                f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
            )
            mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{_b64(mac)}"
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": kid})


class _Base(tornado.web.RequestHandler):
    def initialize(self, p: OidcProvider) -> None:
        self.p = p

    def check_xsrf_cookie(self) -> None:
        return

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))


class _Discovery(_Base):
    def get(self) -> None:
        self.p.discovery_fetches += 1
        url = self.p.url
        self.write_json(
            {
                "issuer": url,
                "authorization_endpoint": url + "/authorize",
                "token_endpoint": url + "/token",
                "jwks_uri": url + "/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"],
                **self.p.discovery_overrides,
            }
        )


class _Jwks(_Base):
    def get(self) -> Awaitable[None] | None:
        self.p.jwks_fetches += 1
        if self.p.jwks_size:
            return self._oversized()
        self.write_json({"keys": [k.public_jwk() for k in self.p.keys]})
        return None

    async def _oversized(self) -> None:
        self.set_header("Content-Type", "application/json")
        head = json.dumps({"keys": [k.public_jwk() for k in self.p.keys]})[:-1] + ', "pad": "'
        parts = [head.encode()]
        left = self.p.jwks_size - len(parts[0]) - 2
        while left > 0:
            parts.append(b"a" * min(65536, left))
            left -= len(parts[-1])
        parts.append(b'"}')
        self.set_header("Content-Length", str(sum(len(p) for p in parts)))
        try:
            for part in parts:
                self.write(part)
                await self.flush()
                self.p.jwks_sent += len(part)
            self.p.jwks_complete = True
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            self.p.jwks_handlers_done += 1


class _Authorize(_Base):
    """Approves at once: the test's "user" is always signed in and consents."""

    def get(self) -> None:
        args = {
            k: self.get_query_argument(k, "") or ""
            for k in (
                "client_id",
                "redirect_uri",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
                "response_type",
                "scope",
            )
        }
        if args["client_id"] != self.p.client_id or args["response_type"] != "code":
            self.write_json({"error": "invalid_request"}, 400)
            return
        code = secrets.token_urlsafe(16)
        self.p.codes[code] = args
        self.redirect(
            args["redirect_uri"] + "?" + urlencode({"code": code, "state": args["state"]})
        )


class _Token(_Base):
    def post(self) -> None:
        form = {
            k: self.get_body_argument(k, "") or ""
            for k in (
                "grant_type",
                "code",
                "redirect_uri",
                "code_verifier",
            )
        }
        self.p.token_requests.append(form)
        auth = self.request.headers.get("Authorization", "")
        expected = (
            "Basic "
            + base64.b64encode(f"{self.p.client_id}:{self.p.client_secret}".encode()).decode()
        )
        if not hmac.compare_digest(auth, expected):
            self.write_json({"error": "invalid_client"}, 401)
            return
        saved = self.p.codes.pop(form["code"], None)
        if saved is None or form["grant_type"] != "authorization_code":
            self.write_json({"error": "invalid_grant"}, 400)
            return
        challenge = _b64(hashlib.sha256(form["code_verifier"].encode()).digest())
        if saved["redirect_uri"] != form["redirect_uri"] or challenge != saved["code_challenge"]:
            self.write_json({"error": "invalid_grant"}, 400)
            return
        self.write_json(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self.p.id_token(saved["nonce"]),
            }
        )
