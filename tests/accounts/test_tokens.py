"""Personal API tokens: shown once, hashed, revocable at once, last-used time, clear refusals."""

from __future__ import annotations

from support.inprocess import Server, add_token, api

from bindify_appliance.accounts.personal_tokens import MAX_ACTIVE_TOKENS
from bindify_appliance.accounts.tokens import hash_token, is_personal_token
from bindify_appliance.store.models import PersonalToken


async def test_create_shows_the_token_once_and_stores_only_its_hash(
    server: Server, member_token: str
) -> None:
    server.clock.advance(1)  # list order is creation time, then id
    created = await api(server, "POST", "/api/v1/tokens", {"name": " laptop "}, token=member_token)
    assert created.status == 201
    body = created.json()
    assert set(body) == {"id", "token", "name", "created_at"}
    assert is_personal_token(body["token"]) and body["name"] == "laptop"
    stored = server.store.call(lambda: PersonalToken.get_by_id(body["id"]))
    assert stored.token_hash == hash_token(body["token"])
    listing = await api(server, "GET", "/api/v1/tokens", token=body["token"])
    assert listing.status == 200
    assert body["token"] not in listing.text
    names = [t["name"] for t in listing.json()["items"]]
    assert names == ["member-test", "laptop"]


async def test_revocation_takes_effect_on_the_very_next_request(
    server: Server, member_id: str, member_token: str
) -> None:
    second = add_token(server, member_id, "ci")
    assert (await api(server, "GET", "/api/v1/me", token=second)).status == 200
    listing = (await api(server, "GET", "/api/v1/tokens", token=member_token)).json()
    ci_id = next(t["id"] for t in listing["items"] if t["name"] == "ci")
    revoked = await api(server, "DELETE", f"/api/v1/tokens/{ci_id}", token=member_token)
    assert revoked.status == 204 and revoked.body == b""
    refused = await api(server, "GET", "/api/v1/me", token=second)
    assert refused.status == 401
    assert refused.json() == {
        "error": "unauthorized",
        "message": "the personal API token is invalid or revoked",
    }
    # Revoking twice, or a token that is not yours, is simply not found.
    again = await api(server, "DELETE", f"/api/v1/tokens/{ci_id}", token=member_token)
    assert again.status == 404 and again.json()["error"] == "not_found"


async def test_a_token_can_revoke_itself(server: Server, member_token: str) -> None:
    mine = (await api(server, "GET", "/api/v1/tokens", token=member_token)).json()["items"][0]
    assert (
        await api(server, "DELETE", f"/api/v1/tokens/{mine['id']}", token=member_token)
    ).status == 204
    assert (await api(server, "GET", "/api/v1/tokens", token=member_token)).status == 401


async def test_last_used_is_recorded_to_the_minute(server: Server, member_token: str) -> None:
    def last_used() -> object:
        return server.store.call(
            lambda: PersonalToken.get(PersonalToken.token_hash == hash_token(member_token))
        ).last_used_at

    assert last_used() is None
    await api(server, "GET", "/api/v1/me", token=member_token)
    first = last_used()
    assert first == server.clock.now()
    server.clock.advance(30)
    await api(server, "GET", "/api/v1/me", token=member_token)
    assert last_used() == first  # not rewritten within a minute
    server.clock.advance(31)
    await api(server, "GET", "/api/v1/me", token=member_token)
    assert last_used() == server.clock.now()
    listed = (await api(server, "GET", "/api/v1/tokens", token=member_token)).json()["items"]
    assert listed[0]["last_used_at"] == "2026-11-29T10:01:01Z"


async def test_connection_keys_are_refused_with_a_clear_message(
    server: Server, member_id: str
) -> None:
    response = await api(server, "GET", "/api/v1/me", token="bnd_live_" + "A" * 86)
    assert response.status == 401
    body = response.json()
    assert body["error"] == "unauthorized"
    assert "connection API key" in body["message"] and "bndpat_" in body["message"]


async def test_malformed_authorization_headers(server: Server, member_token: str) -> None:
    for header in ("Basic abc", "Bearer", "Bearer a b", f"Token {member_token}"):
        response = await api(server, "GET", "/api/v1/me", headers={"Authorization": header})
        assert response.status == 401, header
        assert response.json()["error"] == "unauthorized"
    lower = await api(
        server, "GET", "/api/v1/me", headers={"Authorization": f"bearer {member_token}"}
    )
    assert lower.status == 200
    bogus = await api(server, "GET", "/api/v1/me", token="bndpat_" + "x" * 43)
    assert bogus.status == 401


async def test_disabled_users_tokens_stop_and_stay_revoked(
    server: Server, admin_token: str, member_id: str, member_token: str
) -> None:
    assert (
        await api(
            server, "PATCH", f"/api/v1/users/{member_id}", {"disabled": True}, token=admin_token
        )
    ).status == 200
    assert (await api(server, "GET", "/api/v1/me", token=member_token)).status == 401
    assert (
        await api(
            server, "PATCH", f"/api/v1/users/{member_id}", {"disabled": False}, token=admin_token
        )
    ).status == 200
    assert (await api(server, "GET", "/api/v1/me", token=member_token)).status == 401


async def test_names_are_validated_and_tokens_are_capped(
    server: Server, member_id: str, member_token: str
) -> None:
    for body, field in (({"name": "  "}, "name"), ({"name": "x" * 101}, "name"), ({}, "name")):
        response = await api(server, "POST", "/api/v1/tokens", body, token=member_token)
        assert response.status == 400, body
        assert response.json()["field"] == field
    for i in range(MAX_ACTIVE_TOKENS - 1):
        add_token(server, member_id, f"t{i}")
    capped = await api(server, "POST", "/api/v1/tokens", {"name": "one more"}, token=member_token)
    assert capped.status == 409 and capped.json()["error"] == "conflict"


async def test_token_list_paginates(server: Server, member_id: str, member_token: str) -> None:
    for i in range(4):
        server.clock.advance(1)
        add_token(server, member_id, f"t{i}")
    seen: list[str] = []
    cursor = None
    while True:
        path = "/api/v1/tokens?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await api(server, "GET", path, token=member_token)).json()
        seen += [t["name"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["member-test", "t0", "t1", "t2", "t3"]
