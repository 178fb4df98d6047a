"""The seven built-in services against local stand-ins configured ONLY through
`BINDIFY_{SERVICE}_*` (read by `config.load_settings`, as `bindify serve` reads them): the
exact authorization parameters, the exact token request, the stored token set, and API-key
validation exactly as the registry describes it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from peers.oauth_upstream import OAuthUpstream
from support.connect_helpers import counts, path_of, play_authorize, query_of
from support.inprocess import Appliance, add_token, add_user, api, start_appliance

from bindify_appliance.connections.secrets import open_payload
from bindify_appliance.services.builtins import BUILTINS
from bindify_appliance.store.models import Connection, ConnectionEvent


@dataclass(frozen=True)
class StandIn:
    """How a built-in's real provider behaves, as far as the appliance can tell."""

    static_secret: str | None = None  # a static OAuth app (client_secret_post)
    dcr: bool = False  # a public client registering itself
    pkce: bool = True
    form_answers: bool = False  # GitHub: form-encoded token answers, errors with HTTP 200
    expiring: bool = True  # Todoist: tokens never expire, no refresh token
    oauth: bool = True


STAND_INS: dict[str, StandIn] = {
    "linear": StandIn(static_secret="linear-secret"),
    "github": StandIn(static_secret="github-secret", pkce=False, form_answers=True),
    "notion": StandIn(dcr=True),
    "atlassian": StandIn(oauth=False),
    "figma": StandIn(static_secret="figma-secret", pkce=False),
    "todoist": StandIn(static_secret="todoist-secret", pkce=False, expiring=False),
    "ticktick": StandIn(dcr=True),
}


def test_the_stand_ins_cover_every_builtin() -> None:
    assert set(STAND_INS) == set(BUILTINS)


def _env(sid: str, up: OAuthUpstream, stand_in: StandIn) -> dict[str, str]:
    prefix = f"BINDIFY_{sid.upper()}_"
    env = {prefix + "MCP_URL": up.mcp_url}
    if stand_in.oauth:
        env[prefix + "AUTHORIZE_URL"] = up.authorize_url
        env[prefix + "TOKEN_URL"] = up.token_url
    if stand_in.dcr:
        env[prefix + "REGISTER_URL"] = up.register_url
    if stand_in.static_secret:
        env[prefix + "CLIENT_ID"] = f"{sid}-app"
        env[prefix + "CLIENT_SECRET"] = stand_in.static_secret
    return env


@dataclass
class World:
    app: Appliance
    up: OAuthUpstream
    member: str
    admin_token: str


@pytest.fixture
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    sid: str = request.param
    stand_in = STAND_INS[sid]
    up = OAuthUpstream(
        access_ttl=3600 if stand_in.expiring else None,
        refresh=stand_in.expiring,
        static_clients={f"{sid}-app": stand_in.static_secret} if stand_in.static_secret else {},
        dcr=stand_in.dcr,
        require_pkce=stand_in.pkce,
        response_format="form" if stand_in.form_answers else "json",
        errors_with_200=stand_in.form_answers,
        auth_methods=("none",),
    )
    await up.start()
    app = await start_appliance(
        tmp_path, allow_private_upstreams=True, environ=_env(sid, up, stand_in)
    )
    up.clock = app.clock
    admin = add_user(app, "admin@example.com", "admin")
    member = add_user(app, "member@example.com")
    yield World(app, up, member, add_token(app, admin))
    await app.close()
    await up.stop()


