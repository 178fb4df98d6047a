"""The audit trail of a running `bindify serve`, after a full series of real actions (DESIGN §12).

One appliance (SQLite, file keys) and two real upstreams on loopback — a JSON-RPC upstream
behind an API key and the OAuth provider of `tests/peers/oauth_upstream.py` with a static app —
are driven through the API, the pages and the CLI, once per action of `audit.actions.ACTIONS`.
A unique marker is put in every payload and secret the test can reach (passwords, personal
tokens, upstream keys, OAuth app secret, tool arguments and results); the upstream OAuth tokens,
secret URLs and `bnd_` keys are collected. Then the tests read the trail back.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

# Imported now: its lazy import in the terminal summary, after this module ran the provider
# threads, hits a CPython 3.11 "AST constructor recursion depth mismatch" in assertion rewriting.
import hypothesis  # noqa: F401
import pytest
from billing.conftest import PRICE, STRIPE_KEY, WEBHOOK_SECRET
from billing.stripe_standin import StripeStandIn, standin_thread
from billing.stripe_standin import event as stripe_event
from billing.stripe_standin import sign as stripe_sign
from billing.stripe_standin import subscription as stripe_subscription
from oauth_ui.flow import REDIRECT, answer, answer_query, authorize_path, consent, pkce
from peers.oauth_upstream import OAuthUpstream
from support.appliance import Appliance, http, run_cli
from support.inprocess import Browser, fetch
from support.jsonrpc_upstream import jsonrpc_upstream

from bindify_appliance.audit.actions import ACTIONS
from bindify_appliance.audit.chain import prune
from bindify_appliance.clock import iso
from bindify_appliance.crypto.keyring import parse_keyring_json
from bindify_appliance.ops.canary_echo import EchoUpstream
from bindify_appliance.store import Store

MARK = "mk" + secrets.token_hex(10)
ADMIN = "ops@example.com"
MEMBER = "member@example.com"
PASSWORDS = {name: f"{name} {MARK} long enough" for name in ("admin", "member", "new", "reset")}
UPSTREAM_KEY = f"up-{MARK}"
CLIENT_ID, CLIENT_SECRET = f"cid-{MARK}", f"csecret-{MARK}"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


class _Provider:
    """The OAuth upstream on its own event loop in a daemon thread (the appliance is a process)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> OAuthUpstream:
        self.thread.start()
        made = OAuthUpstream(access_ttl=3600, static_clients={CLIENT_ID: CLIENT_SECRET})
        self.upstream = asyncio.run_coroutine_threadsafe(made.start(), self.loop).result(30)
        return self.upstream

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.upstream.stop(), self.loop).result(30)
            asyncio.run_coroutine_threadsafe(_end_other_tasks(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


async def _end_other_tasks() -> None:
    """Cancel what the loop still runs (the upstream's stream watchers), so none is destroyed
    pending at garbage collection — which would log an error inside some later test."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Trail:
    app: Appliance
    data: Path
    env: dict[str, str]
    token: str
    secrets: list[str] = field(default_factory=list)
    recorded: dict[str, int] = field(default_factory=dict)  # action -> entries after driving it
    proxy_rows: tuple[int, int] = (0, 0)
    member_id: str = ""
    standin: StripeStandIn | None = None

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        status, _, raw = http(
            method,
            self.app.url + "/api/v1" + path,
            body=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {token or self.token}",
                "Content-Type": "application/json",
            },
        )
        assert status < 300, (method, path, status, raw[:300])
        return json.loads(raw) if raw else None

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = run_cli(list(args), self.data, env=self.env, stdin=stdin, timeout=120)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    def db_rows(self) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.data / "bindify.db") as db:
            return db.execute("SELECT * FROM audit_log ORDER BY seq").fetchall()

    def actions(self) -> list[str]:
        with sqlite3.connect(self.data / "bindify.db") as db:
            return [r[0] for r in db.execute("SELECT action FROM audit_log ORDER BY seq")]


_LOOP = asyncio.new_event_loop()  # one loop for every page visit (its HTTP client is per loop)


def ui(coro: Any) -> Any:
    return _LOOP.run_until_complete(coro)


def _rpc(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    status, heads, raw = http(
        "POST", url, body=json.dumps(body).encode(), headers={**MCP_HEADERS, **(headers or {})}
    )
    return status, raw.decode(), {k.lower(): v for k, v in heads.items()}


def _oauth_calls(secret_url: str) -> str:
    """initialize, initialized, tools/call echo(MARK) through the proxy; the raw answer."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": MARK, "version": "1"},
        },
    }
    status, text, heads = _rpc(secret_url, init)
    assert status == 200, text
    extra = {"MCP-Protocol-Version": "2025-06-18"}
    if "mcp-session-id" in heads:
        extra["Mcp-Session-Id"] = heads["mcp-session-id"]
    _rpc(secret_url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, extra)
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": MARK}},
    }
    status, text, _ = _rpc(secret_url, call, extra)
    assert status == 200 and f"echo:{MARK}" in text, text
    return text


