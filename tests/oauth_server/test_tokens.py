"""The token endpoint and the proxy's `bndat_` path against a running appliance (DESIGN §10):
codes come from `issue_code` (the consent page's call), everything else is real HTTP."""

from __future__ import annotations

from support.inprocess import later

from oauth_server.harness import REDIRECT, World, pkce


def _challenge_of(response: object) -> str:
    return str(response.headers.get("WWW-Authenticate", ""))  # type: ignore[attr-defined]


async def test_managed_and_zero_knowledge_grants_reach_the_upstream(world: World) -> None:
    for conn in (world.managed, world.zk):
        before = len(world.upstream.requests)
        tokens = await world.tokens(conn)
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
        assert tokens["access_token"].startswith("bndat_")
        assert tokens["refresh_token"].startswith("bndrt_")
        answered = await world.mcp(tokens["access_token"])
        assert answered.status == 200, answered.text
        assert len(world.upstream.requests) == before + 1
        # The client's token never reaches the upstream.
        seen = world.upstream.requests[-1]
        assert all(tokens["access_token"] not in value for _, value in seen.headers)


async def test_token_answers_are_not_stored(world: World) -> None:
    client = await world.client()
    code, verifier = await world.code(client["client_id"], world.managed)
    answered = await world.exchange(client["client_id"], code, verifier)
    assert answered.headers["Cache-Control"] == "no-store"
    assert answered.headers["Pragma"] == "no-cache"


async def test_a_token_works_on_its_own_service_only(world: World) -> None:
    tokens = await world.tokens(world.managed)
    other = await world.mcp(tokens["access_token"], service="other")
    assert other.status == 404
    assert other.json()["error"]["code"] == -32001
    assert (await world.mcp(tokens["access_token"], service="nope")).status in (401, 404)


async def test_no_authorization_gets_the_sign_in_challenge(world: World) -> None:
    refused = await world.mcp(None)
    assert refused.status == 401
    assert _challenge_of(refused) == (
        f'Bearer resource_metadata="{world.url}/.well-known/oauth-protected-resource/mcp/open"'
    )
    # Secret URLs and bnd_ keys are never drawn into OAuth.
    bad_key = await world.mcp(None)
    assert bad_key.status == 401
    from support.inprocess import fetch

    for headers, path in (
        ({"Authorization": "Bearer bnd_live_" + "A" * 86}, "/mcp/open"),
        ({"Authorization": "bnd_live_short"}, "/mcp/open"),
        ({}, "/mcp/open/" + "A" * 86),
        ({}, "/mcp/open/short"),
    ):
        answered = await fetch(
            world.url + path,
            "POST",
            body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
            headers={"Content-Type": "application/json", **headers},
        )
        assert answered.status in (400, 404), (path, answered.status)
        assert "WWW-Authenticate" not in answered.headers


async def test_pkce_redirect_client_and_resource_are_checked(world: World) -> None:
    client_id = (await world.client())["client_id"]
    other_id = (await world.client(client_name="Another"))["client_id"]
    cases = [
        ({"code_verifier": "x" * 43}, "invalid_grant"),  # wrong verifier
        ({"code_verifier": ""}, "invalid_grant"),  # missing verifier
        ({"redirect_uri": "http://127.0.0.1:33418/other"}, "invalid_grant"),
        ({"client_id": other_id}, "invalid_grant"),
        ({"resource": f"{world.url}/mcp/other"}, "invalid_target"),
    ]
    for extra, error in cases:
        code, verifier = await world.code(client_id, world.managed)
        answered = await world.exchange(client_id, code, verifier, **extra)
        assert answered.status == 400, (extra, answered.text)
        assert answered.json()["error"] == error, extra
        # Whatever failed, the code is spent.
        again = await world.exchange(client_id, code, verifier)
        assert again.json()["error"] == "invalid_grant"
    # `plain` PKCE: a challenge equal to the verifier never verifies.
    verifier, _ = pkce()
    code, _ = await world.code(client_id, world.managed, challenge=verifier[:43])
    answered = await world.exchange(client_id, code, verifier[:43])
    assert answered.json()["error"] == "invalid_grant"
    # The right resource is accepted.
    code, verifier = await world.code(client_id, world.managed)
    ok = await world.exchange(client_id, code, verifier, resource=f"{world.url}/mcp/open")
    assert ok.status == 200, ok.text


async def test_a_code_is_one_time_and_its_reuse_ends_the_grant(world: World) -> None:
    client_id = (await world.client())["client_id"]
    code, verifier = await world.code(client_id, world.managed)
    first = await world.exchange(client_id, code, verifier)
    assert first.status == 200
    access = first.json()["access_token"]
    assert (await world.mcp(access)).status == 200
    second = await world.exchange(client_id, code, verifier)
    assert second.status == 400 and second.json()["error"] == "invalid_grant"
    later(world.server, seconds=2)  # past the proxy's 1-second memo
    revoked = await world.mcp(access)
    assert revoked.status == 401 and 'error="invalid_token"' in _challenge_of(revoked)


async def test_a_code_expires_after_a_minute(world: World) -> None:
    client_id = (await world.client())["client_id"]
    code, verifier = await world.code(client_id, world.managed)
    later(world.server, seconds=61)
    answered = await world.exchange(client_id, code, verifier)
    assert answered.status == 400 and answered.json()["error"] == "invalid_grant"


