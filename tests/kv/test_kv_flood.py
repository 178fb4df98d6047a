"""DESIGN §9 "Anonymous requests cannot fill the KV", as the attacker does it: a flood of
anonymous `GET /login/oidc` against a running appliance (in-process KV, a real OIDC test
provider, the real OAuth upstream), then the member's one-time records must still work.

- `test_flood_never_evicts_a_members_claim_or_oauth_state`: a small in-process KV (the flood
  that took 100,050 requests against the default size takes a few hundred here). A member's
  claim and OAuth connect state written before and during the flood are still there and usable
  afterwards, and the flooding address got 429 with `Retry-After`.
- `test_a_full_anonymous_budget_refuses_new_anonymous_writes_only`: many addresses each under
  the per-IP limit fill the anonymous budget; new anonymous writes then get 429 (a page), while
  a sign-in started before the flood (its state is an anonymous one-time record) still
  completes, and the member's own connect state and claim are still written.

The flood comes through a trusted reverse proxy (`BINDIFY_TRUSTED_PROXIES`), so each request
is attributed to the `X-Forwarded-For` address, the way a real deployment sees clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from peers.oauth_upstream import OAuthUpstream
from peers.oidc_provider import OidcProvider
from support.connect_helpers import path_of, play_authorize
from support.inprocess import START, Appliance, Browser, Response, api, fetch, start_appliance

from bindify_appliance.clock import ManualClock
from bindify_appliance.kv import MemoryKV

CLIENT_ID = "bindify-test"
CLIENT_SECRET = "provider-secret-value"
FLOODER = "203.0.113.7"


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    oidc = OidcProvider(ManualClock(), client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    oidc.start()
    yield oidc
    await oidc.stop()


def _environ(provider: OidcProvider, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {
        "BINDIFY_OIDC_ISSUER": provider.url,
        "BINDIFY_OIDC_CLIENT_ID": CLIENT_ID,
        "BINDIFY_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "BINDIFY_OIDC_ALLOWED_DOMAINS": "example.com",
        "BINDIFY_TRUSTED_PROXIES": "127.0.0.1/32",
        **(extra or {}),
    }


async def _setup(app: Appliance, provider: OidcProvider) -> tuple[OAuthUpstream, Browser]:
    """The OAuth service `acme` (added by an admin) and a signed-in member's browser."""
    from support.inprocess import add_token, add_user

    provider.clock = app.clock
    upstream = OAuthUpstream(clock=app.clock, access_ttl=60)
    await upstream.__aenter__()
    admin = add_user(app, "admin@example.com", "admin")
    token = add_token(app, admin, "admin")
    body = {
        "id": "acme",
        "name": "Acme",
        "mcp_url": upstream.mcp_url,
        "auth": {"type": "oauth"},
    }
    created = await api(app, "POST", "/api/v1/services", body, token=token)
    assert created.status == 201, created.text
    member = add_user(app, "member@example.com", "member")
    return upstream, await app.browser(member)


async def _start_connect(browser: Browser) -> str:
    """A member's OAuth connect, started: the upstream authorization URL (state inside)."""
    started = await browser.api("POST", "/api/v1/connections/acme/authorize", {})
    assert started.status == 200, started.text
    return str(started.json()["url"])


async def _finish_connect(browser: Browser, authorize_url: str) -> str:
    """Complete a started connect at the callback; the claim token it hands back."""
    callback = await play_authorize(authorize_url)
    done = await browser.get(path_of(callback))
    assert done.status == 302, done.text
    location = done.location or ""
    assert "?claim=" in location, location
    return location.split("claim=")[1]


async def _claim_works(browser: Browser, claim: str) -> None:
    claimed = await browser.api("GET", f"/api/v1/claims/{claim}")
    assert claimed.status == 200, claimed.text
    assert claimed.json()["api_key"].startswith("bnd_live_")


async def _anonymous_start(app: Appliance, ip: str) -> Response:
    return await fetch(app.url + "/login/oidc", headers={"X-Forwarded-For": ip})


def _flood_address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


