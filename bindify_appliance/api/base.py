"""The JSON admin API's handler base: authentication, CSRF, roles, bodies, errors (DESIGN §5).

Authentication, in `prepare()`:
- `Authorization: Bearer bndpat_…` — a personal API token; looked up on every request, so a
  revoked token fails on the very next one. A connection key (`bnd_…`) is refused with a
  message saying which credential goes where. With an `Authorization` header, cookies are
  ignored entirely.
- otherwise the browser session cookie (`bindify_session`, or `__Host-bindify_session`: see
  `http.cookies`); then every state-changing request must also send the `_xsrf` cookie's token,
  which is bound to that session, in `X-XSRFToken` (or `X-CSRFToken`), else 403
  `csrf_failed`. Bearer requests need no CSRF token: nothing ambient authenticates them.

Each verb method is declared with `@operation(...)`, which enforces its access level
(`public`, `user`, `admin`), parses and validates the JSON body against its schema (setting
`self.body`), and carries the description `api/openapi.py` publishes. A verb without
`@operation` on an `/api/v1` route is a bug the OpenAPI test catches.

Errors are always `{"error": code, "message": text}` (+ `field`), with the codes of DESIGN §5.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import tornado.web

from bindify_appliance.accounts.personal_tokens import authenticate_token
from bindify_appliance.accounts.sessions import resolve_session
from bindify_appliance.api.schema import Named, Schema, validate_body
from bindify_appliance.errors import (
    CsrfFailed,
    Forbidden,
    InvalidJson,
    Unauthorized,
)
from bindify_appliance.http.cookies import SessionCookies
from bindify_appliance.store.sessions import Principal

__all__ = ["Access", "ApiHandler", "Operation", "operation"]

Access = Literal["public", "user", "admin"]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_CONNECTION_KEY_MESSAGE = (
    "This is a connection API key (bnd_…), which works only on MCP routes (/mcp/…). "
    "The admin API takes a personal API token: 'Authorization: Bearer bndpat_…' "
    "(create one in the UI or with 'bindify admin create-token')."
)
F = TypeVar("F", bound=Callable[..., Awaitable[None]])


@dataclass(frozen=True)
class Operation:
    """What one verb of one API route does, who may call it, and its shapes."""

    summary: str
    access: Access
    tag: str
    body: Schema | None = None
    status: int = 200
    response: Schema | Named | None = None
    query: tuple[dict[str, Any], ...] = ()
    errors: tuple[int, ...] = ()
    description: str | None = None
    # Another success answer the operation gives on request (e.g. 200 with a report where the
    # plain call answers 204): (status, schema) pairs, documented beside `status`.
    also: tuple[tuple[int, Schema | Named], ...] = ()


def operation(
    summary: str,
    *,
    access: Access,
    tag: str,
    body: Schema | None = None,
    status: int = 200,
    response: Schema | Named | None = None,
    query: tuple[dict[str, Any], ...] | list[dict[str, Any]] = (),
    errors: tuple[int, ...] = (),
    description: str | None = None,
    also: tuple[tuple[int, Schema | Named], ...] = (),
) -> Callable[[F], F]:
    """Declare (and enforce) an API verb: access level, body schema, documented response."""
    op = Operation(
        summary=summary,
        access=access,
        tag=tag,
        body=body,
        status=status,
        response=response,
        query=tuple(query),
        errors=errors,
        description=description,
        also=also,
    )

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        async def wrapper(self: ApiHandler, *args: Any, **kwargs: Any) -> None:
            self.require(op.access)
            if op.body is not None:
                self.body = validate_body(op.body, self.json_body())
            await fn(self, *args, **kwargs)

        wrapper.__api_operation__ = op  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


def _check_text(value: Any) -> None:
    """Refuse strings that are not text: JSON can spell a lone surrogate (`"\\ud800"`), which
    no database driver can store. Raises UnicodeEncodeError (→ invalid_json)."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


class ApiHandler(SessionCookies):
    """Base of every `/api/v1` handler."""

    principal: Principal | None = None
    body: dict[str, Any]

    def check_xsrf_cookie(self) -> None:
        # Tornado calls this before prepare(); ours runs in prepare(), once we know whether the
        # request is authenticated by a cookie (CSRF applies) or a bearer token (it does not).
        return

    async def prepare(self) -> None:
        self.principal = await self._authenticate()

    async def _authenticate(self) -> Principal | None:
        header = self.request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            token = value.strip()
            if scheme.lower() != "bearer" or not token or " " in token:
                raise Unauthorized("send 'Authorization: Bearer bndpat_…'")
            if token.startswith("bnd_"):
                raise Unauthorized(_CONNECTION_KEY_MESSAGE)
            principal = await authenticate_token(self.ctx.store, self.ctx.clock, token)
            if principal is None:
                raise Unauthorized("the personal API token is invalid or revoked")
            return principal
        session = self.session_token()
        if session is None:
            return None
        principal = await resolve_session(self.ctx.store, self.ctx.clock, session)
        if principal is not None and self.request.method not in SAFE_METHODS:
            try:
                SessionCookies.check_xsrf_cookie(self)  # bound to this session
            except tornado.web.HTTPError:
                raise CsrfFailed(
                    "requests signed in with a browser session must send the _xsrf cookie's "
                    "value in the X-XSRFToken header"
                ) from None
        return principal

    # -- used by handlers --------------------------------------------------------------------

    def require(self, access: Access) -> None:
        if access == "public":
            return
        if self.principal is None:
            raise Unauthorized("sign in, or send 'Authorization: Bearer bndpat_…'")
        if access == "admin" and not self.principal.is_admin:
            raise Forbidden("this needs an administrator")

    @property
    def user(self) -> Principal:
        """The authenticated principal (only inside `user`/`admin` operations)."""
        assert self.principal is not None
        return self.principal

    def json_body(self) -> Any:
        raw = self.request.body or b""
        if not raw.strip():
            raise InvalidJson("the body must be a JSON object")

        def no_constants(name: str) -> Any:
            raise ValueError(name)

        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
            _check_text(value)
        except (ValueError, UnicodeError, RecursionError):
            raise InvalidJson("the body is not valid JSON") from None
        return value
