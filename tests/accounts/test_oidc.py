"""Single sign-on against the test identity provider on loopback (tests/peers/oidc_provider.py).

Each test runs the real flow through the real application: `/login/oidc` → the provider's
authorize endpoint → `/login/oidc/callback` → code exchange (client secret, PKCE) → ID token
verification → user resolution → session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from peers.oidc_provider import Login, OidcProvider, SigningKey
from support.inprocess import Browser, Response, Server, add_user, start_appliance

from bindify_appliance.clock import ManualClock
from bindify_appliance.store.accounts import OidcIdentity
from bindify_appliance.store.models import User

CLIENT_ID = "bindify-test"
CLIENT_SECRET = "provider-secret-value"

Factory = Callable[..., Awaitable[tuple[Server, OidcProvider]]]


@pytest.fixture
async def sso(tmp_path: Path) -> AsyncIterator[Factory]:
    made: list[tuple[Server, OidcProvider]] = []

    async def make(**settings: Any) -> tuple[Server, OidcProvider]:
        provider = OidcProvider(ManualClock(), client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
        provider.start()
        options: dict[str, Any] = {
            "oidc_issuer": provider.url,
            "oidc_client_id": CLIENT_ID,
            "oidc_client_secret": CLIENT_SECRET,
            "oidc_allowed_domains": ("example.com",),
        }
        options.update(settings)
        server = await start_appliance(tmp_path, **options)
        provider.clock = server.clock  # one clock: token times and verification agree
        made.append((server, provider))
        return server, provider

    yield make
    for server, provider in made:
        await server.close()
        await provider.stop()


async def sso_login(browser: Browser, provider: OidcProvider) -> Response:
    start = await browser.get("/login/oidc?next=%2Fafter")
    assert start.status == 302, start.text
    assert start.location is not None and start.location.startswith(provider.url + "/authorize")
    approved = await browser.get(start.location)
    assert approved.status == 302
    assert approved.location is not None
    return await browser.get(approved.location)


async def signed_in_email(browser: Browser) -> str | None:
    me = await browser.api("GET", "/api/v1/me")
    return me.json()["user"]["email"] if me.status == 200 else None


def identities(server: Server) -> list[tuple[str, str, str]]:
    return server.store.call(
        lambda: [
            (i.issuer, i.subject, str(i.user_id))  # type: ignore[attr-defined]
            for i in OidcIdentity.select()
        ]
    )


def user_count(server: Server) -> int:
    return server.store.call(lambda: User.select().count())


async def refused(browser: Browser, provider: OidcProvider, status: int = 400) -> Response:
    response = await sso_login(browser, provider)
    assert response.status == status, response.text
    assert "bindify_session" not in browser.cookies
    assert await signed_in_email(browser) is None
    return response


# -- the happy paths --------------------------------------------------------------------------


async def test_first_login_provisions_by_verified_domain_then_signs_in_again(sso: Factory) -> None:
    server, provider = await sso()
    browser = Browser(server.url)
    response = await sso_login(browser, provider)
    assert response.status == 303, response.text
    assert response.location == "/after"
    assert await signed_in_email(browser) == "sso.user@example.com"
    me = (await browser.api("GET", "/api/v1/me")).json()["user"]
    assert me["role"] == "member" and me["status"] == "active"
    assert identities(server) == [(provider.url, "user-1", me["id"])]
    # PKCE and the client secret reached the provider's checks (it refuses otherwise).
    assert provider.token_requests[-1]["code_verifier"]

    again = Browser(server.url)
    assert (await sso_login(again, provider)).status == 303
    assert await signed_in_email(again) == "sso.user@example.com"
    assert user_count(server) == 1 and len(identities(server)) == 1


async def test_verified_email_links_to_the_existing_local_account(sso: Factory) -> None:
    server, provider = await sso(oidc_allowed_domains=())
    member = add_user(server, "sso.user@example.com", "member")
    browser = Browser(server.url)
    assert (await sso_login(browser, provider)).status == 303
    me = (await browser.api("GET", "/api/v1/me")).json()["user"]
    assert me["id"] == member and me["role"] == "member"
    assert identities(server) == [(provider.url, "user-1", member)]


async def test_a_verified_email_within_the_allowed_domains_links(sso: Factory) -> None:
    server, provider = await sso()  # allowed domains: example.com
    member = add_user(server, "sso.user@example.com", "member")
    browser = Browser(server.url)
    assert (await sso_login(browser, provider)).status == 303
    assert identities(server) == [(provider.url, "user-1", member)]


async def test_group_provisioning_uses_the_default_role(sso: Factory) -> None:
    server, provider = await sso(
        oidc_allowed_domains=(),
        oidc_allowed_groups=("bindify-admins",),
        oidc_default_role="admin",
    )
    provider.next_token = Login(email="ops@corp.test", groups=["staff", "bindify-admins"])
    browser = Browser(server.url)
    assert (await sso_login(browser, provider)).status == 303
    me = (await browser.api("GET", "/api/v1/me")).json()["user"]
    assert me["email"] == "ops@corp.test" and me["role"] == "admin"


async def test_a_custom_groups_claim_is_read(sso: Factory) -> None:
    server, provider = await sso(
        oidc_allowed_domains=(), oidc_allowed_groups=("eng",), oidc_groups_claim="roles"
    )
    provider.next_token = Login(email="dev@corp.test", claims={"roles": ["eng"]})
    assert (await sso_login(Browser(server.url), provider)).status == 303
    provider.next_token = Login(sub="user-2", email="x@corp.test", groups=["eng"])
    await refused(Browser(server.url), provider, 403)  # "groups" is not the configured claim


async def test_an_ec_key_works_too(sso: Factory) -> None:
    server, provider = await sso()
    provider.rotate(SigningKey.ec())
    assert (await sso_login(Browser(server.url), provider)).status == 303


# -- ID tokens that must be refused ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "login", "reason"),
    [
        ("wrong issuer", Login(claims={"iss": "http://127.0.0.1:1"}), "another issuer"),
        ("wrong audience", Login(claims={"aud": "someone-else"}), "another audience"),
        ("wrong azp", Login(claims={"aud": [CLIENT_ID, "other"], "azp": "other"}), "azp"),
        ("no subject", Login(claims={"sub": None}), "sub claim"),
        ("wrong nonce", Login(claims={"nonce": "not-the-one-we-sent"}), "nonce"),
        ("no nonce", Login(claims={"nonce": None}), "nonce"),
        ("alg none", Login(alg="none"), "algorithm is not allowed"),
        ("HS256 with the public key", Login(alg="HS256-public"), "algorithm is not allowed"),
        ("unpublished key", Login(sign_with=SigningKey.rsa("rsa-unpublished")), "unknown key"),
    ],
)
async def test_bad_id_tokens_are_refused(
    sso: Factory, caplog: pytest.LogCaptureFixture, name: str, login: Login, reason: str
) -> None:
    server, provider = await sso()
    provider.next_token = login
    with caplog.at_level(logging.WARNING):
        response = await refused(Browser(server.url), provider)
    assert "Single sign-on failed" in response.text
    assert any(reason in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]
    assert user_count(server) == 0 and identities(server) == []


async def test_a_key_signed_by_the_right_key_but_claiming_another_kid_is_refused(
    sso: Factory,
) -> None:
    server, provider = await sso()
    provider.next_token = Login(kid="no-such-kid")
    await refused(Browser(server.url), provider)


async def test_expiry_and_future_tokens_use_the_clock_with_leeway(sso: Factory) -> None:
    server, provider = await sso()
    now = int(server.clock.time())
    provider.next_token = Login(claims={"exp": now - 61})
    await refused(Browser(server.url), provider)
    provider.next_token = Login(claims={"exp": now - 30})  # inside the 60 s leeway
    assert (await sso_login(Browser(server.url), provider)).status == 303
    provider.next_token = Login(claims={"iat": now + 3600})
    await refused(Browser(server.url), provider)
    provider.next_token = Login(claims={"nbf": now + 3600})
    await refused(Browser(server.url), provider)


async def test_unknown_kid_refetches_the_key_set_once(sso: Factory) -> None:
    server, provider = await sso()
    assert (await sso_login(Browser(server.url), provider)).status == 303
    assert provider.jwks_fetches == 1
    server.clock.advance(30)
    provider.next_token = Login(sign_with=SigningKey.rsa("stranger"))
    await refused(Browser(server.url), provider)
    assert provider.jwks_fetches == 2  # one refetch for the unknown kid, no more
    provider.next_token = Login(sign_with=SigningKey.rsa("stranger-2"))
    await refused(Browser(server.url), provider)
    assert provider.jwks_fetches == 2  # refetches are rate-limited per key-set URL


async def test_key_rotation_at_the_provider_is_picked_up(sso: Factory) -> None:
    server, provider = await sso()
    assert (await sso_login(Browser(server.url), provider)).status == 303
    provider.rotate()  # the old key disappears from the key set
    server.clock.advance(60)
    assert (await sso_login(Browser(server.url), provider)).status == 303
    assert provider.jwks_fetches == 2


# -- who may sign in -------------------------------------------------------------------------


async def test_an_unverified_email_never_links_or_provisions(sso: Factory) -> None:
    server, provider = await sso()
    add_user(server, "sso.user@example.com", "admin")
    provider.next_token = Login(email_verified=False)
    response = await refused(Browser(server.url), provider, 403)
    assert "may not sign in" in response.text
    provider.next_token = Login(email="new.person@example.com", email_verified="false")
    await refused(Browser(server.url), provider, 403)
    assert identities(server) == [] and user_count(server) == 1


async def test_an_email_outside_the_allowed_domains_is_refused(sso: Factory) -> None:
    server, provider = await sso()
    provider.next_token = Login(email="someone@elsewhere.test")
    await refused(Browser(server.url), provider, 403)
    assert user_count(server) == 0


def account_row(server: Server, email: str) -> tuple[object, ...]:
    """What linking must leave alone: the user row as stored."""

    def unit() -> tuple[object, ...]:
        row = User.get(User.email == email)
        return (row.id, row.role, row.password_hash, row.updated_at, row.disabled_at)

    return server.store.call(unit)


async def test_an_existing_account_outside_the_allowed_domains_is_never_linked(
    sso: Factory,
) -> None:
    """A provider that vouches for `someone@elsewhere.test` (verified) does not get to take over
    the local account of that address when the appliance allows only example.com."""
    server, provider = await sso()  # allowed domains: example.com
    add_user(server, "someone@elsewhere.test", "member")
    before = account_row(server, "someone@elsewhere.test")
    provider.next_token = Login(sub="outsider", email="someone@elsewhere.test")
    response = await refused(Browser(server.url), provider, 403)
    assert "may not sign in" in response.text
    assert identities(server) == []
    assert account_row(server, "someone@elsewhere.test") == before


@pytest.mark.parametrize("domains", [(), ("example.com",)])
async def test_an_admin_account_is_never_linked_by_email(
    sso: Factory, domains: tuple[str, ...]
) -> None:
    """Whatever the domain policy, a verified email never links to an administrator: the page
    says an administrator signs in with their password, and nothing changes."""
    server, provider = await sso(oidc_allowed_domains=domains)
    add_user(server, "sso.user@example.com", "admin")
    before = account_row(server, "sso.user@example.com")
    response = await refused(Browser(server.url), provider, 403)
    assert "administrator" in response.text and "with their password" in response.text
    assert identities(server) == [] and user_count(server) == 1
    assert account_row(server, "sso.user@example.com") == before
    # The administrator still signs in with the password, as before.
    assert (await Browser(server.url).login("sso.user@example.com")).status == 303


async def test_a_disabled_user_cannot_sign_in_with_sso(sso: Factory) -> None:
    server, provider = await sso()
    add_user(server, "sso.user@example.com", disabled=True)
    response = await refused(Browser(server.url), provider, 403)
    assert "disabled" in response.text


async def test_identity_is_keyed_by_issuer_and_subject_not_email(sso: Factory) -> None:
    server, provider = await sso()
    assert (await sso_login(Browser(server.url), provider)).status == 303
    # The same subject with a different (even unverified) email is still the same user.
    provider.next_token = Login(email="renamed@example.com", email_verified=False)
    browser = Browser(server.url)
    assert (await sso_login(browser, provider)).status == 303
    assert await signed_in_email(browser) == "sso.user@example.com"


# -- the flow's own protections --------------------------------------------------------------


async def test_the_callback_is_bound_to_the_browser_and_works_once(sso: Factory) -> None:
    server, _provider = await sso()
    alice = Browser(server.url)
    start = await alice.get("/login/oidc")
    approved = await alice.get(start.location or "")
    callback = approved.location or ""
    mallory = Browser(server.url)
    assert (await mallory.get(callback)).status == 400  # no state cookie in this browser
    assert "bindify_session" not in mallory.cookies
    assert (await alice.get(callback)).status == 303
    # Replaying the same callback in the same browser fails: state and code are single-use.
    replay = Browser(server.url, cookies=dict(alice.cookies))
    replay.cookies.pop("bindify_session", None)
    assert (await replay.get(callback)).status == 400


async def test_a_refusal_at_the_provider_is_reported(sso: Factory) -> None:
    server, _provider = await sso()
    browser = Browser(server.url)
    response = await browser.get("/login/oidc/callback?error=access_denied&state=x")
    assert response.status == 400
    assert "cancelled or refused" in response.text


async def test_sso_routes_are_absent_when_not_configured(server: Server) -> None:
    browser = Browser(server.url)
    assert (await browser.get("/login/oidc")).status == 404
    assert (await browser.get("/login/oidc/callback?code=x&state=y")).status == 404
    assert "single sign-on" not in (await browser.get("/login")).text


async def test_the_next_parameter_never_leaves_the_site(sso: Factory) -> None:
    server, _provider = await sso()
    browser = Browser(server.url)
    start = await browser.get("/login/oidc?next=//evil.example/x")
    approved = await browser.get(start.location or "")
    done = await browser.get(approved.location or "")
    assert done.status == 303 and done.location == "/"


# -- the identity provider's answers go through the outbound policy -----------------------------


async def test_an_oversized_key_set_is_refused_without_reading_it_all(sso: Factory) -> None:
    server, provider = await sso()
    provider.jwks_size = 32 * 1024 * 1024  # the appliance reads at most 1 MiB of it
    await refused(Browser(server.url), provider)
    for _ in range(200):  # let the provider's handler notice the closed connection
        if provider.jwks_handlers_done:
            break
        await asyncio.sleep(0.05)
    assert provider.jwks_fetches == 1
    assert not provider.jwks_complete
    assert provider.jwks_sent < 16 * 1024 * 1024
    assert user_count(server) == 0


async def test_discovered_endpoints_with_a_non_canonical_numeric_host_are_refused(
    sso: Factory,
) -> None:
    server, provider = await sso()
    port = provider.url.rsplit(":", 1)[1]
    # The same loopback provider, spelled the way libc accepts and nobody means.
    provider.discovery_overrides = {"jwks_uri": f"http://0x7f.1:{port}/jwks"}
    await refused(Browser(server.url), provider)
    assert provider.jwks_fetches == 0 and user_count(server) == 0
