"""A real OAuth-protected MCP upstream for the tests, in-process on loopback.

One ASGI application served by uvicorn on the test's own event loop (so tests read and steer
its state directly, and time comes from the clock the test gives):

- an authorization server: RFC 8414 metadata (or OpenID configuration, or none), dynamic client
  registration (RFC 7591, strict about `grant_types`), an authorization endpoint that approves
  at once (302 back with `code`, `state` and optionally `iss`), and a token endpoint with PKCE
  S256, RFC 8707 `resource` binding, short-lived access tokens and rotating refresh tokens
  WITH reuse detection (presenting a rotated refresh token revokes its whole family);
- a resource server: protected-resource metadata (RFC 9728) and an `mcp` 2.x `MCPServer`
  behind a bearer-token check that answers 401 with `WWW-Authenticate: Bearer …
  resource_metadata="…"`; configured API keys are accepted too (`api_keys`: exact
  `Authorization` values, or `query:VALUE` for a `?key=VALUE` parameter);
- `/validate`: an API-key check endpoint for the built-in stand-ins (answers 401 with a body
  that echoes what it was sent, so tests can prove the appliance never shows it).

Knobs (constructor) make it play the built-ins: a static client with a secret, form-encoded
token answers with errors delivered as HTTP 200 (GitHub), tokens without expiry (Todoist),
Basic-auth API keys (Atlassian). One-shot misbehaviour: `next_token_response`,
`authorize_error`. Everything it receives is recorded (`registrations`, `authorize_requests`,
`token_requests`, `validate_requests`, `mcp_authorizations`).

Reusable by the token-lifecycle and web-UI tests: `async with OAuthUpstream(...) as up:`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from support.ports import free_socket

__all__ = ["OAuthUpstream", "TokenCall"]


class _Clock:
    def time(self) -> float:
        return time.time()


@dataclass
class Client:
    client_id: str
    secret: str | None
    method: str
    redirect_uris: list[str] | None  # None: any (static clients of the stand-ins)


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    resource: str | None
    scope: str | None
    expires: float


@dataclass
class Grant:
    client_id: str
    family: str
    resource: str | None
    expires_at: float | None


@dataclass
class TokenCall:
    form: dict[str, str]
    headers: dict[str, str]
    at: float = 0.0  # the upstream's clock when the call arrived


@dataclass
class _Refresh:
    grant: Grant
    used: bool = False


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner owns the signals
        yield


@dataclass
class OAuthUpstream:
    clock: Any = field(default_factory=_Clock)
    access_ttl: int | None = 300
    refresh: bool = True
    rotate_refresh: bool = True
    issuer_path: str = ""
    metadata: str = "oauth"  # "oauth" | "openid" | "none"
    prm: bool = True
    require_pkce: bool = True
    require_resource: bool = False
    static_clients: dict[str, str | None] = field(default_factory=dict)
    dcr: bool = True
    strict_grant_types: bool = True
    auth_methods: tuple[str, ...] = ("none", "client_secret_post", "client_secret_basic")
    omit_registered_method: bool = False
    registration_ttl: int | None = None
    response_format: str = "json"  # "json" | "form"
    errors_with_200: bool = False
    cimd: bool = False
    send_iss: bool = False
    scopes: tuple[str, ...] = ("mcp:read", "mcp:write")
    api_keys: set[str] = field(default_factory=set)
    tools: tuple[str, ...] = ("echo",)
    json_response: bool = False
    validate_headers: dict[str, str] = field(default_factory=dict)
    validate_query_key: str | None = None
    metadata_overrides: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"  # the name in its URLs (it always listens on 127.0.0.1)
    revocation: bool = True  # an RFC 7009 endpoint at `/revoke`, advertised in the metadata
    revoke_status: int | None = None  # answer every revocation with this status (a failing one)

    # state and records
    clients: dict[str, Client] = field(default_factory=dict)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[TokenCall] = field(default_factory=list)
    validate_requests: list[dict[str, Any]] = field(default_factory=list)
    mcp_authorizations: list[str] = field(default_factory=list)
    access_tokens: dict[str, Grant] = field(default_factory=dict)
    refresh_tokens: dict[str, _Refresh] = field(default_factory=dict)
    revoked_families: set[str] = field(default_factory=set)
    cimd_documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_token_response: tuple[int, str, bytes] | None = None
    authorize_error: str | None = None
    revocation_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._codes: dict[str, _Code] = {}
        sockets, self.port = free_socket()
        self._sock = sockets[0]
        for client_id, secret in self.static_clients.items():
            method = "client_secret_post" if secret else "none"
            self.clients[client_id] = Client(client_id, secret, method, None)
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._mcp_app = self._build_mcp().streamable_http_app(
            json_response=self.json_response, host="127.0.0.1"
        )
        self._router = Router(self._routes())

    # -- URLs ------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mcp_url(self) -> str:
        return self.origin + "/mcp"

    @property
    def issuer(self) -> str:
        return self.origin + self.issuer_path

    @property
    def authorize_url(self) -> str:
        return self.issuer + "/authorize"

    @property
    def token_url(self) -> str:
        return self.issuer + "/token"

    @property
    def register_url(self) -> str:
        return self.issuer + "/register"

    @property
    def revoke_url(self) -> str:
        return self.issuer + "/revoke"

    @property
    def validate_url(self) -> str:
        return self.origin + "/validate"

    @property
    def prm_url(self) -> str:
        return self.origin + "/.well-known/oauth-protected-resource/mcp"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> OAuthUpstream:
        self._sock.listen(128)
        config = uvicorn.Config(
            self, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        self._server = _QuietServer(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._sock]))
        for _ in range(500):
            if self._server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("the OAuth upstream did not start")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
        self._server, self._task = None, None
        self._sock.close()

    async def __aenter__(self) -> OAuthUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- helpers for tests -----------------------------------------------------------------

    def valid_access_tokens(self) -> list[str]:
        now = self.clock.time()
        return [
            t
            for t, g in self.access_tokens.items()
            if g.family not in self.revoked_families
            and (g.expires_at is None or g.expires_at > now)
        ]

    def registered_clients(self) -> list[Client]:
        return [c for c in self.clients.values() if c.client_id not in self.static_clients]

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._mcp_app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/mcp" or path.startswith("/mcp/"):
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            presented = headers.get("authorization", "")
            query = dict(parse_qsl(scope.get("query_string", b"").decode()))
            if not presented and "key" in query:
                presented = "query:" + query["key"]  # API keys injected as ?key=…
            self.mcp_authorizations.append(presented)
            if not self._authorized(presented):
                await self._challenge(send)
                return
            await self._mcp_app(scope, receive, send)
            return
        await self._router(scope, receive, send)

    def _authorized(self, header: str) -> bool:
        if header in self.api_keys:
            return True
        if not header.lower().startswith("bearer "):
            return False
        grant = self.access_tokens.get(header[7:].strip())
        if grant is None or grant.family in self.revoked_families:
            return False
        if grant.expires_at is not None and grant.expires_at <= self.clock.time():
            return False
        return not (self.require_resource and grant.resource != self.mcp_url)

    async def _challenge(self, send: Any) -> None:
        parts = ['error="invalid_token"', f'scope="{" ".join(self.scopes)}"']
        if self.prm:
            parts.append(f'resource_metadata="{self.prm_url}"')
        body = b'{"error":"invalid_token"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", ("Bearer " + ", ".join(parts)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _build_mcp(self) -> MCPServer:
        server = MCPServer("oauth-test-upstream")

        def make(name: str) -> Any:
            async def tool(text: str = "") -> str:
                return f"{name}:{text}"

            return tool

        for name in self.tools:
            server.add_tool(make(name), name=name, description=f"the {name} tool")

        @server.tool()
        def whoami(ctx: Context) -> dict[str, str]:
            """How the upstream saw the caller (the Authorization scheme only)."""
            header = {k.lower(): v for k, v in (ctx.headers or {}).items()}.get("authorization", "")
            return {"scheme": header.split(" ", 1)[0]}

        return server

    # -- routes ----------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        p = self.issuer_path
        routes = [
            Route(p + "/authorize", self._authorize, methods=["GET"]),
            Route(p + "/token", self._token, methods=["POST"]),
            Route("/validate", self._validate, methods=["GET", "POST"]),
        ]
        if self.dcr:
            routes.append(Route(p + "/register", self._register, methods=["POST"]))
        if self.revocation:
            routes.append(Route(p + "/revoke", self._revoke, methods=["POST"]))
        if self.prm:
            routes.append(
                Route("/.well-known/oauth-protected-resource/mcp", self._prm, methods=["GET"])
            )
        if self.metadata == "oauth":
            routes.append(
                Route("/.well-known/oauth-authorization-server" + p, self._as_meta, methods=["GET"])
            )
        elif self.metadata == "openid":
            routes.append(
                Route("/.well-known/openid-configuration" + p, self._as_meta, methods=["GET"])
            )
        return routes

    async def _prm(self, request: Request) -> Response:
        return JSONResponse(
            {
                "resource": self.mcp_url,
                "authorization_servers": [self.issuer],
                "scopes_supported": list(self.scopes),
                "bearer_methods_supported": ["header"],
            }
        )

    async def _as_meta(self, request: Request) -> Response:
        doc: dict[str, Any] = {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorize_url,
            "token_endpoint": self.token_url,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": list(self.auth_methods),
            "scopes_supported": list(self.scopes),
        }
        if self.dcr:
            doc["registration_endpoint"] = self.register_url
        if self.cimd:
            doc["client_id_metadata_document_supported"] = True
        if self.revocation:
            doc["revocation_endpoint"] = self.revoke_url
        if self.send_iss:
            doc["authorization_response_iss_parameter_supported"] = True
        doc.update(self.metadata_overrides)
        return JSONResponse(doc)

    async def _register(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "invalid_client_metadata"}, status_code=400)
        self.registrations.append(body)
        uris = body.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            return JSONResponse({"error": "invalid_redirect_uri"}, status_code=400)
        grants = body.get("grant_types")
        if self.strict_grant_types and (
            not isinstance(grants, list)
            or not {"authorization_code", "refresh_token"} <= set(grants)
        ):
            return JSONResponse(
                {"error": "invalid_client_metadata", "error_description": "grant_types"},
                status_code=400,
            )
        method = body.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in self.auth_methods:
            return JSONResponse({"error": "invalid_client_metadata"}, status_code=400)
        client_id = "dcr-" + secrets.token_hex(8)
        secret = None if method == "none" else secrets.token_urlsafe(24)
        self.clients[client_id] = Client(client_id, secret, method, list(uris))
        answer: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": int(self.clock.time()),
            "redirect_uris": uris,
            "grant_types": grants or ["authorization_code"],
            "response_types": ["code"],
            "client_name": body.get("client_name"),
        }
        if not self.omit_registered_method:
            answer["token_endpoint_auth_method"] = method
        if secret is not None:
            answer["client_secret"] = secret
            answer["client_secret_expires_at"] = (
                int(self.clock.time()) + self.registration_ttl if self.registration_ttl else 0
            )
        return JSONResponse(answer, status_code=201)

    def _client_for_authorize(self, client_id: str) -> Client | None:
        client = self.clients.get(client_id)
        if client is None and self.cimd and client_id in self.cimd_documents:
            doc = self.cimd_documents[client_id]
            client = Client(client_id, None, "none", list(doc.get("redirect_uris", [])))
            self.clients[client_id] = client
        return client

    async def _authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        client = self._client_for_authorize(params.get("client_id", ""))
        redirect = params.get("redirect_uri", "")
        if client is None:
            return PlainTextResponse("unknown client", status_code=400)
        if client.redirect_uris is not None and redirect not in client.redirect_uris:
            return PlainTextResponse("redirect_uri not registered", status_code=400)
        state = params.get("state", "")

        def back(**values: str) -> Response:
            values["state"] = state
            if self.send_iss:
                values["iss"] = self.issuer
            joiner = "&" if "?" in redirect else "?"
            return RedirectResponse(redirect + joiner + urlencode(values), status_code=302)

        if self.authorize_error is not None:
            error, self.authorize_error = self.authorize_error, None
            return back(error=error, error_description="The user denied the request")
        if params.get("response_type") != "code":
            return back(error="unsupported_response_type")
        challenge = params.get("code_challenge")
        if self.require_pkce and (not challenge or params.get("code_challenge_method") != "S256"):
            return back(error="invalid_request", error_description="PKCE S256 required")
        resource = params.get("resource")
        if self.require_resource and resource != self.mcp_url:
            return back(error="invalid_target")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Code(
            client.client_id,
            redirect,
            challenge,
            resource,
            params.get("scope"),
            self.clock.time() + 600,
        )
        return back(code=code)

    # -- token endpoint --------------------------------------------------------------------

    def _answer(self, status: int, values: dict[str, Any]) -> Response:
        if "error" in values and self.errors_with_200:
            status = 200
        if self.response_format == "form":
            body = urlencode({k: str(v) for k, v in values.items()})
            return Response(
                body, status_code=status, media_type="application/x-www-form-urlencoded"
            )
        return JSONResponse(values, status_code=status)

    def _authenticate(self, form: dict[str, str], headers: dict[str, str]) -> Client | None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:]).decode()
            except ValueError:
                return None
            cid, _, secret = raw.partition(":")
            client = self.clients.get(unquote(cid))
            if client is None or client.method != "client_secret_basic":
                return None
            return client if secrets.compare_digest(client.secret or "", unquote(secret)) else None
        client = self.clients.get(form.get("client_id", ""))
        if client is None:
            return None
        if client.method == "none":
            return client if "client_secret" not in form else None
        if client.method != "client_secret_post":
            return None
        given = form.get("client_secret", "")
        return client if secrets.compare_digest(client.secret or "", given) else None

    def _issue(self, grant: Grant, scope: str | None) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(24)
        now = self.clock.time()
        expires_at = now + self.access_ttl if self.access_ttl else None
        self.access_tokens[access] = Grant(
            grant.client_id, grant.family, grant.resource, expires_at
        )
        values: dict[str, Any] = {"access_token": access, "token_type": "Bearer"}
        if self.access_ttl:
            values["expires_in"] = self.access_ttl
        if scope:
            values["scope"] = scope
        if self.refresh:
            refresh = "rt-" + secrets.token_urlsafe(24)
            self.refresh_tokens[refresh] = _Refresh(grant)
            values["refresh_token"] = refresh
        return values

    async def _token(self, request: Request) -> Response:
        raw = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.token_requests.append(TokenCall(form, headers, self.clock.time()))
        if self.next_token_response is not None:
            status, content_type, body = self.next_token_response
            self.next_token_response = None
            return Response(body, status_code=status, media_type=content_type)
        client = self._authenticate(form, headers)
        if client is None:
            return self._answer(401, {"error": "invalid_client"})
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._redeem(client, form)
        if grant_type == "refresh_token":
            return self._refresh(client, form)
        return self._answer(400, {"error": "unsupported_grant_type"})

    def _redeem(self, client: Client, form: dict[str, str]) -> Response:
        code = self._codes.pop(form.get("code", ""), None)
        bad = {"error": "bad_verification_code" if self.errors_with_200 else "invalid_grant"}
        if code is None or code.client_id != client.client_id or code.expires < self.clock.time():
            return self._answer(400, bad)
        if code.redirect_uri != form.get("redirect_uri"):
            return self._answer(400, bad)
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if digest.rstrip(b"=").decode() != code.challenge:
                return self._answer(400, bad)
        if code.resource is not None and form.get("resource") not in (None, code.resource):
            return self._answer(400, {"error": "invalid_target"})
        grant = Grant(client.client_id, secrets.token_hex(8), code.resource, None)
        return self._answer(200, self._issue(grant, code.scope))

    def _refresh(self, client: Client, form: dict[str, str]) -> Response:
        entry = self.refresh_tokens.get(form.get("refresh_token", ""))
        if entry is None or entry.grant.client_id != client.client_id:
            return self._answer(400, {"error": "invalid_grant"})
        if entry.grant.family in self.revoked_families:
            return self._answer(400, {"error": "invalid_grant"})
        if entry.used:
            # Reuse of a rotated refresh token: someone has a copy. Revoke the whole family.
            self.revoked_families.add(entry.grant.family)
            return self._answer(400, {"error": "invalid_grant", "error_description": "reused"})
        if self.rotate_refresh:
            entry.used = True
            return self._answer(200, self._issue(entry.grant, None))
        values = self._issue(entry.grant, None)
        values.pop("refresh_token", None)
        return self._answer(200, values)

    # -- RFC 7009 revocation ---------------------------------------------------------------

    async def _revoke(self, request: Request) -> Response:
        """Record the call; revoke the whole grant of a known token (RFC 7009 §2.1)."""
        raw = (await request.body()).decode("utf-8", "replace")
        form = dict(parse_qsl(raw, keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.revocation_requests.append(form)
        if self.revoke_status is not None:
            return self._answer(self.revoke_status, {"error": "temporarily_unavailable"})
        client = self._authenticate(form, headers)
        if client is None:
            return self._answer(401, {"error": "invalid_client"})
        token = form.get("token", "")
        grant = self.access_tokens.get(token)
        refresh = self.refresh_tokens.get(token)
        family = grant.family if grant else refresh.grant.family if refresh else None
        if family is not None:
            self.revoked_families.add(family)
        return Response(b"", status_code=200)  # unknown tokens too (RFC 7009 §2.2)

    def revoked_tokens(self) -> list[str]:
        """The tokens this server was asked to revoke (access and refresh)."""
        return [r.get("token", "") for r in self.revocation_requests]

    # -- API-key validation endpoint -------------------------------------------------------

    async def _validate(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = (await request.body()).decode("utf-8", "replace")
        query = dict(request.query_params)
        self.validate_requests.append(
            {"method": request.method, "headers": headers, "body": body, "query": query}
        )
        ok = bool(self.validate_headers) and all(
            headers.get(k.lower()) == v for k, v in self.validate_headers.items()
        )
        if self.validate_query_key is not None:
            ok = query.get("key") == self.validate_query_key
        if ok:
            return JSONResponse({"ok": True})
        presented = " ".join(headers.get(k.lower(), "") for k in self.validate_headers) or str(
            query
        )
        return JSONResponse(
            {"message": "Invalid credentials: " + presented + "\x00 please check"},
            status_code=401,
        )