@pytest.mark.parametrize("world", sorted(STAND_INS), indirect=True)
async def test_builtin_oauth_connect_is_exact(world: World) -> None:
    app, up = world.app, world.up
    sid = next(s for s in STAND_INS if up.mcp_url == app.ctx.settings.service_setting(s, "mcp_url"))
    stand_in, definition = STAND_INS[sid], BUILTINS[sid]
    browser = await app.browser(world.member)
    catalogue = (await browser.api("GET", "/api/v1/services")).json()["items"]
    listed = next(s for s in catalogue if s["id"] == sid)
    assert listed["mcp_url"] == up.mcp_url and listed["builtin"] is True
    started = await browser.api(
        "POST", f"/api/v1/connections/{sid}/authorize", {"key_storage_mode": "managed"}
    )
    if not stand_in.oauth:
        assert started.status == 400 and "does not connect with OAuth" in started.text
        assert listed["oauth_configured"] is False
        return
    assert listed["oauth_configured"] is True
    assert started.status == 200, started.text
    url = started.json()["url"]
    params = query_of(url)
    assert url.startswith(up.authorize_url + "?")
    client_id = f"{sid}-app" if stand_in.static_secret else up.registered_clients()[0].client_id
    expected = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": app.url + "/oauth/callback",
        "state": params["state"],
    }
    if definition.oauth and definition.oauth.scopes:
        expected["scope"] = " ".join(definition.oauth.scopes)
    if stand_in.pkce:
        expected["code_challenge"] = params["code_challenge"]
        expected["code_challenge_method"] = "S256"
    if stand_in.dcr:
        expected["resource"] = up.mcp_url  # MCP authorization servers get RFC 8707
    assert params == expected
    assert len(params["state"]) == 43
    if stand_in.dcr:
        [registration] = up.registrations
        assert registration["token_endpoint_auth_method"] == "none"
        assert registration["grant_types"] == ["authorization_code", "refresh_token"]

    done = await browser.get(path_of(await play_authorize(url)))
    assert done.status == 302, done.text
    [call] = up.token_requests
    form = dict(call.form)
    assert call.headers["accept"] == "application/json"
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    code = form.pop("code")
    assert code
    wanted: dict[str, Any] = {
        "grant_type": "authorization_code",
        "redirect_uri": app.url + "/oauth/callback",
        "client_id": client_id,
    }
    if stand_in.static_secret:
        wanted["client_secret"] = stand_in.static_secret
    if stand_in.pkce:
        assert len(form.pop("code_verifier")) == 86
    if stand_in.dcr:
        wanted["resource"] = up.mcp_url
    assert form == wanted

    connection_id = str(done.location).split("/")[2].split("?")[0]
    row = app.store.call(lambda: Connection.get_by_id(connection_id))
    payload = open_payload(row, None, app.ctx.keys.keyring)
    assert payload["access_token"] in up.valid_access_tokens()
    assert payload["client_kind"] == ("dcr" if stand_in.dcr else "static")
    assert payload["token_endpoint"] == up.token_url
    assert "client_secret" not in payload  # static secrets stay in the registry
    if stand_in.expiring:
        assert payload["expires_at"] == int(app.clock.time()) + 3600 and payload["refresh_token"]
        assert row.token_expires_at is not None
    else:
        assert payload["expires_at"] is None and payload["refresh_token"] == ""
        assert row.token_expires_at is None
    assert row.label == f"{definition.name} 1"


@pytest.mark.parametrize("world", ["github"], indirect=True)
async def test_github_errors_delivered_with_http_200(world: World) -> None:
    app, up = world.app, world.up
    browser = await app.browser(world.member)
    started = await browser.api("POST", "/api/v1/connections/github/authorize", {})
    callback = await play_authorize(started.json()["url"])
    tampered = path_of(callback).replace("code=", "code=WRONG")
    page = await browser.get(tampered)
    assert page.status == 502 and "bad_verification_code" in page.text
    assert counts(app.store)["connections"] == 0
    assert up.token_requests[-1].headers["accept"] == "application/json"


