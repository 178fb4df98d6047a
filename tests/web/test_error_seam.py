"""The one error seam (`http.base.HttpHandler.write_error`) on a running appliance.

Store refusals that escape a page render as their status (404/409) on the error page, never
as a 500; JSON handlers answer the family's status, code and field; anything else answers its
status with a fixed phrase, never the exception's text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.inprocess import Server, fetch, start_appliance

from bindify_appliance.errors import (
    AdminDisabledError,
    BadQueryError,
    ConflictError,
    InvalidRequest,
    LastAdminError,
    NotFoundError,
    RateLimited,
)
from bindify_appliance.http.base import HttpHandler
from bindify_appliance.routes import route
from bindify_appliance.web.pages import PageHandler

_SECRET = "s3cr3t-in-the-exception"
_RAISED = {
    "missing": NotFoundError("no such user"),
    "taken": ConflictError("a user with that email already exists"),
    "last": LastAdminError("this is the last active administrator"),
    "bad": InvalidRequest("label must be a string", "label"),
    "slow": RateLimited("wait a little", retry_after=7),
    "bug": RuntimeError(_SECRET),
    "cursor": BadQueryError("cursor is not valid", "cursor"),
    "admin-disabled": AdminDisabledError("an administrator disabled this connection"),
}


class _Page(PageHandler):
    async def get(self, what: str) -> None:
        raise _RAISED[what]


class _Json(HttpHandler):
    async def get(self, what: str) -> None:
        raise _RAISED[what]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    s = await start_appliance(tmp_path)
    s.app.add_handlers(
        r".*$",
        [
            route("/test-page/{what}", _Page, s.ctx),
            route("/test-json/{what}", _Json, s.ctx),
        ],
    )
    yield s
    await s.close()


@pytest.mark.parametrize(("what", "status"), [("missing", 404), ("taken", 409), ("last", 409)])
async def test_store_refusals_escaping_a_page_render_as_their_status(
    server: Server, what: str, status: int
) -> None:
    response = await fetch(f"{server.url}/test-page/{what}")
    assert response.status == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Content-Security-Policy" in response.headers


@pytest.mark.allow_error_logs
async def test_a_bug_in_a_page_is_a_500_without_its_text(server: Server) -> None:
    response = await fetch(f"{server.url}/test-page/bug")
    assert response.status == 500
    assert _SECRET not in response.text


@pytest.mark.allow_error_logs  # the "bug" case logs its traceback, as it should
@pytest.mark.parametrize(
    ("what", "status", "body"),
    [
        ("missing", 404, {"error": "not_found", "message": "no such user"}),
        ("taken", 409, {"error": "conflict", "message": "a user with that email already exists"}),
        (
            "last",
            409,
            {
                "error": "last_admin",
                "message": "the last active administrator cannot be demoted, disabled or deleted",
            },
        ),
        (
            "bad",
            400,
            {"error": "invalid_request", "message": "label must be a string", "field": "label"},
        ),
        ("slow", 429, {"error": "rate_limited", "message": "wait a little"}),
        (
            "cursor",
            400,
            {"error": "invalid_request", "message": "cursor is not valid", "field": "cursor"},
        ),
        (
            "admin-disabled",
            403,
            {"error": "forbidden", "message": "an administrator disabled this connection"},
        ),
        ("bug", 500, {"error": "internal_error", "message": "internal error"}),
    ],
)
async def test_json_answers_carry_status_code_message_and_field(
    server: Server, what: str, status: int, body: dict[str, str]
) -> None:
    response = await fetch(f"{server.url}/test-json/{what}")
    assert response.status == status
    assert response.json() == body
    assert response.headers["Cache-Control"] == "no-store"
    if what == "slow":
        assert response.headers["Retry-After"] == "7"
