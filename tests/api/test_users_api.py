"""Users (admin), `me`, jobs: shapes, error envelope and codes, last-admin rule, pagination."""

from __future__ import annotations

import re

import pytest
from support.inprocess import Server, add_token, add_user, api

from bindify_appliance.store.models import JobRun, PersonalToken, User

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


async def test_me(server: Server, member_token: str, member_id: str) -> None:
    response = await api(server, "GET", "/api/v1/me", token=member_token)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json() == {
        "user": {
            "id": member_id,
            "email": "member@example.com",
            "role": "member",
            "status": "active",
            "disabled_at": None,
            "created_at": "2026-11-29T10:00:00Z",
            "updated_at": "2026-11-29T10:00:00Z",
        },
        "auth": "token",
    }


async def test_create_with_a_password(server: Server, admin_token: str) -> None:
    response = await api(
        server,
        "POST",
        "/api/v1/users",
        {"email": "Dev@Example.com", "role": "admin", "password": "a long password"},
        token=admin_token,
    )
    assert response.status == 201
    body = response.json()
    assert body["invite_url"] is None
    user = body["user"]
    assert UUID.fullmatch(user["id"]) and STAMP.fullmatch(user["created_at"])
    assert (user["email"], user["role"], user["status"]) == ("dev@example.com", "admin", "active")
    assert "password" not in response.text and "scrypt" not in response.text
    stored = server.store.call(lambda: User.get_by_id(user["id"]))
    assert stored.password_hash is not None and stored.password_hash.startswith("scrypt$")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"email": "x@example.com"}, "invalid_request", "role"),
        ({"role": "member"}, "invalid_request", "email"),
        ({"email": "x@example.com", "role": "owner"}, "invalid_request", "role"),
        (
            {"email": "x@example.com", "role": "member", "nickname": "x"},
            "unknown_field",
            "nickname",
        ),
        ({"email": 7, "role": "member"}, "invalid_request", "email"),
        ({"email": "not an email", "role": "member"}, "invalid_request", "email"),
        ({"email": "a@b", "role": "member"}, "invalid_request", "email"),
        (
            {"email": "x@example.com", "role": "member", "password": "short"},
            "invalid_request",
            "password",
        ),
        (
            {"email": "x@example.com", "role": "member", "password": None},
            "invalid_request",
            "password",
        ),
    ],
)
async def test_create_validation(
    server: Server, admin_token: str, body: dict[str, object], code: str, field: str
) -> None:
    response = await api(server, "POST", "/api/v1/users", body, token=admin_token)
    assert response.status == 400, response.text
    assert response.json()["error"] == code and response.json()["field"] == field
    assert server.store.call(lambda: User.select().count()) == 1  # nothing created


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[1,",
        b"\xff\xfe",
        b"NaN",
        b'{"a": Infinity}',
        b'{"email": "x\\ud800@example.com", "role": "member"}',  # lone surrogate: not text
        b'{"\\udc00": 1}',
    ],
)
async def test_invalid_json(server: Server, admin_token: str, raw: bytes) -> None:
    response = await api(server, "POST", "/api/v1/users", token=admin_token, raw_body=raw)
    assert response.status == 400
    assert response.json()["error"] == "invalid_json"


async def test_non_object_bodies(server: Server, admin_token: str) -> None:
    for raw in (b"[]", b'"x"', b"null", b"3"):
        response = await api(server, "POST", "/api/v1/users", token=admin_token, raw_body=raw)
        assert response.status == 400 and response.json()["error"] == "invalid_request", raw


async def test_duplicate_email_conflicts(server: Server, admin_token: str, member_id: str) -> None:
    response = await api(
        server,
        "POST",
        "/api/v1/users",
        {"email": "MEMBER@example.com", "role": "member"},
        token=admin_token,
    )
    assert response.status == 409 and response.json()["error"] == "conflict"


async def test_patch_and_the_last_admin_rule(
    server: Server, admin_id: str, admin_token: str, member_id: str
) -> None:
    path = f"/api/v1/users/{admin_id}"
    for body in ({"role": "member"}, {"disabled": True}):
        response = await api(server, "PATCH", path, body, token=admin_token)
        assert response.status == 409, body
        assert response.json() == {
            "error": "last_admin",
            "message": "the last active administrator cannot be demoted, disabled or deleted",
        }
    deleted = await api(server, "DELETE", path, token=admin_token)
    assert deleted.status == 409 and deleted.json()["error"] == "last_admin"
    # Promote the member; now the first admin may step down.
    promoted = await api(
        server, "PATCH", f"/api/v1/users/{member_id}", {"role": "admin"}, token=admin_token
    )
    assert promoted.status == 200 and promoted.json()["user"]["role"] == "admin"
    server.clock.advance(5)
    demoted = await api(server, "PATCH", path, {"role": "member"}, token=admin_token)
    assert demoted.status == 200
    user = demoted.json()["user"]
    assert user["role"] == "member" and user["updated_at"] == "2026-11-29T10:00:05Z"
    # The former admin's token now carries member rights, at once.
    assert (await api(server, "GET", "/api/v1/users", token=admin_token)).status == 403