async def _oauth_connect(browser: Browser, trail: Trail) -> dict[str, str]:
    started = await browser.api(
        "POST", "/api/v1/connections/acme/authorize", {"key_storage_mode": "managed"}
    )
    assert started.status == 200, started.text
    approved = await fetch(started.json()["url"])  # the provider approves at once
    assert approved.status in (302, 303), approved.text
    back = await browser.get(str(approved.location))
    assert back.status in (302, 303), back.text
    claim = str(back.location).split("claim=", 1)[1]
    claimed = await browser.api("GET", f"/api/v1/claims/{claim}")
    assert claimed.status == 200, claimed.text
    return {"secret_url": claimed.json()["secret_url"], "api_key": claimed.json()["api_key"]}


async def _mcp_client_signs_in(browser: Browser, trail: Trail, connection_id: str) -> str:
    """An MCP client registers, the signed-in member consents to `connection_id` on the
    authorize page (HTTP forms), and the client exchanges the code; its access token."""
    status, _, raw = http(
        "POST",
        trail.app.url + "/oauth/register",
        body=json.dumps(
            {
                "client_name": f"Client {MARK}",
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 201, raw[:300]
    client_id = json.loads(raw)["client_id"]
    proof = pkce()
    _page, rid = await consent(browser, authorize_path(client_id, proof.challenge))
    approved = await answer(browser, rid, action="approve", connection=connection_id)
    assert approved.status == 303, approved.text[:500]
    form = {
        "grant_type": "authorization_code",
        "code": answer_query(approved.location)["code"],
        "code_verifier": proof.verifier,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
    }
    status, _, raw = http(
        "POST",
        trail.app.url + "/oauth/token",
        body=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, raw[:300]
    tokens = json.loads(raw)
    trail.secrets += [tokens["access_token"], tokens["refresh_token"]]
    return str(tokens["access_token"])


def _rereads(app: Appliance) -> int:
    return sum(1 for r in app.log_records() if r.get("msg") == "master keys re-read")


def _deliver(trail: Trail, kind: str, obj: dict[str, Any], created: int) -> None:
    body = stripe_event(f"evt_{secrets.token_hex(6)}", kind, obj, created)
    headers = {"Stripe-Signature": stripe_sign(body, WEBHOOK_SECRET)}
    status, _, raw = http("POST", trail.app.url + "/billing/webhook", body=body, headers=headers)
    assert status == 200 and json.loads(raw)["outcome"] == "processed", raw


def _drive_billing(trail: Trail, done: Any) -> None:
    """A member subscribes (Stripe event), pays for one more, then drops below their use."""
    assert trail.standin is not None
    member_token = trail.cli("admin", "create-token", MEMBER).strip()
    trail.secrets.append(member_token)
    ids = []
    for _ in range(2):
        made = trail.api(
            "POST", "/connections", {"service": "keyed", "api_key": UPSTREAM_KEY}, member_token
        )
        trail.secrets += [made["secret_url"], made["api_key"]]
        ids.append(made["connection"]["id"])
    trail.api("POST", "/billing/checkout", {"quantity": 2}, member_token)
    customer = trail.standin.calls("/v1/checkout/sessions")[-1].form["customer"]
    end = int(time.time()) + 30 * 86400
    trail.standin.subscriptions["sub_audit"] = stripe_subscription(
        "sub_audit", customer, quantity=2, period_end=end
    )
    sub = trail.standin.subscriptions["sub_audit"]
    _deliver(trail, "customer.subscription.created", sub, int(time.time()))
    done("billing.subscription")
    trail.api("PATCH", "/billing", {"quantity": 3}, member_token)
    done("billing.quantity")
    fewer = stripe_subscription("sub_audit", customer, quantity=1, period_end=end)
    _deliver(trail, "customer.subscription.updated", fewer, int(time.time()) + 5)
    done("billing.suspend")
    for connection_id in ids:  # the service is deleted later on
        trail.api("DELETE", f"/connections/{connection_id}", token=member_token)


def _drive(trail: Trail, provider: OAuthUpstream, upstream: str) -> None:
    """Every declared action once, through its real path; `trail.recorded` notes each."""
    seen: dict[str, int] = {}

    def done(*actions: str) -> None:
        counted = trail.actions()
        for action in actions:
            seen[action] = counted.count(action)
            assert seen[action] >= 1, (action, counted[-5:])

    done("audit.genesis", "user.create", "token.create")  # migration; CLI (see the fixture)
    admin = Browser(trail.app.url)
    assert ui(admin.login(ADMIN, PASSWORDS["admin"])).status == 303
    done("login.success")
    assert ui(Browser(trail.app.url).login(ADMIN, f"wrong {MARK}")).status == 400
    done("login.failure")
    stranger = ui(Browser(trail.app.url).login(f"nobody-{MARK}@example.com", f"pw {MARK}"))
    assert stranger.status == 400  # counted, written at the end of the hour or at shutdown

    member = trail.api(
        "POST", "/users", {"email": MEMBER, "role": "member", "password": PASSWORDS["member"]}
    )["user"]
    trail.member_id = member["id"]
    done("user.create")
    invited = trail.api("POST", "/users", {"email": "invited@example.com", "role": "member"})
    done("user.invite")
    invite_path = invited["invite_url"].split(trail.app.url, 1)[1]
    newcomer = Browser(trail.app.url)
    ui(newcomer.get(invite_path))
    token = invite_path.split("token=", 1)[1]
    accepted = ui(newcomer.post("/invite", {"token": token, "password": PASSWORDS["new"]}))
    assert accepted.status == 303, accepted.text
    done("invite.accept")
    trail.api("PATCH", f"/users/{member['id']}", {"role": "admin"})
    trail.api("PATCH", f"/users/{member['id']}", {"role": "member"})
    done("user.role")
    trail.api("PATCH", f"/users/{member['id']}", {"disabled": True})
    done("user.disable")
    trail.api("PATCH", f"/users/{member['id']}", {"disabled": False})
    done("user.enable")
    mb = Browser(trail.app.url)
    assert ui(mb.login(MEMBER, PASSWORDS["member"])).status == 303
    changed = ui(
        mb.post(
            "/account/password",
            {"current_password": PASSWORDS["member"], "new_password": PASSWORDS["new"]},
        )
    )
    assert changed.status == 303, changed.text
    done("password.change")
    trail.cli("admin", "reset-password", MEMBER, stdin=PASSWORDS["reset"] + "\n")
    done("password.reset")
    made = trail.api("POST", "/tokens", {"name": f"token {MARK}"[:60]})
    trail.secrets.append(made["token"])
    trail.api("DELETE", f"/tokens/{made['id']}")
    done("token.delete")

    keyed = {
        "id": "keyed",
        "name": "Keyed",
        "mcp_url": upstream,
        "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
    }
    trail.api("POST", "/services", keyed)
    done("service.create")
    trail.api("PATCH", "/services/keyed", {"name": "Keyed two"})
    done("service.update")
    trail.api(
        "POST",
        "/services",
        {"id": "acme", "name": "Acme", "mcp_url": provider.mcp_url, "auth": {"type": "oauth"}},
    )
    trail.api(
        "PATCH",
        "/services/acme",
        {"auth": {"type": "oauth", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}},
    )
    done("oauth_app.set")

    created = trail.api(
        "POST",
        "/connections",
        {
            "service": "keyed",
            "api_key": UPSTREAM_KEY,
            "key_storage_mode": "managed",
            "label": "main",
        },
    )
    conn_id = created["connection"]["id"]
    trail.secrets += [created["secret_url"], created["api_key"]]
    done("connection.create")
    trail.api("PATCH", f"/connections/{conn_id}", {"label": "renamed"})
    done("connection.rename")
    trail.api("PATCH", f"/connections/{conn_id}", {"policy": {"tools": {"deny": ["wipe*"]}}})
    done("connection.policy")
    trail.api("PATCH", f"/connections/{conn_id}", {"disabled": True})
    done("connection.disable")
    trail.api("PATCH", f"/connections/{conn_id}", {"disabled": False})
    done("connection.enable")
    rotated = trail.api(
        "POST", f"/connections/{conn_id}/rotate-url", {"api_key": created["api_key"]}
    )
    trail.secrets += [rotated["secret_url"], rotated["api_key"]]
    done("connection.rotate")
    trail.api("POST", f"/connections/{conn_id}/reconnect", {"api_key": UPSTREAM_KEY})
    done("connection.reconnect")
    # An MCP client signs in through the authorize page; the member then ends its grant.
    access = ui(_mcp_client_signs_in(admin, trail, conn_id))
    done("oauth.grant")
    tools = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}
    bearer = {"Authorization": f"Bearer {access}"}
    assert _rpc(trail.app.url + "/mcp/keyed", tools, bearer)[0] == 200
    trail.api("DELETE", f"/connections/{conn_id}/grants")
    done("oauth.revoke")
    assert _rpc(trail.app.url + "/mcp/keyed", tools, bearer)[0] == 401

    # A second sign-in of the admin, ended through the API (the first browser stays signed in).
    assert ui(Browser(trail.app.url).login(ADMIN, PASSWORDS["admin"])).status == 303
    sessions = trail.api("GET", "/sessions")["items"]
    newest = max(sessions, key=lambda item: item["created_at"])
    trail.api("DELETE", f"/sessions/{newest['id']}")
    done("session.end")

    _drive_billing(trail, done)

    # A member who leaves with a connection: offboarding lists (or revokes) it, then deletes.
    leaver = trail.api(
        "POST",
        "/users",
        {"email": "leaver@example.com", "role": "member", "password": PASSWORDS["new"]},
    )["user"]
    leaver_token = trail.cli("admin", "create-token", "leaver@example.com").strip()
    trail.secrets.append(leaver_token)
    kept = trail.api(
        "POST", "/connections", {"service": "keyed", "api_key": UPSTREAM_KEY}, token=leaver_token
    )
    trail.secrets += [kept["secret_url"], kept["api_key"]]
    trail.api("DELETE", f"/users/{leaver['id']}?revoke=true")
    done("connection.revoke", "user.offboard")

    oauth = ui(_oauth_connect(admin, trail))
    trail.secrets += [oauth["secret_url"], oauth["api_key"]]
    before = len(trail.db_rows())
    for _ in range(3):  # the proxy path: both upstreams, both credential forms, marked payloads
        _oauth_calls(oauth["secret_url"])
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "x", "arguments": {"text": MARK}},
        }
        for headers, url in (
            ({}, rotated["secret_url"]),
            ({"Authorization": f"Bearer {rotated['api_key']}"}, trail.app.url + "/mcp/keyed"),
        ):
            status, text, _ = _rpc(url, call, headers)
            assert status == 200 and MARK in text, text
    trail.proxy_rows = (before, len(trail.db_rows()))
    trail.secrets += list(provider.access_tokens) + list(provider.refresh_tokens)
    assert provider.access_tokens, "the OAuth connection holds no upstream token"

    trail.api("DELETE", f"/connections/{conn_id}")
    done("connection.delete")
    with EchoUpstream() as echo:  # the payload canary's allowance, granted then ended
        canary = trail.api("POST", "/ops/canary", {"port": echo.port, "proof": echo.proof})
        done("canary.allow")
        canary_id = canary["service"]["id"]
        trail.api("DELETE", f"/ops/canary/{canary_id}")
        done("canary.end")
        trail.api("DELETE", f"/services/{canary_id}")
    trail.api("DELETE", "/services/keyed")
    done("service.delete")
    trail.api("DELETE", f"/users/{invited['user']['id']}")
    done("user.delete")
    assert ui(admin.post("/logout", {})).status in (302, 303)
    done("logout.success")

    setup_url = trail.cli("admin", "reset-setup").strip()
    done("setup.reset")
    setup_path = setup_url.split("/setup", 1)[1]
    second = Browser(trail.app.url)
    ui(second.get("/setup" + setup_path))
    form = {
        "token": setup_path.split("token=", 1)[1],
        "email": "second@example.com",
        "password": PASSWORDS["new"],
        "backed_up": "1",
    }
    assert ui(second.post("/setup", form)).status == 303
    done("setup.complete")

    old = parse_keyring_json((trail.data / "master-keys.json").read_text(), "keys").active
    trail.cli("keys", "rotate", "--yes")
    done("key.rotate")
    # The serving instance must seal with the new key before the old one goes (keys_cli's own
    # wait covers holding the new key, not switching to it): SIGHUP re-reads the key file.
    reread = _rereads(trail.app)
    assert trail.app.proc is not None
    trail.app.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _rereads(trail.app) == reread and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _rereads(trail.app) > reread, "SIGHUP did not re-read the keys"
    trail.cli("keys", "remove", old.fingerprint)
    done("key.remove", "audit.rekey")

    # The counted failures are chained at shutdown (or when their hour ends).
    assert trail.app.stop() == 0
    done("login.failure_count")
    trail.app = Appliance(trail.data, trail.env).start()

    # Retention (the daily job's unit) on a copy: it deletes from the start of the chain.
    copy = trail.data.parent / "retention.db"
    shutil.copy(trail.data / "bindify.db", copy)
    keyring = parse_keyring_json((trail.data / "master-keys.json").read_text(), "keys")
    with Store(f"sqlite:///{copy}") as store:
        now = iso(datetime.now(UTC))
        assert store.call(prune, keyring, "9999-01-01T00:00:00Z", now) > 0
        last = store.call(
            lambda: store.db.execute_sql(
                "SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        )
    assert last == ("audit.retention",)
    seen["audit.retention"] = 1
    trail.recorded = seen


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    data = tmp_path_factory.mktemp("audit") / "data"
    env = {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true", "BINDIFY_KEY_CHECKS_PER_MINUTE": "0"}
    provider = _Provider()
    up = provider.start()
    try:
        with (
            standin_thread() as standin,
            jsonrpc_upstream({"echo": MARK}, require_authorization=f"Bearer {UPSTREAM_KEY}") as url,
        ):
            # Billing on (DESIGN §11), with a trial roomy enough for every other step.
            env.update(
                {
                    "BINDIFY_STRIPE_SECRET_KEY": STRIPE_KEY,
                    "BINDIFY_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "BINDIFY_STRIPE_PRICE": PRICE,
                    "BINDIFY_STRIPE_API_BASE": standin.url,
                    "BINDIFY_BILLING_TRIAL_CONNECTIONS": "100",
                }
            )
            made = run_cli(
                ["admin", "create-user", ADMIN, "--admin"],
                data,
                env=env,
                stdin=PASSWORDS["admin"] + "\n",
            )
            assert made.returncode == 0, made.stderr
            token = run_cli(["admin", "create-token", ADMIN], data, env=env).stdout.strip()
            app = Appliance(data, env).start()
            result = Trail(app, data, env, token, secrets=[token], standin=standin)
            try:
                _drive(result, up, url)
                yield result
            finally:
                result.app.kill()
    finally:
        provider.stop()
        _LOOP.run_until_complete(_end_other_tasks())
        _LOOP.close()


def test_every_declared_action_is_recorded_through_its_real_path(trail: Trail) -> None:
    assert sorted(trail.recorded) == sorted(ACTIONS)
    assert all(count >= 1 for count in trail.recorded.values())
    assert set(trail.actions()) <= set(ACTIONS)


def _api_pages(trail: Trail, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = trail.api("GET", f"/audit?limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def test_export_equals_the_api(trail: Trail) -> None:
    lines = trail.cli("audit", "export").splitlines()
    exported = [json.loads(line) for line in lines]
    anchor = exported.pop()
    assert set(anchor) == {"anchor", "seq"}
    listed = _api_pages(trail, 7)  # several pages
    assert len(listed) > 7
    assert listed == list(reversed(exported))
    assert anchor["seq"] == exported[-1]["seq"] == listed[0]["seq"]
    assert [e["seq"] for e in exported] == list(range(1, len(exported) + 1))


def test_the_trail_holds_metadata_only(trail: Trail) -> None:
    text = "\n".join("\t".join("" if v is None else str(v) for v in row) for row in trail.db_rows())
    assert MARK not in text
    assert MARK.lower() not in text.lower()
    assert len(trail.secrets) >= 10
    for secret in trail.secrets:
        assert secret not in text
        # The credentials inside a secret URL, too.
        assert secret.rsplit("/", 1)[-1] not in text


def test_the_proxy_path_writes_no_entry(trail: Trail) -> None:
    before, after = trail.proxy_rows
    assert before > 1 and after == before


def test_failed_sign_ins_named_and_anonymous(trail: Trail) -> None:
    items = _api_pages(trail, 200)
    named = [i for i in items if i["action"] == "login.failure"]
    assert named and all(
        i["actor"]["email"] == ADMIN and i["actor"]["type"] == "user" for i in named
    )
    assert all(i["ip"] == "127.0.0.1" for i in named)
    counts = [i for i in items if i["action"] == "login.failure_count"]
    assert len(counts) == 1
    [count] = counts
    assert count["actor"] == {"type": "anonymous", "id": None, "email": None}
    assert count["ip"] == "127.0.0.1" and count["detail"]["count"] == 1
    assert count["detail"]["window_start"].endswith(":00:00Z")


def test_the_audit_page(trail: Trail) -> None:
    for n in range(55):  # more than one page of 100
        made = trail.api("POST", "/tokens", {"name": f"page {n}"})
        trail.api("DELETE", f"/tokens/{made['id']}")

    async def pages() -> None:
        admin = Browser(trail.app.url)
        assert (await admin.login(ADMIN, PASSWORDS["admin"])).status == 303
        first = await admin.get("/admin/audit")
        assert first.status == 200
        assert "token.delete" in first.text and ADMIN in first.text
        older = re.search(r'href="/admin/audit\?([^"]+)"', first.text)
        assert older is not None
        second = await admin.get("/admin/audit?" + html.unescape(older.group(1)))
        assert second.status == 200 and "audit.genesis" in second.text
        assert "audit.genesis" not in first.text
        filtered = await admin.get("/admin/audit?action=login.")
        assert "login.success" in filtered.text and "token.delete" not in filtered.text
        member = Browser(trail.app.url)
        assert (await member.login(MEMBER, PASSWORDS["reset"])).status == 303
        assert (await member.get("/admin/audit")).status == 403
        anonymous = await Browser(trail.app.url).get("/admin/audit")
        assert anonymous.status == 302

    ui(pages())


def test_keys_remove_keeps_verify_passing(trail: Trail) -> None:
    verified = run_cli(["audit", "verify"], trail.data, env=trail.env)
    assert verified.returncode == 0 and verified.stdout.startswith("ok "), verified.stderr
    assert "audit.rekey" in trail.actions() and "key.remove" in trail.actions()
