"""First administrator from the setup URL, and invites (one-time, 7 days)."""

from __future__ import annotations

from urllib.parse import urlsplit

from support.inprocess import PASSWORD, Browser, Server, add_user, api

from bindify_appliance.accounts.setup import issue_setup_token
from bindify_appliance.store.models import Invite, SetupState, User


def setup_path(server: Server) -> str:
    url = server.store.call(issue_setup_token, server.ctx.settings, server.clock)
    parts = urlsplit(url)
    assert url.startswith(server.url + "/setup?token=")
    return f"{parts.path}?{parts.query}"


def token_of(path: str) -> str:
    return path.split("token=", 1)[1]


def admins(server: Server) -> list[str]:
    return server.store.call(
        lambda: [u.email for u in User.select().where(User.role == "admin").order_by(User.email)]
    )


async def complete(browser: Browser, path: str, email: str, password: str = PASSWORD) -> int:
    page = await browser.get(path)
    assert page.status == 200, page.text
    response = await browser.post(
        "/setup", {"token": token_of(path), "email": email, "password": password}
    )
    return response.status


async def test_setup_creates_the_admin_and_the_lock_and_signs_in(server: Server) -> None:
    path = setup_path(server)
    browser = Browser(server.url)
    page = await browser.get(path)
    assert page.status == 200
    assert '<label for="email">' in page.text and '<label for="password">' in page.text
    response = await browser.post(
        "/setup", {"token": token_of(path), "email": "Root@Example.com", "password": PASSWORD}
    )
    assert response.status == 303 and response.location == "/"
    me = (await browser.api("GET", "/api/v1/me")).json()
    assert me["user"]["email"] == "root@example.com" and me["user"]["role"] == "admin"
    lock = server.store.call(lambda: SetupState.get_or_none(SetupState.id == 1))
    assert lock is not None and str(lock.admin_id) == me["user"]["id"]
    # The URL is spent: the form and the POST both answer 404 now.
    assert (await browser.get(path)).status == 404
    again = Browser(server.url)
    await again.ensure_xsrf()
    replay = await again.post(
        "/setup", {"token": token_of(path), "email": "x@example.com", "password": PASSWORD}
    )
    assert replay.status == 404
    assert admins(server) == ["root@example.com"]


async def test_older_setup_urls_die_when_setup_completes(server: Server) -> None:
    first, second = setup_path(server), setup_path(server)  # two starts, two printed URLs
    assert await complete(Browser(server.url), second, "root@example.com") == 303
    assert (await Browser(server.url).get(first)).status == 404


async def test_reset_setup_creates_an_additional_admin(server: Server, admin_id: str) -> None:
    path = setup_path(server)  # what `bindify admin reset-setup` prints
    assert await complete(Browser(server.url), path, "second@example.com") == 303
    assert admins(server) == ["admin@example.com", "second@example.com"]


async def test_setup_rejects_bad_input_and_keeps_the_token(server: Server) -> None:
    path = setup_path(server)
    browser = Browser(server.url)
    await browser.get(path)
    short = await browser.post(
        "/setup", {"token": token_of(path), "email": "root@example.com", "password": "short"}
    )
    assert short.status == 400 and "at least 10 characters" in short.text
    bad = await browser.post(
        "/setup", {"token": token_of(path), "email": "not-an-email", "password": PASSWORD}
    )
    assert bad.status == 400 and "not a valid email address" in bad.text
    add_user(server, "taken@example.com")
    taken = await browser.post(
        "/setup", {"token": token_of(path), "email": "taken@example.com", "password": PASSWORD}
    )
    assert taken.status == 400 and "already exists" in taken.text
    assert await complete(browser, path, "root@example.com") == 303


async def test_bad_or_expired_setup_tokens_are_not_found(server: Server) -> None:
    browser = Browser(server.url)
    assert (await browser.get("/setup")).status == 404
    assert (await browser.get("/setup?token=" + "A" * 43)).status == 404
    path = setup_path(server)
    server.clock.advance(31 * 60)
    assert (await browser.get(path)).status == 404


# -- invites ---------------------------------------------------------------------------------


async def invite(server: Server, admin_token: str, email: str, role: str = "member") -> str:
    response = await api(
        server, "POST", "/api/v1/users", {"email": email, "role": role}, token=admin_token
    )
    assert response.status == 201, response.text
    body = response.json()
    assert body["user"]["status"] == "invited" and body["user"]["role"] == role
    url = body["invite_url"]
    assert url.startswith(server.url + "/invite?token=")
    return url[len(server.url) :]


async def test_an_invite_lets_the_user_choose_a_password_once(
    server: Server, admin_token: str
) -> None:
    path = await invite(server, admin_token, "new@example.com")
    browser = Browser(server.url)
    page = await browser.get(path)
    assert page.status == 200 and "new@example.com" in page.text
    accepted = await browser.post("/invite", {"token": token_of(path), "password": PASSWORD})
    assert accepted.status == 303 and accepted.location == "/"
    me = (await browser.api("GET", "/api/v1/me")).json()["user"]
    assert me["email"] == "new@example.com" and me["status"] == "active"
    assert (await Browser(server.url).get(path)).status == 404
    # And the password works for a normal sign-in.
    assert (await Browser(server.url).login("new@example.com")).status == 303


async def test_invites_expire_after_seven_days(server: Server, admin_token: str) -> None:
    path = await invite(server, admin_token, "late@example.com")
    server.clock.advance(7 * 24 * 3600 - 60)
    assert (await Browser(server.url).get(path)).status == 200
    server.clock.advance(120)
    assert (await Browser(server.url).get(path)).status == 404


async def test_invite_of_a_deleted_or_disabled_user_is_dead(
    server: Server, admin_token: str
) -> None:
    path = await invite(server, admin_token, "gone@example.com")
    user_id = server.store.call(lambda: User.get(User.email == "gone@example.com").id)
    await api(server, "PATCH", f"/api/v1/users/{user_id}", {"disabled": True}, token=admin_token)
    assert (await Browser(server.url).get(path)).status == 404
    await api(server, "DELETE", f"/api/v1/users/{user_id}", token=admin_token)
    assert server.store.call(lambda: Invite.select().count()) == 0


async def test_invite_password_policy(server: Server, admin_token: str) -> None:
    path = await invite(server, admin_token, "p@example.com")
    browser = Browser(server.url)
    await browser.get(path)
    weak = await browser.post("/invite", {"token": token_of(path), "password": "123"})
    assert weak.status == 400 and "at least 10 characters" in weak.text
    assert (
        await browser.post("/invite", {"token": token_of(path), "password": PASSWORD})
    ).status == 303