async def test_patch_validation_and_unknown_ids(
    server: Server, admin_token: str, member_id: str
) -> None:
    path = f"/api/v1/users/{member_id}"
    for body, code, field in (
        ({"disabled": "yes"}, "invalid_request", "disabled"),
        ({"role": "root"}, "invalid_request", "role"),
        ({"email": "x@example.com"}, "unknown_field", "email"),
    ):
        response = await api(server, "PATCH", path, body, token=admin_token)
        assert response.status == 400 and response.json()["error"] == code
        assert response.json()["field"] == field
    for method in ("GET", "PATCH", "DELETE"):
        missing = await api(
            server,
            method,
            "/api/v1/users/no-such-user",
            {} if method == "PATCH" else None,
            token=admin_token,
        )
        assert missing.status == 404 and missing.json()["error"] == "not_found", method


async def test_disable_and_delete(server: Server, admin_token: str, member_id: str) -> None:
    token = add_token(server, member_id)
    disabled = await api(
        server, "PATCH", f"/api/v1/users/{member_id}", {"disabled": True}, token=admin_token
    )
    body = disabled.json()["user"]
    assert body["status"] == "disabled" and body["disabled_at"] == "2026-11-29T10:00:00Z"
    assert (await api(server, "GET", "/api/v1/me", token=token)).status == 401
    enabled = await api(
        server, "PATCH", f"/api/v1/users/{member_id}", {"disabled": False}, token=admin_token
    )
    assert enabled.json()["user"]["status"] == "active"
    gone = await api(server, "DELETE", f"/api/v1/users/{member_id}", token=admin_token)
    assert gone.status == 204 and gone.body == b""
    assert (
        server.store.call(
            lambda: PersonalToken.select().where(PersonalToken.user == member_id).count()
        )
        == 0
    )


async def test_user_list_pagination(server: Server, admin_token: str) -> None:
    for i in range(7):
        add_user(server, f"u{i}@example.com")
    page = await api(server, "GET", "/api/v1/users?limit=3", token=admin_token)
    body = page.json()
    assert len(body["items"]) == 3 and body["next_cursor"]
    emails = [u["email"] for u in body["items"]]
    cursor = body["next_cursor"]
    while cursor:
        body = (
            await api(server, "GET", f"/api/v1/users?limit=3&cursor={cursor}", token=admin_token)
        ).json()
        emails += [u["email"] for u in body["items"]]
        cursor = body["next_cursor"]
    assert len(emails) == len(set(emails)) == 8  # 7 + the admin
    default = (await api(server, "GET", "/api/v1/users", token=admin_token)).json()
    assert len(default["items"]) == 8 and default["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=WyJ4Il0", "cursor"),
        ("cursor=bnVsbA", "cursor"),
    ],
)
async def test_bad_paging_parameters(
    server: Server, admin_token: str, query: str, field: str
) -> None:
    response = await api(server, "GET", f"/api/v1/users?{query}", token=admin_token)
    assert response.status == 400
    assert response.json()["error"] == "invalid_request" and response.json()["field"] == field


async def test_jobs_list(server: Server, admin_token: str) -> None:
    empty = await api(server, "GET", "/api/v1/jobs", token=admin_token)
    assert empty.json() == {"items": [], "next_cursor": None}
    now = server.clock.now()
    server.store.call(
        lambda: JobRun.create(
            name="refresh", last_started_at=now, last_finished_at=now, duration_ms=12, outcome="ok"
        )
    )
    server.store.call(lambda: JobRun.create(name="cleanup", last_started_at=now, outcome="running"))
    body = (await api(server, "GET", "/api/v1/jobs?limit=1", token=admin_token)).json()
    assert body["items"] == [
        {
            "name": "cleanup",
            "last_started_at": "2026-11-29T10:00:00Z",
            "last_finished_at": None,
            "duration_ms": None,
            "outcome": "running",
            "detail": None,
        }
    ]
    rest = (
        await api(server, "GET", f"/api/v1/jobs?cursor={body['next_cursor']}", token=admin_token)
    ).json()
    assert [j["name"] for j in rest["items"]] == ["refresh"] and rest["next_cursor"] is None


async def test_unknown_api_paths_and_methods(server: Server, admin_token: str) -> None:
    missing = await api(server, "GET", "/api/v1/nothing-here", token=admin_token)
    assert missing.status == 404 and missing.json()["error"] == "not_found"
    wrong = await api(server, "PUT", "/api/v1/me", {}, token=admin_token)
    assert wrong.status == 405
    assert set(wrong.json()) == {"error", "message"}
