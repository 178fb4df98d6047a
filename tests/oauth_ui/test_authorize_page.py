"""`/oauth/authorize` against a running appliance: every refusal, sign-in, consent, answers.

Each security rule is the attacker's request: an unregistered redirect URI gets a page (no
Location), PKCE-less and `plain` requests are refused, a consent POST without the CSRF token or
for another member's request changes nothing, a zero-knowledge connection needs its own secret
(never echoed), and the code is bound to the server-side record, not to form fields.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from support.inprocess import (
    PASSWORD,
    Browser,
    Server,
    add_token,
    add_user,
    api,
    session_browser,
    start_appliance,
)

from oauth_ui.flow import (
    REDIRECT,
    add_open_service,
    answer,
    answer_query,
    authorize_path,
    connect,
    consent,
    pkce,
    register_client,
)

UNKNOWN = "0" * 32


def _is_page(response, status: int = 400) -> None:  # type: ignore[no-untyped-def]
    assert response.status == status, response.text[:500]
    assert response.location is None
    assert response.headers["Content-Type"].startswith("text/html")


async def test_refusals_before_the_redirect_uri_is_known_are_pages(
    server: Server, client_id: str, member_id: str
) -> None:
    challenge = pkce().challenge
    anonymous = Browser(server.url)
    member = await session_browser(server, member_id)
    for browser in (anonymous, member):
        cases = {
            "unknown client": authorize_path(UNKNOWN, challenge),
            "no client": authorize_path(client_id, challenge, client_id=None),
            "no redirect": authorize_path(client_id, challenge, redirect_uri=None),
            "other redirect": authorize_path(
                client_id, challenge, redirect_uri="https://evil.example/cb"
            ),
            "other path": authorize_path(
                client_id, challenge, redirect_uri="http://127.0.0.1:8765/other"
            ),
        }
        for name, path in cases.items():
            got = await browser.get(path)
            _is_page(got)
            assert "evil.example" not in got.text, name
        # Repeated redirect_uri: which one would we trust? Neither.
        twice = authorize_path(client_id, challenge) + "&redirect_uri=https%3A%2F%2Fevil.example"
        _is_page(await browser.get(twice))


async def test_loopback_redirect_matches_any_port(server: Server, client_id: str) -> None:
    path = authorize_path(
        client_id, pkce().challenge, redirect_uri="http://127.0.0.1:40111/callback"
    )
    got = await Browser(server.url).get(path)
    assert got.status == 302
    assert (got.location or "").startswith("/login?next=")


async def test_refusals_after_the_redirect_uri_is_known_go_back_with_state_and_iss(
    server: Server, client_id: str, member_id: str
) -> None:
    challenge = pkce().challenge
    member = await session_browser(server, member_id)
    cases = {
        "no pkce": (authorize_path(client_id, None), "invalid_request"),
        "plain": (
            authorize_path(client_id, challenge, code_challenge_method="plain"),
            "invalid_request",
        ),
        "method missing": (
            authorize_path(client_id, challenge, code_challenge_method=None),
            "invalid_request",
        ),
        "short challenge": (authorize_path(client_id, "abc"), "invalid_request"),
        "token flow": (
            authorize_path(client_id, challenge, response_type="token"),
            "unsupported_response_type",
        ),
        "unknown service": (
            authorize_path(client_id, challenge, resource=f"{server.url}/mcp/nope"),
            "invalid_target",
        ),
        "another host": (
            authorize_path(client_id, challenge, resource="https://evil.example/mcp/open"),
            "invalid_target",
        ),
    }
    for browser in (Browser(server.url), member):
        for name, (path, error) in cases.items():
            got = await browser.get(path)
            assert got.status == 302, (name, got.text[:300])
            assert (got.location or "").startswith(REDIRECT + "?"), name
            query = answer_query(got.location)
            assert query["error"] == error, name
            assert query["state"] == "st-123"
            assert query["iss"] == server.url


async def test_sign_in_then_consent_then_code(
    server: Server, client_id: str, member_id: str, member_token: str
) -> None:
    made = await connect(server, member_token, "managed")
    browser = Browser(server.url)
    path = authorize_path(client_id, pkce().challenge, resource=f"{server.url}/mcp/open")
    first = await browser.get(path)
    assert first.status == 302
    login = first.location or ""
    assert login.startswith("/login?next=")
    next_path = parse_qs(urlsplit(login).query)["next"][0]
    assert next_path == path
    # The login page carries `next` in its form; posting it signs in and comes back.
    login_page = await browser.get(login)
    assert login_page.status == 200 and 'name="next"' in login_page.text
    signed = await browser.post(
        "/login", {"email": "member@example.com", "password": PASSWORD, "next": next_path}
    )
    assert signed.status == 303 and signed.location == path
    page, rid = await consent(browser, path)
    assert "Test Client" in page.text and "Unverified application" in page.text
    assert "127.0.0.1:8765" in page.text
    assert made["connection"]["id"] in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "form-action 'self' http://127.0.0.1:8765;" in csp
    done = await answer(browser, rid, action="approve", connection=made["connection"]["id"])
    assert done.status == 303, done.text[:500]
    query = answer_query(done.location)
    assert set(query) == {"code", "state", "iss"}
    assert query["state"] == "st-123" and query["iss"] == server.url
    # Answered once: the same request cannot mint a second code.
    again = await answer(browser, rid, action="approve", connection=made["connection"]["id"])
    _is_page(again)


async def test_denial_sends_access_denied(server: Server, client_id: str, member_id: str) -> None:
    browser = await session_browser(server, member_id)
    _page, rid = await consent(browser, authorize_path(client_id, pkce().challenge))
    denied = await answer(browser, rid, action="deny")
    assert denied.status == 303
    assert answer_query(denied.location) == {
        "error": "access_denied",
        "error_description": "The member declined the request.",
        "state": "st-123",
        "iss": server.url,
    }


async def test_consent_post_needs_csrf_and_its_own_member(
    server: Server, client_id: str, member_id: str, member_token: str
) -> None:
    made = await connect(server, member_token, "managed")
    browser = await session_browser(server, member_id)
    _page, rid = await consent(browser, authorize_path(client_id, pkce().challenge))
    form = {"request": rid, "action": "approve", "connection": made["connection"]["id"]}
    no_csrf = await browser.post("/oauth/authorize", form, xsrf=False)
    assert no_csrf.status == 403 and no_csrf.location is None
    other_id = add_user(server, "other@example.com")
    other = await session_browser(server, other_id)
    stolen = await other.post("/oauth/authorize", form)
    _is_page(stolen)
    # Another member's connection id is refused on the member's own request.
    theirs = await connect(server, add_token(server, other_id, "t"), "managed")
    wrong = await answer(browser, rid, action="approve", connection=theirs["connection"]["id"])
    assert wrong.status == 400 and wrong.location is None
    # None of the above consumed the request.
    done = await answer(browser, rid, action="approve", connection=made["connection"]["id"])
    assert done.status == 303 and "code" in answer_query(done.location)


async def test_zero_knowledge_needs_its_own_secret_never_echoed(
    server: Server, client_id: str, member_id: str, member_token: str
) -> None:
    zk = await connect(server, member_token, "zero_knowledge")
    other = await connect(server, member_token, "zero_knowledge")
    browser = await session_browser(server, member_id)
    page, rid = await consent(browser, authorize_path(client_id, pkce().challenge))
    assert 'name="secret"' in page.text
    cid = zk["connection"]["id"]
    missing = await answer(browser, rid, action="approve", connection=cid)
    assert missing.status == 400 and missing.location is None
    wrong = await answer(browser, rid, action="approve", connection=cid, secret=other["secret_url"])
    assert wrong.status == 400 and wrong.location is None
    assert other["secret_url"].rsplit("/", 1)[1] not in wrong.text
    assert "not this connection" in wrong.text
    junk = await answer(browser, rid, action="approve", connection=cid, secret="bnd_live_junk")
    assert junk.status == 400 and "bnd_live_junk" not in junk.text
    # The `bnd_` key works as well as the URL.
    done = await answer(browser, rid, action="approve", connection=cid, secret=zk["api_key"])
    assert done.status == 303 and "code" in answer_query(done.location)


async def test_everything_on_the_page_is_escaped(server: Server, member_id: str) -> None:
    evil = await register_client(server, [REDIRECT], name='<script>alert(1)</script>"><img>')
    browser = await session_browser(server, member_id)
    page, _rid = await consent(browser, authorize_path(evil, pkce().challenge))
    assert "<script>alert(1)" not in page.text and "<img>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_disabled_oauth_server_has_no_authorize_page(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = await start_appliance(tmp_path, oauth_server=False)
    try:
        got = await api(server, "GET", "/oauth/authorize?client_id=x")
        assert got.status == 404
    finally:
        await server.close()


async def test_a_long_request_survives_the_sign_in(server: Server, client_id: str) -> None:
    path = authorize_path(client_id, pkce().challenge, state="s" * 1000)
    browser = Browser(server.url)
    login = (await browser.get(path)).location or ""
    await browser.get(login)
    next_path = parse_qs(urlsplit(login).query)["next"][0]
    assert next_path == path
    signed = await browser.post(
        "/login", {"email": "admin@example.com", "password": PASSWORD, "next": next_path}
    )
    assert signed.status == 303 and signed.location == path


async def test_choices_outside_the_request_are_refused(
    server: Server, client_id: str, member_id: str, member_token: str
) -> None:
    admin = add_token(server, add_user(server, "boss@example.com", "admin"), "boss")
    await add_open_service(server, admin, "other")
    open_one = await connect(server, member_token, "managed")
    other_one = await connect(server, member_token, "managed", service="other")
    browser = await session_browser(server, member_id)
    path = authorize_path(client_id, pkce().challenge, resource=f"{server.url}/mcp/open/")
    page, rid = await consent(browser, path)
    assert other_one["connection"]["id"] not in page.text
    # A connection to another service than the requested resource.
    wrong = await answer(browser, rid, action="approve", connection=other_one["connection"]["id"])
    assert wrong.status == 400 and wrong.location is None
    # A disabled connection.
    cid = open_one["connection"]["id"]
    assert (await browser.post(f"/connections/{cid}/disable", {})).status == 303
    disabled = await answer(browser, rid, action="approve", connection=cid)
    assert disabled.status == 409 and disabled.location is None
    # An unknown action, and a request id that is no pending request.
    assert (await answer(browser, rid, action="steal")).status == 400
    assert (await answer(browser, "x" * 43, action="deny")).status == 400
    assert (await browser.get("/oauth/authorize?request=nope")).status == 400


async def test_a_repeated_parameter_is_refused(server: Server, client_id: str) -> None:
    path = authorize_path(client_id, pkce().challenge) + "&state=again"
    got = await Browser(server.url).get(path)
    assert got.status == 302
    assert answer_query(got.location)["error"] == "invalid_request"