async def test_refresh_rotates_and_reuse_revokes_the_grant(world: World) -> None:
    tokens = await world.tokens(world.zk)
    refresh = {"grant_type": "refresh_token", "client_id": tokens["client_id"]}
    rotated = await world.token({**refresh, "refresh_token": tokens["refresh_token"]})
    assert rotated.status == 200, rotated.text
    fresh = rotated.json()
    assert fresh["refresh_token"] != tokens["refresh_token"]
    assert (await world.mcp(fresh["access_token"])).status == 200
    # Another client cannot use it, and that changes nothing.
    stranger = (await world.client(client_name="Stranger"))["client_id"]
    stolen = await world.token(
        {**refresh, "client_id": stranger, "refresh_token": fresh["refresh_token"]}
    )
    assert stolen.json()["error"] == "invalid_grant"
    # The old refresh token again: the whole grant ends.
    reused = await world.token({**refresh, "refresh_token": tokens["refresh_token"]})
    assert reused.status == 400 and reused.json()["error"] == "invalid_grant"
    later(world.server, seconds=2)
    assert (await world.mcp(fresh["access_token"])).status == 401
    gone = await world.token({**refresh, "refresh_token": fresh["refresh_token"]})
    assert gone.json()["error"] == "invalid_grant"


async def test_expired_access_tokens_get_401_and_refresh_still_works(world: World) -> None:
    tokens = await world.tokens(world.managed)
    later(world.server, seconds=3601)
    expired = await world.mcp(tokens["access_token"])
    assert expired.status == 401
    assert 'error="invalid_token"' in _challenge_of(expired)
    assert "resource_metadata=" in _challenge_of(expired)
    rotated = await world.token(
        {
            "grant_type": "refresh_token",
            "client_id": tokens["client_id"],
            "refresh_token": tokens["refresh_token"],
        }
    )
    assert rotated.status == 200
    assert (await world.mcp(rotated.json()["access_token"])).status == 200


async def test_a_grant_ends_after_its_days_whatever_its_refreshes(world: World) -> None:
    tokens = await world.tokens(world.managed)
    refresh_token = tokens["refresh_token"]
    for _ in range(4):  # 4 x 25 days > 90 days
        later(world.server, days=25)
        rotated = await world.token(
            {
                "grant_type": "refresh_token",
                "client_id": tokens["client_id"],
                "refresh_token": refresh_token,
            }
        )
        if rotated.status != 200:
            break
        refresh_token = rotated.json()["refresh_token"]
    assert rotated.status == 400 and rotated.json()["error"] == "invalid_grant"


async def test_client_authentication(world: World) -> None:
    confidential = await world.client(token_endpoint_auth_method="client_secret_basic")
    client_id, secret = confidential["client_id"], confidential["client_secret"]
    assert secret.startswith("bndcs_")
    import base64

    def basic(user: str, password: str) -> dict[str, str]:
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {raw}"}

    code, verifier = await world.code(client_id, world.managed)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
    }
    wrong = await world.token(form, basic(client_id, secret[:-1] + "x"))
    assert wrong.status == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    missing = await world.token({**form, "client_id": client_id})
    assert missing.status == 401 and missing.json()["error"] == "invalid_client"
    ok = await world.token(form, basic(client_id, secret))
    assert ok.status == 200, ok.text
    # client_secret_post works too.
    code, verifier = await world.code(client_id, world.managed)
    posted = await world.token(
        {
            **form,
            "code": code,
            "code_verifier": verifier,
            "client_id": client_id,
            "client_secret": secret,
        }
    )
    assert posted.status == 200, posted.text
    unknown = await world.token({**form, "client_id": "bndc_nobody"})
    assert unknown.status == 401 and unknown.json()["error"] == "invalid_client"
    public = (await world.client())["client_id"]
    with_secret = await world.token({**form, "client_id": public, "client_secret": "x"})
    assert with_secret.status == 401


async def test_unsupported_grant_types_and_bad_requests(world: World) -> None:
    client_id = (await world.client())["client_id"]
    password = await world.token({"grant_type": "password", "client_id": client_id})
    assert password.status == 400 and password.json()["error"] == "unsupported_grant_type"
    none = await world.token({"client_id": client_id})
    assert none.json()["error"] == "invalid_request"
    from support.inprocess import fetch

    as_json = await fetch(
        world.url + "/oauth/token", "POST", body="{}", headers={"Content-Type": "application/json"}
    )
    assert as_json.status == 400 and as_json.json()["error"] == "invalid_request"


async def test_legacy_routes_take_the_token_too(world: World) -> None:
    from support.inprocess import fetch

    tokens = await world.tokens(world.managed)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    for suffix in ("/sse", "/messages?session=x"):
        url = f"{world.url}/mcp/open{suffix}"
        method, body = ("GET", None) if suffix == "/sse" else ("POST", b"{}")
        admitted = await fetch(url, method, body=body, headers=bearer)
        # Admitted: what answers is the route's own rule (no legacy stream here), not the token.
        assert admitted.status not in (401, 403), (suffix, admitted.text)
        message = admitted.json()["error"]["message"]
        assert "legacy SSE transport" in message or "Session not found" in message
        assert "WWW-Authenticate" not in admitted.headers
        other = await fetch(f"{world.url}/mcp/other{suffix}", method, body=body, headers=bearer)
        assert other.status == 404 and other.json()["error"]["code"] == -32001
        missing = await fetch(url, method, body=body)
        assert missing.status == 401 and "resource_metadata=" in missing.headers["WWW-Authenticate"]


async def test_a_code_naming_a_connection_of_another_service_makes_no_grant(world: World) -> None:
    client_id = (await world.client())["client_id"]
    code, verifier = await world.code(client_id, world.managed, service="other")
    answered = await world.exchange(client_id, code, verifier)
    assert answered.status == 400 and answered.json()["error"] == "invalid_grant"
