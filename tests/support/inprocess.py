"""The in-process appliance: the one way a test serves the real application in its own process.

`start_appliance()` builds the real application (`app.build_application`) with its
`ConnectServices` over a migrated SQLite (or PostgreSQL) database, the in-process KV (or one the
test passes) and a `ManualClock`, and serves it on a free loopback port whose URL is also the
configured base URL (so OIDC and OAuth redirects come back here). Settings are read by
`config.load_settings` from a `BINDIFY_*` mapping, exactly as `bindify serve` reads them
(`environ=`: how the built-in stand-ins are configured); keyword settings (`smtp_url=…`) then
replace single fields. Private upstreams are refused unless a test allows them, as in a default
install. With `proxy=True` the MCP proxy routes are also served on a second port over the same
registry (their own upstream client, a resolver without memo, which `connect.resolver` then is);
the composition root serves `/mcp/` on the main port either way.

A `bindify serve` process is `support.appliance.Appliance` (the `process` marker follows it).

`Browser` keeps cookies like a browser (for this server only) and never follows redirects by
itself; `api()` calls the JSON API with a bearer token or the browser's session. Users are seeded
straight into the store with one precomputed scrypt hash (`PASSWORD`), so seeding costs no
100 ms hash per user.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.web import Application, create_signed_value

from bindify_appliance.accounts.passwords import hash_password
from bindify_appliance.accounts.sessions import SESSION_COOKIE, SESSION_LIFETIME
from bindify_appliance.accounts.tokens import hash_token, new_personal_token, new_token
from bindify_appliance.app import build_application, route_table
from bindify_appliance.clock import ManualClock
from bindify_appliance.config import Settings, load_settings
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.keyring import generate_master_key
from bindify_appliance.datadir import KeySource
from bindify_appliance.http.base import access_log_function
from bindify_appliance.http.cookies import XSRF_COOKIE, cookie_name
from bindify_appliance.http.not_found import NotFoundHandler
from bindify_appliance.kv import KVStore, MemoryKV
from bindify_appliance.outbound import OutboundClient
from bindify_appliance.proxy import ProxyConfig, UpstreamClient, proxy_routes
from bindify_appliance.proxy.resolver import ConnectionResolver
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import Store
from bindify_appliance.store.models import PersonalToken, User
from bindify_appliance.store.sessions import insert_session

from .ports import free_socket
from .stores import migrated_store

PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)
START = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)
SECRET_KEY = b"s" * 43


@dataclass
class Appliance:
    """The application served on `url` (and, with `proxy=True`, its proxy routes on `proxy_url`)."""

    ctx: AppContext
    clock: ManualClock
    url: str
    http: HTTPServer
    app: Application
    connect: ConnectServices
    proxy_url: str | None = None
    proxy_http: HTTPServer | None = None
    upstream: UpstreamClient | None = None  # the side proxy's client
    # The composition root's own proxy client (`app.py` serves `/mcp/` on `url` too).
    root_upstream: UpstreamClient | None = None

    @property
    def store(self) -> Store:
        return self.ctx.store

    def routes(self) -> list[Any]:
        return route_table(self.ctx)

    async def browser(self, user_id: str) -> Browser:
        return await session_browser(self, user_id)

    async def close(self) -> None:
        for server in (self.http, self.proxy_http):
            if server is not None:
                server.stop()
                await server.close_all_connections()
        for client in (self.upstream, self.root_upstream):
            if client is not None:
                await client.close()
        await self.connect.close()
        await self.ctx.kv.close()
        self.ctx.store.close()


# The name the `server` fixture's tests annotate with: the same class.
Server = Appliance


async def start_appliance(
    tmp_path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    proxy: bool = False,
    outbound: Callable[[Settings], OutboundClient] | None = None,
    database_url: str | None = None,
    base_url: str | None = None,
    master_keys: str | None = None,
    clock: ManualClock | None = None,
    kv: KVStore | None = None,
    instance_id: str = "test",
    **settings: Any,
) -> Appliance:
    """Serve the appliance on loopback (see the module docstring); the caller closes it."""
    sockets, port = free_socket()
    url = f"http://127.0.0.1:{port}"
    env = {
        "BINDIFY_DATA_DIR": str(tmp_path),
        "BINDIFY_PORT": str(port),
        "BINDIFY_BASE_URL": base_url or url,
        "BINDIFY_MASTER_KEYS": master_keys or json.dumps([{"key": generate_master_key()}]),
        "BINDIFY_LOG_FORMAT": "json",
        **(environ or {}),
    }
    # The database is a field, not a variable: a test's PostgreSQL appliance keeps the in-process
    # KV without the several-instances check (`config._check_combination`) refusing it.
    db_url = database_url or f"sqlite:///{tmp_path}/bindify.db"
    config = dataclasses.replace(load_settings(environ=env), database_url=db_url, **settings)
    store = migrated_store(db_url)
    clock = clock or ManualClock(START.timestamp())
    ctx = AppContext(
        settings=config,
        store=store,
        # `is not None`: an empty MemoryKV is falsy.
        kv=kv if kv is not None else MemoryKV(clock, anonymous_records=config.kv_anonymous_records),
        keys=KeySource(config),
        clock=clock,
        secret_key=SECRET_KEY,
        instance_id=instance_id,
    )
    ctx.lifecycle.ready = True
    connect = ConnectServices.build(ctx, outbound=outbound(config) if outbound else None)
    app = build_application(ctx, connect)
    http = HTTPServer(app)
    http.add_sockets(sockets)
    served = Appliance(ctx=ctx, clock=clock, url=url, http=http, app=app, connect=connect)
    served.root_upstream = app.settings["runtime"].upstream
    if proxy:
        _serve_side_proxy(served)
    return served


def _serve_side_proxy(served: Appliance) -> None:
    ctx = served.ctx
    resolver = ConnectionResolver(ctx, served.connect.registry, memo_ttl=0)
    served.connect.resolver = resolver
    upstream = UpstreamClient(allow_private=ctx.settings.allow_private_upstreams)
    proxy_app = Application(
        proxy_routes(ctx, resolver, upstream, ProxyConfig(keepalive_interval=1.0)),
        default_handler_class=NotFoundHandler,
        default_handler_args={"ctx": ctx},
        log_function=access_log_function,
        compress_response=False,
    )
    sockets, port = free_socket()
    proxy_http = HTTPServer(proxy_app, idle_connection_timeout=60)
    proxy_http.add_sockets(sockets)
    served.proxy_url = f"http://127.0.0.1:{port}"
    served.proxy_http = proxy_http
    served.upstream = upstream


# -- seeding --------------------------------------------------------------------------------


def add_user(
    server: Server,
    email: str,
    role: str = "member",
    *,
    password_hash: str | None = PASSWORD_HASH,
    disabled: bool = False,
) -> str:
    now = server.clock.now()

    def unit() -> str:
        user = User.create(
            email=email,
            password_hash=password_hash,
            role=role,
            created_at=now,
            updated_at=now,
            disabled_at=now if disabled else None,
        )
        return str(user.id)

    return server.store.call(unit)


def add_token(server: Server, user_id: str, name: str = "test") -> str:
    token = new_personal_token()
    now = server.clock.now()
    server.store.call(
        lambda: PersonalToken.create(
            user=user_id, name=name, token_hash=hash_token(token), created_at=now
        )
    )
    return token


def user_row(server: Server, user_id: str) -> User | None:
    return server.store.call(lambda: User.get_or_none(User.id == user_id))


# -- HTTP -----------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def location(self) -> str | None:
        value = self.headers.get("Location")
        return str(value) if value is not None else None


async def fetch(
    url: str,
    method: str = "GET",
    *,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    request = HTTPRequest(
        url,
        method=method,
        body=body,
        headers=dict(headers or {}),
        follow_redirects=False,
        allow_nonstandard_methods=True,
        request_timeout=30,
    )
    response: HTTPResponse = await AsyncHTTPClient().fetch(request, raise_error=False)
    return Response(response.code, response.headers, response.body or b"")


@dataclass
class Browser:
    """A cookie-keeping client for one server (cookies from other hosts are ignored)."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)
    raw_set_cookies: list[str] = field(default_factory=list)
    # `__Host-_xsrf` when the appliance's base URL is https without a path.
    xsrf_cookie: str = "_xsrf"

    def _ours(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self.base).netloc

    async def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        xsrf: bool = True,
    ) -> Response:
        url = path if path.startswith("http") else self.base + path
        sent = dict(headers or {})
        body: str | None = None
        if form is not None:
            fields = dict(form)
            if xsrf and method != "GET":
                fields.setdefault("_xsrf", self.cookies.get(self.xsrf_cookie, ""))
            body = urlencode(fields)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json_body is not None:
            body = json.dumps(json_body)
            sent.setdefault("Content-Type", "application/json")
        if self._ours(url) and self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await fetch(url, method, body=body, headers=sent)
        if self._ours(url):
            for header in response.headers.get_list("Set-Cookie"):
                self.raw_set_cookies.append(header)
                jar: SimpleCookie = SimpleCookie()
                jar.load(header)
                for name, morsel in jar.items():
                    expired = morsel["max-age"] == "0" or (
                        morsel["expires"] and "1970" in morsel["expires"]
                    )
                    if expired or morsel.value == "":
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
        return response

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, form: Mapping[str, str], **kw: Any) -> Response:
        return await self.request("POST", path, form=form, **kw)

    async def ensure_xsrf(self) -> str:
        if self.xsrf_cookie not in self.cookies:
            await self.get("/login")
        return self.cookies[self.xsrf_cookie]

    async def login(self, email: str, password: str = PASSWORD) -> Response:
        await self.ensure_xsrf()
        return await self.post("/login", {"email": email, "password": password})

    async def api(
        self, method: str, path: str, json_body: Any = None, *, csrf: bool = True
    ) -> Response:
        headers = {"X-XSRFToken": self.cookies.get(self.xsrf_cookie, "")} if csrf else {}
        return await self.request(method, path, json_body=json_body, headers=headers)

    def set_cookie_header(self, name: str) -> str | None:
        for header in reversed(self.raw_set_cookies):
            if header.startswith(name + "="):
                return header
        return None


async def api(
    server: Appliance,
    method: str,
    path: str,
    json_body: Any = None,
    *,
    token: str | None = None,
    raw_body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    body = (
        raw_body
        if raw_body is not None
        else (json.dumps(json_body) if json_body is not None else None)
    )
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    return await fetch(server.url + path, method, body=body, headers=sent)


def later(server: Server, **delta: float) -> None:
    server.clock.advance(timedelta(**delta).total_seconds())


async def session_browser(server: Server, user_id: str) -> Browser:
    """A browser already signed in as `user_id` (session recorded directly: no scrypt)."""
    token = new_token()
    now = server.clock.now()
    server.store.call(
        insert_session, hash_token(token), user_id, now, now + SESSION_LIFETIME, None, None, None
    )
    base_url = server.ctx.settings.base_url
    name = cookie_name(SESSION_COOKIE, base_url)  # `__Host-…` under an https base URL
    browser = Browser(server.url, xsrf_cookie=cookie_name(XSRF_COOKIE, base_url))
    signed = create_signed_value(SECRET_KEY, name, token)
    browser.cookies[name] = signed.decode()
    # The XSRF token is bound to the session: a page issues this session's token.
    await browser.get("/")
    return browser
