"""Who may read `/metrics` (DESIGN §5, §12), on a running in-process appliance.

With `BINDIFY_METRICS_TOKEN`: only `Authorization: Bearer {token}`, from every address (401
otherwise). Without it: loopback only (403 otherwise), where a forwarding header from an
untrusted local peer (a reverse proxy the operator did not list) means "not loopback", and a
trusted proxy's forwarded client address is what is judged. The sign-in and job figures are
checked here too, against the real login page and the real scheduler.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.inprocess import PASSWORD, Browser, Server, add_user, fetch, start_appliance

from bindify_appliance.clock import SystemClock
from bindify_appliance.kv import MemoryKV
from bindify_appliance.ops.metrics import Metrics, route_kind
from bindify_appliance.ops.metrics_route import is_loopback_request
from bindify_appliance.scheduler import Job, Scheduler
from bindify_appliance.store import Store, apply

TOKEN = "mt-" + secrets.token_urlsafe(32)


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@pytest.fixture
async def with_token(tmp_path: Path) -> AsyncIterator[Server]:
    server = await start_appliance(tmp_path, metrics_token=TOKEN)
    yield server
    await server.close()


@pytest.fixture
async def loopback_only(tmp_path: Path) -> AsyncIterator[Server]:
    server = await start_appliance(tmp_path)
    yield server
    await server.close()


@pytest.fixture
async def behind_proxy(tmp_path: Path) -> AsyncIterator[Server]:
    server = await start_appliance(tmp_path, trusted_proxies=("127.0.0.1/32",))
    yield server
    await server.close()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-" + secrets.token_urlsafe(16),
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
    ],
    # Fixed ids: the values hold per-process random tokens, and pytest-xdist needs every worker
    # to collect the same test ids.
    ids=["absent", "empty", "scheme-only", "wrong", "longer", "shorter", "basic", "no-scheme"],
)
async def test_token_mode_refuses_anything_but_the_token(
    with_token: Server, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await fetch(with_token.url + "/metrics", headers=headers)
    assert response.status == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert b"bindify_" not in response.body
    assert TOKEN.encode() not in response.body


async def test_token_mode_serves_the_token_even_from_loopback_only_with_it(
    with_token: Server,
) -> None:
    for scheme in ("Bearer", "bearer"):
        response = await fetch(
            with_token.url + "/metrics", headers={"Authorization": f"{scheme} {TOKEN}"}
        )
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert _value(response.body.decode(), "bindify_build_info") == 1
    # Loopback alone is not enough once a token is set.
    assert (await fetch(with_token.url + "/metrics")).status == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.7"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"Forwarded": "for=127.0.0.1"},
        {"X-Real-IP": "127.0.0.1"},
    ],
)
async def test_loopback_mode_refuses_forwarded_requests_from_an_unlisted_proxy(
    loopback_only: Server, headers: dict[str, str]
) -> None:
    # The peer is 127.0.0.1, but a forwarding header says a proxy relayed someone else.
    response = await fetch(loopback_only.url + "/metrics", headers=headers)
    assert response.status == 403
    assert b"bindify_" not in response.body


async def test_loopback_mode_serves_this_host(loopback_only: Server) -> None:
    response = await fetch(loopback_only.url + "/metrics")
    assert response.status == 200
    assert _value(response.body.decode(), "bindify_build_info") == 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # the trusted proxy itself, nothing forwarded
        ({"X-Forwarded-For": "127.0.0.1"}, 200),  # a client on this host through the proxy
        ({"X-Forwarded-For": "203.0.113.7"}, 403),
        ({"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}, 403),  # spoofed first hop
        ({"Forwarded": "for=203.0.113.7"}, 403),
        ({"Forwarded": "for=unknown"}, 200),  # unreadable hop: the proxy's own address counts
        ({"X-Forwarded-For": "[::1]:5000, 2001:db8::1"}, 403),
    ],
)
async def test_behind_a_trusted_proxy_the_forwarded_client_is_judged(
    behind_proxy: Server, headers: dict[str, str], status: int
) -> None:
    response = await fetch(behind_proxy.url + "/metrics", headers=headers)
    assert response.status == status, response.body


def test_loopback_rule_for_addresses_the_test_host_cannot_produce() -> None:
    from bindify_appliance.clientaddr import parse_networks

    trusted = parse_networks(["10.0.0.0/8"])
    assert is_loopback_request("::1", [], [], False, ())
    assert is_loopback_request("::ffff:127.0.0.1", [], [], False, ())
    assert not is_loopback_request("10.1.2.3", [], [], False, ())
    assert not is_loopback_request("192.0.2.1", [], [], False, ())
    assert not is_loopback_request("", [], [], False, ())
    assert not is_loopback_request("unix-socket", [], [], False, ())
    # A trusted proxy relaying an outside client, or itself not on loopback.
    assert not is_loopback_request("10.1.2.3", [], ["203.0.113.7"], True, trusted)
    assert not is_loopback_request("10.1.2.3", [], [], False, trusted)
    # An untrusted peer's forwarding header is never believed, even when it says loopback.
    assert not is_loopback_request("192.0.2.1", [], ["127.0.0.1"], True, trusted)


async def test_sign_in_outcomes_are_counted_without_the_address(tmp_path: Path) -> None:
    server = await start_appliance(tmp_path)
    try:
        email = f"who-{secrets.token_hex(6)}@example.com"
        add_user(server, email, "member")
        add_user(server, "off@example.com", "member", disabled=True)
        browser = Browser(server.url)
        assert (await browser.login(email, "not the password")).status == 400
        assert (await browser.login("nobody@example.com", "whatever it is")).status == 400
        assert (await browser.login("off@example.com")).status == 403
        assert (await browser.login(email, PASSWORD)).status == 303
        text = (await fetch(server.url + "/metrics")).body.decode()
    finally:
        await server.close()
    assert _value(text, "bindify_logins_total", method="password", outcome="invalid") == 2
    assert _value(text, "bindify_logins_total", method="password", outcome="disabled") == 1
    assert _value(text, "bindify_logins_total", method="password", outcome="success") == 1
    assert email not in text and "@" not in text


@pytest.mark.allow_error_logs  # the failing job is logged, as it should be
async def test_job_runs_are_counted_by_outcome(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/db.sqlite")
    apply(store, backup_dir=None)
    kv = MemoryKV()
    metrics = Metrics()
    try:

        async def fine() -> str:
            return "done"

        async def broken() -> str:
            raise RuntimeError("boom")

        sched = Scheduler(store, kv, SystemClock(), "me", observe=metrics.job_run)
        other = Scheduler(store, kv, SystemClock(), "other", observe=metrics.job_run)
        await sched.run_once(Job("fine", 60.0, fine))
        await other.run_once(Job("fine", 60.0, fine))  # the lease is held: skipped
        await sched.run_once(Job("broken", 60.0, broken, leased=False))
    finally:
        store.close()
    text = metrics.exposition().decode()
    assert _value(text, "bindify_job_runs_total", job="fine", outcome="ok") == 1
    assert _value(text, "bindify_job_runs_total", job="fine", outcome="skipped") == 1
    assert _value(text, "bindify_job_runs_total", job="broken", outcome="error") == 1
    assert _value(text, "bindify_job_duration_seconds_count", job="fine") == 1


def test_route_kinds_are_a_closed_set() -> None:
    assert route_kind(None) == "unmatched"
    assert route_kind("/mcp/{service}/{credentials}") == "mcp"
    assert route_kind("/mcp/{service}/sse") == "mcp_sse"
    assert route_kind("/mcp/{service}/{credentials}/messages") == "mcp_messages"
    assert route_kind("/api/v1/connections/{id}") == "api"
    assert route_kind("/metrics") == "ops"
    assert route_kind("/login/oidc") == "auth"
    assert route_kind("/connections/{id}") == "ui"