async def test_a_builtin_without_its_oauth_app_says_so_plainly(tmp_path: Path) -> None:
    app = await start_appliance(
        tmp_path, allow_private_upstreams=True
    )  # no BINDIFY_GITHUB_CLIENT_ID
    try:
        member = add_user(app, "member@example.com")
        token = add_token(app, member)
        listed = await api(app, "GET", "/api/v1/services", token=token)
        github = next(s for s in listed.json()["items"] if s["id"] == "github")
        assert github["oauth_configured"] is False
        refused = await api(app, "POST", "/api/v1/connections/github/authorize", {}, token=token)
        assert refused.status == 400
        message = refused.json()["message"]
        assert "BINDIFY_GITHUB_CLIENT_ID" in message and app.url + "/oauth/callback" in message
        assert counts(app.store)["connections"] == 0
    finally:
        await app.close()


# -- API keys -------------------------------------------------------------------------------

KEY = "sk-live-0123456789abcdef"


@dataclass(frozen=True)
class KeyCase:
    method: str
    headers: dict[str, str]  # what the validation request must carry
    body: str = ""


KEY_CASES: dict[str, KeyCase] = {
    "linear": KeyCase("POST", {"authorization": KEY}, '{"query":"{ viewer { id } }"}'),
    "github": KeyCase("GET", {"authorization": "Bearer " + KEY, "user-agent": "Bindify"}),
    "figma": KeyCase("GET", {"x-figma-token": KEY}),
    "todoist": KeyCase("GET", {"authorization": "Bearer " + KEY}),
    "ticktick": KeyCase("GET", {"authorization": "Bearer " + KEY}),
}


@pytest.fixture
async def key_world(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Appliance, OAuthUpstream, str, str]]:
    sid: str = request.param
    case = KEY_CASES[sid]
    wanted = {k: v for k, v in case.headers.items() if k != "user-agent"}
    up = await OAuthUpstream(validate_headers=wanted).start()
    prefix = f"BINDIFY_{sid.upper()}_"
    app = await start_appliance(
        tmp_path,
        allow_private_upstreams=True,
        environ={prefix + "VALIDATE_URL": up.validate_url, prefix + "MCP_URL": up.mcp_url},
    )
    member = add_user(app, "member@example.com")
    yield app, up, sid, add_token(app, member)
    await app.close()
    await up.stop()


@pytest.mark.parametrize("key_world", sorted(KEY_CASES), indirect=True)
async def test_builtin_api_key_validation_is_exact(
    key_world: tuple[Appliance, OAuthUpstream, str, str],
) -> None:
    app, up, sid, token = key_world
    case = KEY_CASES[sid]
    created = await api(
        app, "POST", "/api/v1/connections", {"service": sid, "api_key": KEY}, token=token
    )
    assert created.status == 201, created.text
    [seen] = up.validate_requests
    assert seen["method"] == case.method
    for name, value in case.headers.items():
        assert seen["headers"][name] == value
    assert seen["body"] == case.body
    if case.body:
        assert seen["headers"]["content-type"] == "application/json"
    body = created.json()
    assert body["connection"]["auth_type"] == "api_key" and body["api_key"].startswith("bnd_live_")

    # A rejected key: 422, the upstream's answer shown without the key, an orphan event.
    wrong = "sk-WRONG-" + KEY[::-1]
    before = counts(app.store)
    refused = await api(
        app, "POST", "/api/v1/connections", {"service": sid, "api_key": wrong}, token=token
    )
    assert refused.status == 422, refused.text
    error = refused.json()
    assert error["error"] == "invalid_api_key"
    assert "rejected the key (HTTP 401)" in error["message"] and "[redacted]" in error["message"]
    assert (
        wrong not in refused.text
        and wrong[3:-3] not in refused.text
        and "\x00" not in error["message"]
    )
    assert counts(app.store)["connections"] == before["connections"]
    event = app.store.call(
        lambda: ConnectionEvent.select().where(ConnectionEvent.connection.is_null()).get()
    )
    assert (event.event_type, event.category, event.upstream_status) == (
        "api_key_validation",
        "upstream_rejected",
        401,
    )
    assert wrong not in (event.detail or "")


