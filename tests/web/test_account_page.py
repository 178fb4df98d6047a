"""`/account/password` over real HTTP against the in-process appliance.

Accounts with a local password change it as before. Accounts provisioned by single sign-on (no
local password; made here through the real OIDC flow against the loopback provider) are told
that they sign in through the provider, and a POST is refused and changes nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from accounts.test_oidc import Factory, signed_in_email, sso, sso_login  # noqa: F401 - fixture
from support.inprocess import (
    PASSWORD,
    PASSWORD_HASH,
    Browser,
    Server,
    add_user,
    later,
    session_browser,
)

from bindify_appliance.store.models import Session, User

SSO_EMAIL = "sso.user@example.com"  # the loopback provider's default login
NEW = "a brand new passphrase"
NO_PASSWORD = "This account has no password to change: it signs in with single sign-on."


def _account(server: Server, email: str) -> tuple[Any, ...]:
    """What a password change would touch: the user row and the number of their sessions."""

    def unit() -> tuple[Any, ...]:
        row = User.get(User.email == email)
        sessions = Session.select().where(Session.user == row.id).count()
        return (row.password_hash, row.updated_at, row.failed_logins, row.locked_until, sessions)

    return server.store.call(unit)


def _has_password_form(html: str) -> bool:
    return 'action="/account/password"' in html and 'name="current_password"' in html


async def test_a_password_account_sees_the_form_and_changes_its_password(
    server: Server, member_id: str
) -> None:
    browser = await session_browser(server, member_id)
    home = await browser.get("/")
    assert home.status == 200 and 'href="/account/password">Password</a>' in home.text
    page = await browser.get("/account/password")
    assert page.status == 200
    assert "<title>Change password · Bindify</title>" in page.text
    assert _has_password_form(page.text) and "single sign-on" not in page.text

    wrong = await browser.post(
        "/account/password", {"current_password": "not it", "new_password": NEW}
    )
    assert wrong.status == 400 and "The current password is not correct." in wrong.text
    assert _account(server, "member@example.com")[0] == PASSWORD_HASH

    done = await browser.post(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW}
    )
    assert done.status == 303 and done.location == "/account/password?done=changed"
    assert _account(server, "member@example.com")[0] != PASSWORD_HASH
    assert (await Browser(server.url).login("member@example.com", NEW)).status == 303


async def test_an_sso_only_account_is_told_it_has_no_password(sso: Factory) -> None:  # noqa: F811
    server, provider = await sso()
    browser = Browser(server.url)
    assert (await sso_login(browser, provider)).status == 303
    assert _account(server, SSO_EMAIL)[0] is None  # provisioned without a local password

    home = await browser.get("/")
    assert home.status == 200 and 'action="/logout"' in home.text
    assert 'href="/account/password"' not in home.text  # the navigation offers no "Password"
    page = await browser.get("/account/password")
    assert page.status == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert 'href="/account/password"' not in page.text
    assert "<title>Password · Bindify</title>" in page.text
    assert not _has_password_form(page.text) and 'type="password"' not in page.text
    assert "signs in with single sign-on through" in page.text
    assert f"<strong>{urlsplit(provider.url).hostname}</strong>" in page.text
    assert "no password to change" in page.text


async def test_a_post_by_an_sso_only_account_changes_nothing(sso: Factory) -> None:  # noqa: F811
    server, provider = await sso()
    here, elsewhere = Browser(server.url), Browser(server.url)
    for browser in (here, elsewhere):
        assert (await sso_login(browser, provider)).status == 303
    await here.get("/")  # a page with a form sets the _xsrf cookie
    before = _account(server, SSO_EMAIL)
    assert before[0] is None and before[-1] == 2

    # More attempts than the sign-in limiter allows (20 per 5 minutes): there is no password to
    # guess, so none of them counts, and each one is the same plain refusal.
    for _ in range(21):
        refused = await here.post(
            "/account/password", {"current_password": "", "new_password": NEW}
        )
        assert refused.status == 409
        assert f'role="alert">{NO_PASSWORD} Nothing was changed.</p>' in refused.text
        assert not _has_password_form(refused.text)
    # CSRF is checked first, as on every form.
    forged = await here.request(
        "POST", "/account/password", form={"current_password": "", "new_password": NEW}, xsrf=False
    )
    assert forged.status == 403 and "form expired" in forged.text

    assert _account(server, SSO_EMAIL) == before  # no hash, no lockout, no session ended
    for browser in (here, elsewhere):
        assert await signed_in_email(browser) == SSO_EMAIL
    assert (await Browser(server.url).login(SSO_EMAIL, NEW)).status == 400


async def test_an_sso_identity_linked_to_a_password_account_keeps_the_form(
    sso: Factory,  # noqa: F811
) -> None:
    server, provider = await sso(oidc_allowed_domains=())
    add_user(server, SSO_EMAIL)
    browser = Browser(server.url)
    assert (await sso_login(browser, provider)).status == 303  # linked by verified email
    page = await browser.get("/account/password")
    assert page.status == 200 and _has_password_form(page.text)
    assert "single sign-on" not in page.text
    home = await browser.get("/")
    assert 'href="/account/password">Password</a>' in home.text


# -- guessing the current password (security review: limiter and lockout) -------------------

MEMBER = "member@example.com"


async def test_a_correct_password_after_the_address_limit_changes_nothing(
    server: Server, member_id: str
) -> None:
    """The per-address limiter counts an attempt before the password is checked, so a right
    guess made after the 429s is refused like the wrong ones."""
    browser = await session_browser(server, member_id)
    await browser.get("/account/password")
    guesser = Browser(server.url)
    for _ in range(20):  # the sign-in form's whole allowance for this address (scope "login")
        assert (await guesser.login("nobody@example.com", "wrong guess")).status in (400, 429)
    before = _account(server, MEMBER)

    limited = await browser.post(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW}
    )
    assert limited.status == 429, limited.status
    assert limited.headers["Retry-After"]
    assert _account(server, MEMBER) == before  # same hash, same session count
    assert before[0] == PASSWORD_HASH


async def test_wrong_current_passwords_lock_the_account_for_sign_in_too(
    server: Server, member_id: str
) -> None:
    """Five wrong current passwords lock the account exactly as five failed sign-ins do; while
    locked, neither the page nor the sign-in form checks the password."""
    browser = await session_browser(server, member_id)
    await browser.get("/account/password")
    for _ in range(5):
        wrong = await browser.post(
            "/account/password", {"current_password": "not it", "new_password": NEW}
        )
        assert wrong.status == 400 and "The current password is not correct." in wrong.text
    assert _account(server, MEMBER)[2] == 5  # failed_logins: the sign-in lockout's counter

    signin = await Browser(server.url).login(MEMBER, PASSWORD)
    assert signin.status == 429 and signin.headers["Retry-After"] == "60"
    locked = await browser.post(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW}
    )
    assert locked.status == 429 and locked.headers["Retry-After"] == "60"
    assert "Too many failed attempts for this account" in locked.text
    assert _account(server, MEMBER)[0] == PASSWORD_HASH

    later(server, minutes=1, seconds=1)
    done = await browser.post(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW}
    )
    assert done.status == 303
    changed = _account(server, MEMBER)
    assert changed[0] != PASSWORD_HASH and changed[2] == 0 and changed[3] is None


async def test_failed_sign_ins_lock_the_password_page_too(server: Server, member_id: str) -> None:
    browser = await session_browser(server, member_id)
    await browser.get("/account/password")
    guesser = Browser(server.url)
    for _ in range(5):
        assert (await guesser.login(MEMBER, "wrong guess")).status == 400
    locked = await browser.post(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW}
    )
    assert locked.status == 429
    assert _account(server, MEMBER)[0] == PASSWORD_HASH
