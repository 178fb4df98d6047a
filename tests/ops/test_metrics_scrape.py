"""`/metrics` on a running `bindify serve`, after real proxied traffic through a real upstream.

Every request, header, body, label, email, query and upstream answer carries one unique marker;
the scrape (parsed with prometheus-client's own text parser) must show the expected figures, only
label values from their closed vocabularies, and none of: the marker, a connection id, a user
id, an email, the secret URL's credentials, the `bnd_` key, the upstream secret or the admin's
token. The attacker's requests (forwarded from outside through the trusted proxy) are refused.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.appliance import Appliance, admin_token, api_post, http

from bindify_appliance.crypto import generate_master_key
from bindify_appliance.ops.metrics import MCP_METHODS, STATUS_CLASSES
from ops.marker_upstream import MarkerUpstream, marker_upstream

MARKER = "mk" + secrets.token_hex(10)
UPSTREAM_SECRET = f"upstream-secret-{MARKER}"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

ROUTE_KINDS = {"mcp", "mcp_sse", "mcp_messages", "api", "ops", "auth", "ui", "unmatched"}
HTTP_CLASSES = {"get", "post", "delete", "put", "patch", "head", "options", "other"}
# Every label name the appliance uses, with the values it may take (None: any service id).
VOCABULARY: dict[str, set[str] | None] = {
    "service": None,
    "route": ROUTE_KINDS,
    "status": set(STATUS_CLASSES),
    "method": set(MCP_METHODS) | HTTP_CLASSES | {"password", "oidc"},
    "outcome": {
        "ok",
        "error",
        "skipped",
        "success",
        "invalid",
        "locked",
        "disabled",
        "rate_limited",
        "cancelled",
        "failed",
        "refused",
    },
    "job": None,
    "version": None,
    "le": None,
}


@pytest.fixture
def upstream() -> Iterator[MarkerUpstream]:
    with marker_upstream(MARKER) as up:
        yield up


def _call(url: str, method: str, params: dict[str, object], **headers: str) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
    status, _, answer = http("POST", url, body=body, headers={**MCP_HEADERS, **headers})
    assert MARKER.encode() in answer or status != 200
    return status


def _scrape(app: Appliance, **headers: str) -> tuple[int, str]:
    status, _, body = http("GET", app.url + "/metrics", headers=headers)
    return status, body.decode()


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.append((sample.name, dict(sample.labels), sample.value))
    return out


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def _failed_login(app: Appliance, email: str) -> int:
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(app.url + "/login", timeout=10).read()
    xsrf = next(c.value for c in jar if c.name == "_xsrf")
    form = urllib.parse.urlencode({"email": email, "password": "wrong " + MARKER, "_xsrf": xsrf})
    try:
        opener.open(app.url + "/login", data=form.encode(), timeout=10)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_scrape_after_real_traffic_names_no_identifier(
    tmp_path: Path, upstream: MarkerUpstream
) -> None:
    env = {
        "BINDIFY_MASTER_KEYS": json.dumps([{"key": generate_master_key()}]),
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
        "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true",
        # A reverse proxy on this host is trusted: forwarded clients are judged by their address.
        "BINDIFY_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    data = tmp_path / "data"
    token = admin_token(data, env)
    app = Appliance(data, env).start()
    try:
        api_post(
            app,
            token,
            "/services",
            {
                "id": "echo",
                "name": "Echo",
                "mcp_url": upstream.url,
                "auth": {"type": "api_key", "header": "X-Api-Key", "prefix": ""},
            },
        )
        user = {"email": f"{MARKER}@example.com", "role": "member"}
        member = api_post(app, token, "/users", user)
        conn = api_post(
            app,
            token,
            "/connections",
            {"service": "echo", "api_key": UPSTREAM_SECRET, "label": f"label {MARKER}"},
        )
        secret_url, api_key = conn["secret_url"], conn["api_key"]
        status, _, me = http(
            "GET", app.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200

        # Proxied traffic, the marker in every place a client or the upstream can put it.
        args: dict[str, object] = {"name": "echo", "arguments": {"q": MARKER}}
        mirrored = {"Mcp-Method": "tools/call", "Mcp-Name": MARKER}
        for _ in range(3):
            assert _call(secret_url, "tools/call", args, **mirrored) == 200
        assert _call(secret_url + f"?q={MARKER}", MARKER, {}, **{"Mcp-Method": MARKER}) == 200
        keyed = app.url + "/mcp/echo"
        bearer = f"Bearer {api_key}"
        assert _call(keyed, "tools/list", {"cursor": MARKER}, Authorization=bearer) == 200
        assert _call(secret_url, "tools/call", {"name": "fail", "arguments": {"m": MARKER}}) == 200
        # Refused before admission: the path's service text is client input, never a label.
        assert _call(app.url + f"/mcp/{MARKER}/" + "A" * 86, "tools/list", {}) == 404
        assert _call(app.url + "/mcp/echo/" + MARKER * 4, "tools/list", {}) in (400, 404)
        assert http("GET", app.url + f"/{MARKER}")[0] == 404
        assert _failed_login(app, f"{MARKER}@example.com") == 400

        # An event stream held open by the upstream is counted while it lasts.
        opened = threading.Event()
        streamed: list[bytes] = []

        def stream() -> None:
            body = json.dumps(
                {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "stream"}}
            ).encode()
            req = urllib.request.Request(secret_url, data=body, method="POST", headers=MCP_HEADERS)
            with urllib.request.urlopen(req, timeout=30) as resp:
                streamed.append(resp.readline())
                opened.set()
                streamed.append(resp.read())

        reader = threading.Thread(target=stream)
        reader.start()
        assert opened.wait(15)
        status, during = _scrape(app)
        assert status == 200, during
        assert _value(_samples(during), "bindify_open_streams", service="echo", route="mcp") == 1
        upstream.release.set()
        reader.join(15)
        assert MARKER.encode() in b"".join(streamed)

        # The attacker: a request from outside relayed by the trusted local proxy.
        for headers in (
            {"X-Forwarded-For": "203.0.113.7"},
            {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"},
            {"Forwarded": "for=203.0.113.7"},
            {"Forwarded": 'for="[2001:db8::7]"'},
        ):
            status, refused = _scrape(app, **headers)
            assert status == 403, (headers, refused)
            assert "bindify_" not in refused

        status, text = _scrape(app)
        assert status == 200
    finally:
        upstream.release.set()
        app.stop()

    # Nothing that identifies anyone or anything, anywhere in the text.
    needles = {
        "marker": MARKER,
        "connection id": conn["connection"]["id"],
        "member id": member["user"]["id"],
        "admin id": json.loads(me)["user"]["id"],
        "admin email": "ops@example.com",
        "secret url credentials": secret_url.rsplit("/", 1)[1],
        "api key": api_key,
        "api key credentials": api_key.removeprefix("bnd_live_"),
        "admin token": token,
        "upstream secret": UPSTREAM_SECRET,
    }
    for name, needle in needles.items():
        assert needle not in text, f"{name} appears in /metrics"
    assert "@" not in text

    samples = _samples(text)
    for name, labels, _ in samples:
        for label, value in labels.items():
            assert label in VOCABULARY, (name, label)
            allowed = VOCABULARY[label]
            assert allowed is None or value in allowed, (name, label, value)
    services = {labels["service"] for _, labels, _ in samples if "service" in labels}
    assert services == {"echo", "-"}

    # The figures the traffic should have produced.
    req = "bindify_http_requests_total"
    assert _value(samples, req, service="echo", route="mcp", status="2xx", method="tools/call") == 3
    assert _value(samples, req, service="echo", route="mcp", method="other") == 1
    assert _value(samples, req, service="echo", route="mcp", method="post") >= 3
    assert _value(samples, req, service="-", route="mcp", status="4xx") == 2
    assert _value(samples, req, service="-", route="unmatched", status="4xx") == 1
    assert _value(samples, req, service="-", route="ops", status="4xx", method="get") == 4
    assert _value(samples, "bindify_upstream_latency_seconds_count", service="echo") == 7
    assert _value(samples, "bindify_open_streams", service="echo", route="mcp") == 0
    assert _value(samples, "bindify_logins_total", method="password", outcome="invalid") == 1
    # Jobs that run at start (first delay 0): recorded with their outcome.
    assert _value(samples, "bindify_job_runs_total", job="orphan-key-check", outcome="ok") >= 1
    assert _value(samples, "bindify_build_info") == 1
