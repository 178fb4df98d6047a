"""The JSON admin API's handler base: authentication, CSRF, roles, bodies, errors (DESIGN §5).

Authentication, in `prepare()`:
- `Authorization: Bearer bndpat_…` — a personal API token; looked up on every request, so a
  revoked token fails on the very next one. A connection key (`bnd_…`) is refused with a
  message saying which credential goes where. With an `Authorization` header, cookies are
  ignored entirely.
- otherwise the browser session cookie (`bindify_session`, or `__Host-bindify_session`: see
  `web.base`); then every state-changing request must also send the `_xsrf` cookie's token,
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
    ConflictError,
    HTTPFacingError,
    LastAdminError,
    NotFoundError,
)
from bindify_appliance.store.sessions import Principal
from bindify_appliance.web.base import BaseHandler

__all__ = ["Access", "ApiHandler", "Operation", "operation"]

Access = Literal["public", "user", "admin"]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_CONNECTION_KEY_MESSAGE = (
    "This is a connection API key (bnd_…), which works only on MCP routes (/mcp/…). "
    "The admin API takes a personal API token: 'Authorization: Bearer bndpat_…' "
    "(create one in the UI or with 'bindify admin create-token')."
)
_PLAIN_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}

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


class ApiHandler(BaseHandler):
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
                raise HTTPFacingError(
                    "send 'Authorization: Bearer bndpat_…'", status=401, code="unauthorized"
                )
            if token.startswith("bnd_"):
                raise HTTPFacingError(_CONNECTION_KEY_MESSAGE, status=401, code="unauthorized")
            principal = await authenticate_token(self.ctx.store, self.ctx.clock, token)
            if principal is None:
                raise HTTPFacingError(
                    "the personal API token is invalid or revoked",
                    status=401,
                    code="unauthorized",
                )
            return principal
        session = self.session_token()
        if session is None:
            return None
        principal = await resolve_session(self.ctx.store, self.ctx.clock, session)
        if principal is not None and self.request.method not in SAFE_METHODS:
            try:
                BaseHandler.check_xsrf_cookie(self)  # bound to this session (web.base)
            except tornado.web.HTTPError:
                raise HTTPFacingError(
                    "requests signed in with a browser session must send the _xsrf cookie's "
                    "value in the X-XSRFToken header",
                    status=403,
                    code="csrf_failed",
                ) from None
        return principal

    # -- used by handlers --------------------------------------------------------------------

    def require(self, access: Access) -> None:
        if access == "public":
            return
        if self.principal is None:
            raise HTTPFacingError(
                "sign in, or send 'Authorization: Bearer bndpat_…'",
                status=401,
                code="unauthorized",
            )
        if access == "admin" and not self.principal.is_admin:
            raise HTTPFacingError("this needs an administrator", status=403, code="forbidden")

    @property
    def user(self) -> Principal:
        """The authenticated principal (only inside `user`/`admin` operations)."""
        assert self.principal is not None
        return self.principal

    def json_body(self) -> Any:
        raw = self.request.body or b""
        if not raw.strip():
            raise HTTPFacingError("the body must be a JSON object", code="invalid_json")

        def no_constants(name: str) -> Any:
            raise ValueError(name)

        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=no_constants)
            _check_text(value)
        except (ValueError, UnicodeError, RecursionError):
            raise HTTPFacingError("the body is not valid JSON", code="invalid_json") from None
        return value

    def write_no_content(self) -> None:
        self.set_status(204)
        self.set_header("Cache-Control", "no-store")
        self.finish()

    # -- errors ------------------------------------------------------------------------------

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        body: dict[str, Any]
        if isinstance(exc, HTTPFacingError):
            status_code = exc.status
            body = {"error": exc.code, "message": exc.public_message}
            if exc.field:
                body["field"] = exc.field
            if exc.retry_after is not None:
                self.set_header("Retry-After", str(max(1, exc.retry_after)))
        elif isinstance(exc, LastAdminError):
            status_code = 409
            body = {
                "error": "last_admin",
                "message": "the last active administrator cannot be demoted, disabled or deleted",
            }
        elif isinstance(exc, ConflictError):
            status_code, body = 409, {"error": "conflict", "message": str(exc)}
        elif isinstance(exc, NotFoundError):
            status_code, body = 404, {"error": "not_found", "message": str(exc)}
        elif status_code < 500:
            body = {
                "error": _PLAIN_CODES.get(status_code, "invalid_request"),
                "message": self._reason,
            }
        else:
            body = {"error": "internal_error", "message": "internal error"}
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Store refusals are answers (404/409), not server errors.
        if isinstance(value, NotFoundError | ConflictError):
            return
        super().log_exception(typ, value, tb)
