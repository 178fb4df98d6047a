"""The OpenAPI 3.1 document against the router's real routes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from support.inprocess import Server, api
from tornado.routing import URLSpec

from bindify_appliance.api.base import ApiHandler
from bindify_appliance.api.openapi import (
    API_PREFIX,
    ERROR_CODES,
    build_document,
    implemented_verbs,
    route_handlers,
)
from bindify_appliance.routes import route


async def _document(server: Server) -> dict[str, Any]:
    response = await api(server, "GET", "/api/v1/openapi.json")
    assert response.status == 200
    return dict(response.json())


def _api_routes(server: Server) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for template, handler in route_handlers(server.routes()):
        if template.startswith(API_PREFIX):
            out[template] = set(implemented_verbs(handler))
    return out


async def test_every_api_route_is_documented_and_nothing_else(server: Server) -> None:
    document = await _document(server)
    documented = {path: set(item) for path, item in document["paths"].items()}
    assert documented == _api_routes(server)


async def test_document_shape(server: Server) -> None:
    document = await _document(server)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": server.url}]
    schemes = document["components"]["securitySchemes"]
    assert schemes["personalToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "bndpat_ + 43 base64url characters",
    }
    error = document["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["enum"] == list(ERROR_CODES)
    operation_ids = []
    for path, item in document["paths"].items():
        placeholders = re.findall(r"\{([a-z_]+)\}", path)
        for verb, op in item.items():
            operation_ids.append(op["operationId"])
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert params == placeholders, (path, verb)
            statuses = set(op["responses"])
            success = [s for s in statuses if s.startswith("2")]
            # One success status, plus any the operation gives on request (`x-also`).
            assert len(success) == 1 + len(op.get("x-also", [])), (path, verb)
            for status, response in op["responses"].items():
                if not status.startswith("2"):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }
            if op["x-access"] != "public":
                assert "401" in statuses and op["security"]
            if op["x-access"] == "admin":
                assert "403" in statuses
            if verb in ("post", "patch", "put") and "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert schema["additionalProperties"] is False
                assert "400" in statuses
    assert len(operation_ids) == len(set(operation_ids))
    # Every $ref points at a component that exists.
    text = repr(document)
    for name in re.findall(r"#/components/schemas/([A-Za-z]+)", text):
        assert name in document["components"]["schemas"]


async def test_documented_error_statuses_cover_the_declared_ones(server: Server) -> None:
    document = await _document(server)
    users = document["paths"]["/api/v1/users/{id}"]
    assert set(users["patch"]["responses"]) == {"200", "400", "401", "403", "404", "409"}
    # 200: the offboarding report of ?revoke=true; 400: a bad query flag.
    assert set(users["delete"]["responses"]) == {"200", "204", "400", "401", "403", "404", "409"}
    assert users["delete"]["x-also"] == [200]
    assert "content" not in users["delete"]["responses"]["204"]
    assert set(document["paths"]["/api/v1/me"]["get"]["responses"]) == {"200", "401"}


def test_an_api_verb_without_a_declaration_cannot_be_documented() -> None:
    class Undeclared(ApiHandler):
        async def get(self) -> None:
            self.write_json({})

    rules: list[URLSpec] = [route("/api/v1/undeclared", Undeclared, None)]
    with pytest.raises(ValueError, match="GET /api/v1/undeclared has no @operation"):
        build_document(rules)


def test_non_api_routes_are_not_documented() -> None:
    class Page(ApiHandler):
        async def get(self) -> None:
            self.write_json({})

    assert build_document([route("/elsewhere", Page, None)])["paths"] == {}