# -- Atlassian: auth modes and applications -------------------------------------------------

EMAIL, API_TOKEN = "dev@example.com", "atl-token-123"
BASIC = base64.b64encode(f"{EMAIL}:{API_TOKEN}".encode()).decode()


@pytest.fixture
async def atlassian(tmp_path: Path) -> AsyncIterator[tuple[Appliance, OAuthUpstream, str]]:
    up = await OAuthUpstream(
        api_keys={"Basic " + BASIC, "Bearer sa-key-456"},
        tools=("jira_search", "jira_get_issue", "rovo_ask"),
        json_response=True,
    ).start()
    app = await start_appliance(
        tmp_path, allow_private_upstreams=True, environ={"BINDIFY_ATLASSIAN_MCP_URL": up.mcp_url}
    )
    member = add_user(app, "member@example.com")
    yield app, up, add_token(app, member)
    await app.close()
    await up.stop()


async def test_atlassian_auth_modes_and_application_check(
    atlassian: tuple[Appliance, OAuthUpstream, str],
) -> None:
    app, up, token = atlassian

    async def connect(body: dict[str, Any]) -> Any:
        return await api(
            app, "POST", "/api/v1/connections", {"service": "atlassian", **body}, token=token
        )

    personal = await connect(
        {
            "auth_mode": "personal",
            "fields": {"email": EMAIL, "token": API_TOKEN},
            "application": "jira",
        }
    )
    assert personal.status == 201, personal.text
    # Validation was an MCP initialize with the assembled Basic credential.
    assert up.mcp_authorizations[0] == "Basic " + BASIC
    # A token that already is base64(email:token) is used as is.
    again = await connect(
        {"auth_mode": "personal", "fields": {"email": EMAIL, "token": BASIC}, "application": "jira"}
    )
    assert again.status == 201
    service_account = await connect(
        {
            "auth_mode": "service_account",
            "fields": {"api_key": "sa-key-456"},
            "application": "other",
        }
    )
    assert service_account.status == 201
    assert up.mcp_authorizations[-1] == "Bearer sa-key-456"
    rows = app.store.call(lambda: list(Connection.select()))
    assert sorted((r.auth_mode, r.application) for r in rows) == [
        ("personal", "jira"),
        ("personal", "jira"),
        ("service_account", "other"),
    ]
    before = counts(app.store)
    mismatch = await connect(
        {
            "auth_mode": "personal",
            "fields": {"email": EMAIL, "token": API_TOKEN},
            "application": "confluence",
        }
    )
    assert mismatch.status == 422 and mismatch.json()["error"] == "application_mismatch"
    assert "Confluence" in mismatch.json()["message"]
    assert counts(app.store) == before
    skipped = await connect(
        {
            "auth_mode": "personal",
            "fields": {"email": EMAIL, "token": API_TOKEN},
            "application": "confluence",
            "skip_application_validation": True,
        }
    )
    assert skipped.status == 201
    cases: list[tuple[dict[str, Any], str]] = [
        ({"auth_mode": "nope", "api_key": "x"}, "auth_mode"),
        ({"auth_mode": "personal", "fields": {"email": EMAIL}}, "fields"),
        ({"auth_mode": "personal", "fields": {"email": EMAIL, "token": "t", "x": "y"}}, "fields"),
        (
            {
                "auth_mode": "personal",
                "fields": {"email": EMAIL, "token": API_TOKEN},
                "application": "bitbucket",
            },
            "application",
        ),
    ]
    for bad, field in cases:
        answer = await connect(bad)
        assert answer.status == 400 and answer.json()["field"].startswith(field), answer.text
    wrong = await connect({"auth_mode": "personal", "fields": {"email": EMAIL, "token": "bad-tok"}})
    assert wrong.status == 422 and wrong.json()["error"] == "invalid_api_key"
    assert "bad-tok" not in wrong.text
    assert json.loads(wrong.text)["field"] == "api_key"
