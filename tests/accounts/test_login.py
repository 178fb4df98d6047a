"""Password sign-in: lockout with backoff per account, and the per-IP limiter."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from support.inprocess import (
    PASSWORD,
    PASSWORD_HASH,
    Browser,
    Server,
    add_user,
    start_appliance,
    user_row,
)

from bindify_appliance.accounts.login import (
    IP_LIMITS,
    LOCK_THRESHOLD,
    IpLimiter,
    lock_for,
)
from bindify_appliance.clientaddr import ip_bucket
from bindify_appliance.clock import ManualClock
from bindify_appliance.kv import MemoryKV
from bindify_appliance.store import users as users_store


def test_backoff_policy() -> None:
    assert [lock_for(n) for n in range(1, LOCK_THRESHOLD)] == [None] * (LOCK_THRESHOLD - 1)
    minutes = [lock_for(LOCK_THRESHOLD + i) for i in range(8)]
    assert minutes == [timedelta(minutes=m) for m in (1, 2, 4, 8, 16, 32, 60, 60)]
    assert lock_for(10**6) == timedelta(hours=1)  # no overflow on absurd counts


async def attempt(browser: Browser, email: str, password: str) -> int:
    return (await browser.post("/login", {"email": email, "password": password})).status


async def fail_until_locked(server: Server, browser: Browser, email: str) -> None:
    for _ in range(LOCK_THRESHOLD):
        assert await attempt(browser, email, "wrong password!") == 400


async def test_lockout_blocks_even_the_right_password_then_backs_off(
    server: Server, member_id: str
) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    await fail_until_locked(server, browser, "member@example.com")
    response = await browser.post("/login", {"email": "member@example.com", "password": PASSWORD})
    assert response.status == 429
    assert response.headers["Retry-After"] == "60"
    assert "Too many failed sign-in attempts" in response.text
    assert "bindify_session" not in browser.cookies

    server.clock.advance(61)
    assert await attempt(browser, "member@example.com", "wrong again!!") == 400  # failure 6
    server.clock.advance(61)
    assert await attempt(browser, "member@example.com", PASSWORD) == 429  # now 2 minutes
    server.clock.advance(60)
    assert await attempt(browser, "member@example.com", PASSWORD) == 303
    row = user_row(server, member_id)
    assert row is not None and row.failed_logins == 0 and row.locked_until is None


async def test_a_success_resets_the_count(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    for _ in range(LOCK_THRESHOLD - 1):
        assert await attempt(browser, "member@example.com", "nope nope nope") == 400
    assert await attempt(browser, "member@example.com", PASSWORD) == 303
    other = Browser(server.url)
    await other.ensure_xsrf()
    for _ in range(LOCK_THRESHOLD - 1):
        assert await attempt(other, "member@example.com", "nope nope nope") == 400
    assert await attempt(other, "member@example.com", PASSWORD) == 303


async def test_password_reset_clears_the_lockout(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    await fail_until_locked(server, browser, "member@example.com")
    server.store.call(
        users_store.update_password, "member@example.com", PASSWORD_HASH, server.clock.now()
    )
    assert await attempt(browser, "member@example.com", PASSWORD) == 303


async def test_unknown_accounts_lock_the_same_way(server: Server) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    await fail_until_locked(server, browser, "nobody@example.com")
    response = await browser.post("/login", {"email": "nobody@example.com", "password": "x"})
    assert response.status == 429 and response.headers["Retry-After"] == "60"


async def test_wrong_password_and_unknown_email_read_the_same(
    server: Server, member_id: str
) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    wrong = await browser.post("/login", {"email": "member@example.com", "password": "bad"})
    unknown = await browser.post("/login", {"email": "ghost@example.com", "password": "bad"})
    assert wrong.status == unknown.status == 400
    assert "Incorrect email or password." in wrong.text
    assert "Incorrect email or password." in unknown.text


async def test_disabled_users_cannot_sign_in(server: Server) -> None:
    add_user(server, "gone@example.com", disabled=True)
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    response = await browser.post("/login", {"email": "gone@example.com", "password": PASSWORD})
    assert response.status == 403 and "disabled" in response.text
    assert "bindify_session" not in browser.cookies


async def test_invited_users_without_a_password_cannot_sign_in(server: Server) -> None:
    add_user(server, "invited@example.com", password_hash=None)
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    assert await attempt(browser, "invited@example.com", "") == 400


async def test_next_redirect_stays_on_the_site(server: Server, member_id: str) -> None:
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    ok = await browser.post(
        "/login", {"email": "member@example.com", "password": PASSWORD, "next": "/connections"}
    )
    assert ok.location == "/connections"
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        other = Browser(server.url)
        await other.ensure_xsrf()
        response = await other.post(
            "/login", {"email": "member@example.com", "password": PASSWORD, "next": evil}
        )
        assert response.location == "/", evil


# -- the per-IP limiter ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/setup", "/invite"])
async def test_per_ip_limit_on_the_sign_in_pages(server: Server, path: str) -> None:
    scope = path.strip("/")
    limit = IP_LIMITS[scope]
    browser = Browser(server.url)
    await browser.ensure_xsrf()
    # Align to the start of a window so the whole burst lands in one.
    now = server.clock.time()
    server.clock.advance(limit.window - now % limit.window)
    for i in range(limit.attempts):  # a new address each time: no account lockout involved
        form = {"email": f"a{i}@example.com", "password": "x", "token": "bogus"}
        response = await browser.post(path, form)
        assert response.status in (400, 404), response.text
    blocked = await browser.post(
        path, {"email": "b@example.com", "password": "x", "token": "bogus"}
    )
    assert blocked.status == 429
    assert "from your address" in blocked.text
    assert blocked.headers["Retry-After"] == str(limit.window)
    server.clock.advance(limit.window)
    again = await browser.post(path, {"email": "c@example.com", "password": "x", "token": "t"})
    assert again.status in (400, 404)


async def test_the_get_of_one_time_links_counts_too(server: Server) -> None:
    limit = IP_LIMITS["setup"]
    browser = Browser(server.url)
    server.clock.advance(limit.window - server.clock.time() % limit.window)
    for _ in range(limit.attempts):
        assert (await browser.get("/setup?token=guess")).status == 404
    assert (await browser.get("/setup?token=guess")).status == 429


async def test_limiter_keys_by_address_and_ipv6_prefix() -> None:
    clock = ManualClock(1_800_000_000 - 1_800_000_000 % 300)
    kv = MemoryKV(clock)
    limiter = IpLimiter(kv, clock)
    attempts = IP_LIMITS["login"].attempts
    for _ in range(attempts):
        assert await limiter.hit("login", "2001:db8::1") is None
    assert await limiter.hit("login", "2001:db8::ffff") == 300  # same /64
    assert await limiter.hit("login", "2001:db8:0:1::1") is None  # another /64
    assert await limiter.hit("login", "192.0.2.1") is None
    assert await limiter.hit("setup", "2001:db8::1") is None  # scopes count separately
    assert ip_bucket("not an address") == "unknown"


async def test_forwarded_addresses_count_only_from_trusted_proxies(tmp_path: Path) -> None:
    server = await start_appliance(tmp_path, trusted_proxies=("127.0.0.0/8",))
    try:
        limit = IP_LIMITS["setup"]
        server.clock.advance(limit.window - server.clock.time() % limit.window)
        browser = Browser(server.url)
        for _ in range(limit.attempts):
            r = await browser.get("/setup?token=x", headers={"X-Forwarded-For": "198.51.100.7"})
            assert r.status == 404
        blocked = await browser.get("/setup?token=x", headers={"X-Forwarded-For": "198.51.100.7"})
        assert blocked.status == 429
        # Another client behind the same proxy is not affected.
        other = await browser.get("/setup?token=x", headers={"X-Forwarded-For": "198.51.100.8"})
        assert other.status == 404
    finally:
        await server.close()