async def test_flood_never_evicts_a_members_claim_or_oauth_state(
    tmp_path: Path, provider: OidcProvider
) -> None:
    clock = ManualClock(START.timestamp())
    kv = MemoryKV(clock, max_entries=300)
    app = await start_appliance(
        tmp_path, allow_private_upstreams=True, environ=_environ(provider), clock=clock, kv=kv
    )
    upstream, member = await _setup(app, provider)
    try:
        claim_before = await _finish_connect(member, await _start_connect(member))
        state_before = await _start_connect(member)

        # One address hammering the route: the per-IP limit answers 429 + Retry-After.
        statuses = []
        for _ in range(60):
            answer = await _anonymous_start(app, FLOODER)
            statuses.append(answer.status)
            if answer.status == 429:
                assert int(answer.headers["Retry-After"]) > 0
                assert "text/html" in answer.headers["Content-Type"]
        assert 429 in statuses, statuses
        assert statuses[0] == 302

        # Many addresses, one request each: more state records than the store holds.
        for i in range(200):
            await _anonymous_start(app, _flood_address(i))
        claim_during = await _finish_connect(member, await _start_connect(member))
        state_during = await _start_connect(member)
        for i in range(200, 400):
            await _anonymous_start(app, _flood_address(i))

        for claim in (claim_before, claim_during):
            await _claim_works(member, claim)
        for state in (state_before, state_during):
            await _claim_works(member, await _finish_connect(member, state))
    finally:
        await upstream.__aexit__(None, None, None)
        await app.close()


async def test_a_full_anonymous_budget_refuses_new_anonymous_writes_only(
    tmp_path: Path, provider: OidcProvider
) -> None:
    app = await start_appliance(
        tmp_path,
        allow_private_upstreams=True,
        environ=_environ(provider, {"BINDIFY_KV_ANONYMOUS_RECORDS": "60"}),
    )
    upstream, member = await _setup(app, provider)
    try:
        # Someone starts signing in with SSO before the flood (from the proxy's own address).
        sso = Browser(app.url)
        start = await sso.get("/login/oidc?next=%2Fafter")
        assert start.status == 302 and start.location is not None
        approved = await fetch(start.location)
        assert approved.status == 302 and approved.location is not None
        state_before = await _start_connect(member)
        # A failed password sign-in from 198.51.100.9 (its limiter window now exists).
        guesser = Browser(app.url)
        await guesser.ensure_xsrf()
        guessing = {"X-Forwarded-For": "198.51.100.9"}
        form = {"email": "nobody-a@example.com", "password": "wrong"}
        first = await guesser.request("POST", "/login", form=form, headers=guessing)
        assert first.status == 400, first.text

        refused: list[Response] = []
        for i in range(200):
            answer = await _anonymous_start(app, _flood_address(i))
            assert answer.status in (302, 429), answer.status
            if answer.status == 429:
                refused.append(answer)
        assert len(refused) > 100, len(refused)
        for answer in refused:
            assert int(answer.headers["Retry-After"]) > 0
            assert "text/html" in answer.headers["Content-Type"]
            assert "Too many" in answer.body.decode()
        # Password sign-in writes anonymous records too: a new address's limiter window, and a
        # lockout counter for an unknown e-mail. Both are refused (429), not made room for.
        for ip, email in (("198.51.100.10", "x@example.com"), ("198.51.100.9", "nobody-b@x.com")):
            form = {"email": email, "password": "wrong"}
            answer = await guesser.request(
                "POST", "/login", form=form, headers={"X-Forwarded-For": ip}
            )
            assert answer.status == 429, (ip, answer.status, answer.text)
            assert int(answer.headers["Retry-After"]) > 0
        # Signed-in writes have their own budget: a member still connects and claims.
        state_during = await _start_connect(member)
        await _claim_works(member, await _finish_connect(member, state_before))
        await _claim_works(member, await _finish_connect(member, state_during))

        # The sign-in started before the flood was not dropped to make room: it completes.
        done = await sso.get(path_of(approved.location))
        assert done.status == 303, done.text
        assert done.location == "/after"
    finally:
        await upstream.__aexit__(None, None, None)
        await app.close()
