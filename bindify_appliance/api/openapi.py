"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document, built from the live router.

The document is generated from the application's own route rules: every `/api/v1` route's
handler verbs and the `Operation` each one declares with `@operation` (access level, body and
response schemas, query parameters). So nothing can be documented that is not routed, and a
routed verb without a declaration fails to build (and fails the test that builds it).

Statuses documented per operation: the success status, plus 400 when there is a body or query
parameters, 401 (needed credentials missing, or a bad `Authorization` header on any
operation), 403 for admin-only operations and for
state-changing ones (CSRF with a browser session), 404 when the path has a placeholder, and
whatever the operation adds (409, …).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import tornado.web

from bindify_appliance import __version__
from bindify_appliance.api.base import ApiHandler, Operation, operation
from bindify_appliance.api.schema import Named, Schema, obj, string

__all__ = [
    "API_PREFIX",
    "ERROR_CODES",
    "OpenApiHandler",
    "api_operations",
    "build_document",
    "implemented_verbs",
    "route_handlers",
]

API_PREFIX = "/api/v1"
VERBS = ("get", "post", "put", "patch", "delete", "head", "options")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")

ERROR_CODES = (
    "invalid_json",
    "invalid_request",
    "unknown_field",
    "unauthorized",
    "forbidden",
    "csrf_failed",
    "not_found",
    "conflict",
    "last_admin",
    "invalid_api_key",
    "application_mismatch",
    "rate_limited",
    "upstream_error",
    "internal_error",
)
ERROR = Named(
    "Error",
    obj(
        {
            "error": string(enum=ERROR_CODES),
            "message": string(),
            "field": string(description="the offending field, for 400 answers"),
        },
        required=("error", "message"),
    ),
)
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "invalid_json, invalid_request or unknown_field",
    401: "unauthorized: no or bad credentials",
    403: "forbidden (role) or csrf_failed (browser session without X-XSRFToken)",
    404: "not_found",
    409: "conflict or last_admin",
    422: "invalid_api_key or application_mismatch",
    429: "rate_limited",
    502: "upstream_error",
}


def implemented_verbs(handler: type) -> list[str]:
    """The HTTP verbs a handler class implements itself (not Tornado's 405 defaults)."""
    base = tornado.web.RequestHandler
    return [v for v in VERBS if getattr(handler, v, None) not in (None, getattr(base, v, None))]


def route_handlers(rules: Iterable[Any]) -> list[tuple[str, type]]:
    """(route template, handler class) of URLSpecs / router rules made by `routes.route`."""
    out = []
    for rule in rules:
        template = (getattr(rule, "target_kwargs", None) or {}).get("route_template")
        if template is not None:
            # A proxy route's target is an `ExchangeRoute` naming its handler class.
            out.append((template, getattr(rule.target, "handler_class", rule.target)))
    return out


def api_operations(rules: Iterable[Any]) -> Iterator[tuple[str, str, Operation]]:
    """(template, verb, Operation) for every `/api/v1` route verb.

    Raises:
        ValueError: an API verb has no `@operation` declaration.
    """
    for template, handler in route_handlers(rules):
        if not template.startswith(API_PREFIX):
            continue
        for verb in implemented_verbs(handler):
            op = getattr(getattr(handler, verb), "__api_operation__", None)
            if not isinstance(op, Operation):
                raise ValueError(f"{verb.upper()} {template} has no @operation declaration")
            yield template, verb, op


def _collect(schema: Any, found: dict[str, Schema]) -> Any:
    """Replace Named schemas by $refs, gathering their definitions into `found`."""
    if isinstance(schema, Named):
        if schema.name not in found:
            found[schema.name] = {}  # reserve first: recursion-safe
            found[schema.name] = _collect(schema.schema, found)
        return schema.ref
    if isinstance(schema, dict):
        return {key: _collect(value, found) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_collect(value, found) for value in schema]
    return schema


def _statuses(template: str, verb: str, op: Operation) -> list[int]:
    codes = {op.status, *op.errors, *(status for status, _ in op.also)}
    if op.body is not None or op.query:
        codes.add(400)
    codes.add(401)  # public operations too: a bad Authorization header is refused anywhere
    if op.access != "public" and (op.access == "admin" or verb not in ("get", "head", "options")):
        codes.add(403)
    if _PLACEHOLDER.search(template):
        codes.add(404)
    return sorted(codes)


def _operation_id(template: str, verb: str) -> str:
    parts = [p.strip("{}").replace(".", "_") for p in template[len(API_PREFIX) :].split("/") if p]
    return "_".join([verb, *parts])


def build_document(rules: Iterable[Any], base_url: str = "") -> dict[str, Any]:
    components: dict[str, Schema] = {}
    _collect(ERROR, components)
    paths: dict[str, dict[str, Any]] = {}
    for template, verb, op in api_operations(rules):
        item: dict[str, Any] = {
            "operationId": _operation_id(template, verb),
            "summary": op.summary,
            "tags": [op.tag],
            "security": []
            if op.access == "public"
            else [{"personalToken": []}, {"browserSession": []}],
            "x-access": op.access,
        }
        if op.description:
            item["description"] = op.description
        if op.also:
            item["x-also"] = [status for status, _ in op.also]
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PLACEHOLDER.findall(template)
        ]
        parameters += [dict(p) for p in op.query]
        if parameters:
            item["parameters"] = parameters
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _collect(op.body, components)}},
            }
        responses: dict[str, Any] = {}
        for status in _statuses(template, verb, op):
            entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
            also = dict(op.also)
            if status == op.status:
                if op.response is not None:
                    schema = _collect(op.response, components)
                    entry["content"] = {"application/json": {"schema": schema}}
            elif status in also:
                schema = _collect(also[status], components)
                entry["content"] = {"application/json": {"schema": schema}}
            else:
                entry["content"] = {"application/json": {"schema": ERROR.ref}}
            responses[str(status)] = entry
        item["responses"] = responses
        paths.setdefault(template, {})[verb] = item
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Bindify Appliance admin API",
            "version": __version__,
            "description": (
                "Authenticate with 'Authorization: Bearer bndpat_…' (a personal API token) or "
                "a browser session; session requests that change state must send the _xsrf "
                "cookie's value in X-XSRFToken. Lists take ?limit= (1-200, default 50) and "
                "?cursor= and answer {items, next_cursor}."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {
                "personalToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "bndpat_ + 43 base64url characters",
                },
                "browserSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "bindify_session",
                    "description": "state-changing requests also need the X-XSRFToken header",
                },
            },
        },
    }
    if base_url:
        document["servers"] = [{"url": base_url}]
    return document


class OpenApiHandler(ApiHandler):
    @operation(
        "This OpenAPI 3.1 document",
        access="public",
        tag="meta",
        response={"type": "object", "description": "an OpenAPI 3.1 document"},
    )
    async def get(self) -> None:
        rules = self.application.wildcard_router.rules
        self.write_json(build_document(rules, self.ctx.settings.base_url))
