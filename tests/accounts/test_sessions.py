"""Browser sessions: fixation, expiry, sign-out, disabling, password reset, cookie attributes."""

from __future__ import annotations

import base64
from pathlib import Path

from support.inprocess import PASSWORD_HASH, Browser, Server, add_user, api, start_appliance

from bindify_appliance.accounts.sessions import SESSION_IDLE, SESSION_LIFETIME
from bindify_appliance.accounts.tokens import hash_token
from bindify_appliance.store import users as users_store
from bindify_appliance.store.models import PersonalToken, Session


def session_ids(server: Server) -> set[str]:
    return server.store.call(lambda: {s.id for s in Session.select()})


async def me(browser: Browser) -> int:
    return (await browser.api("GET", "/api/v1/me")).status


async def test_login_sets_a_new_session_and_drops_the_planted_one(
    server: Server, member_id: str
) -> None:
    attacker = Browser(server.url)
    assert (await attacker.login("member@example.com")).status == 303
    planted = attacker.cookies["bindify_session"]
    # The victim's browser somehow carries the attacker-known cookie, then signs in.
    victim = Browser(server.url)
    victim.cookies["bindify_session"] = planted
    await victim.get("/")  # a page under the planted session issues that session's XSRF token
    assert (await victim.login("member@example.com")).status == 303
    fresh = victim.cookies["bindify_session"]
    assert fresh != planted
    # The planted session was replaced: the attacker's copy no longer works.
    assert await me(attacker) == 401
    assert await me(victim) == 200
    assert len(session_ids(server)) == 1


async def test_the_session_token_itself_is_never_stored(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    raw = browser.cookies["bindify_session"]
    # Tornado's signed format: 2|1:0|len:timestamp|len:name|len:base64(value)|signature
    value = base64.b64decode(raw.split("|")[4].split(":", 1)[1]).decode()
    assert session_ids(server) == {hash_token(value)}
    assert value not in str(session_ids(server))


async def test_absolute_expiry(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    step = SESSION_IDLE.total_seconds() - 60
    elapsed = 0.0
    while elapsed + step < SESSION_LIFETIME.total_seconds():  # active, never idle
        server.clock.advance(step)
        elapsed += step
        assert await me(browser) == 200
    server.clock.advance(SESSION_LIFETIME.total_seconds() - elapsed + 1)
    assert await me(browser) == 401
    assert session_ids(server) == set()  # the expired record is removed when seen


async def test_idle_expiry(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    server.clock.advance(SESSION_IDLE.total_seconds() - 10)
    assert await me(browser) == 200  # activity refreshes the idle timer…
    server.clock.advance(SESSION_IDLE.total_seconds() - 10)
    assert await me(browser) == 200
    server.clock.advance(SESSION_IDLE.total_seconds() + 1)  # …and idleness ends it
    assert await me(browser) == 401


async def test_sign_out_ends_the_session_server_side(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    stolen = dict(browser.cookies)
    response = await browser.post("/logout", {})
    assert response.status == 303 and response.location == "/login"
    assert "bindify_session" not in browser.cookies
    replay = Browser(server.url, cookies=stolen)
    assert await me(replay) == 401
    assert (await replay.get("/")).status == 302


async def test_logout_needs_post_and_csrf(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    assert (await browser.get("/logout")).status == 405
    assert (await browser.request("POST", "/logout", form={}, xsrf=False)).status == 403
    assert await me(browser) == 200


async def test_disabling_a_user_ends_their_sessions_at_once(
    server: Server, admin_token: str, member_id: str
) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    assert await me(browser) == 200
    r = await api(
        server, "PATCH", f"/api/v1/users/{member_id}", {"disabled": True}, token=admin_token
    )
    assert r.status == 200
    assert await me(browser) == 401
    assert session_ids(server) == set()
    # Re-enabling does not revive the old session.
    await api(server, "PATCH", f"/api/v1/users/{member_id}", {"disabled": False}, token=admin_token)
    assert await me(browser) == 401


async def test_password_reset_ends_sessions(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    server.store.call(
        users_store.update_password, "member@example.com", PASSWORD_HASH, server.clock.now()
    )
    assert await me(browser) == 401


async def test_a_tampered_cookie_is_ignored(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    value = browser.cookies["bindify_session"]
    browser.cookies["bindify_session"] = value[:-3] + (
        "000" if not value.endswith("000") else "111"
    )
    assert await me(browser) == 401


async def test_cookie_attributes_over_http(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.login("member@example.com")
    header = browser.set_cookie_header("bindify_session") or ""
    lowered = header.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    assert "secure" not in lowered
    xsrf = (browser.set_cookie_header("_xsrf") or "").lower()
    assert "httponly" in xsrf and "samesite=strict" in xsrf


HOST_SESSION = "__Host-bindify_session"
HOST_XSRF = "__Host-_xsrf"


async def test_https_without_a_path_uses_host_prefixed_cookies(tmp_path: Path) -> None:
    """`__Host-` cookies are Secure, Path=/ and host-only: a sibling subdomain cannot set or
    overwrite them (no cookie tossing of a session or an XSRF token)."""
    server = await start_appliance(tmp_path, base_url="https://bindify.example.com")
    try:
        add_user(server, "member@example.com")
        browser = Browser(server.url, xsrf_cookie=HOST_XSRF)
        assert (await browser.login("member@example.com")).status == 303
        for name in (HOST_SESSION, HOST_XSRF):
            header = (browser.set_cookie_header(name) or "").lower()
            assert header, f"no {name} cookie was set"
            assert "; secure" in header and "; path=/" in header and "domain=" not in header
        assert set(browser.cookies) == {HOST_SESSION, HOST_XSRF}
        assert await me(browser) == 200
        assert (await browser.api("POST", "/api/v1/tokens", {"name": "ci"})).status == 201
        # The same value under the unprefixed name is no session.
        plain = Browser(server.url, cookies={"bindify_session": browser.cookies[HOST_SESSION]})
        assert await me(plain) == 401
    finally:
        await server.close()


async def test_https_with_a_path_keeps_secure_unprefixed_cookies(tmp_path: Path) -> None:
    server = await start_appliance(tmp_path, base_url="https://example.com/bindify")
    try:
        add_user(server, "member@example.com")
        browser = Browser(server.url)
        await browser.login("member@example.com")
        assert "; secure" in (browser.set_cookie_header("bindify_session") or "").lower()
        assert "; secure" in (browser.set_cookie_header("_xsrf") or "").lower()
        assert not any(name.startswith("__Host-") for name in browser.cookies)
    finally:
        await server.close()


def token_count(server: Server, user_id: str) -> int:
    return server.store.call(
        lambda: PersonalToken.select().where(PersonalToken.user == user_id).count()
    )


async def test_an_xsrf_token_from_another_session_is_refused(
    server: Server, member_id: str, admin_id: str
) -> None:
    """Double-submit alone trusts any `_xsrf` cookie the browser holds; an attacker who can plant
    one (a sibling subdomain over plain http, a pre-sign-in visit) would then forge requests.
    The token is bound to the session, so a token of another session, or of the same browser
    before it signed in, is refused with 403 `csrf_failed` and changes nothing."""
    victim = Browser(server.url)
    before_sign_in = await victim.ensure_xsrf()
    assert (await victim.login("member@example.com")).status == 303
    other = Browser(server.url)
    assert (await other.login("admin@example.com")).status == 303
    anonymous = Browser(server.url)
    own = victim.cookies["_xsrf"]

    for planted in (before_sign_in, other.cookies["_xsrf"], await anonymous.ensure_xsrf()):
        victim.cookies["_xsrf"] = planted  # cookie and header/form agree: double-submit passes
        made = await victim.api("POST", "/api/v1/tokens", {"name": "forged"})
        assert made.status == 403 and made.json()["error"] == "csrf_failed"
        out = await victim.post("/logout", {})
        assert out.status == 403 and "form expired" in out.text
        assert await me(victim) == 200  # still signed in: the forged sign-out did nothing
    assert token_count(server, member_id) == 0

    victim.cookies["_xsrf"] = own
    assert (await victim.api("POST", "/api/v1/tokens", {"name": "mine"})).status == 201
    assert token_count(server, member_id) == 1
