"""End to end, with `bindify serve` running: no secret at rest, and key rotation under traffic.

1. A managed API-key connection is created and used through both credential forms on an
   appliance with Redis as its KV store. Then the database file, its WAL, a backup, every
   Redis value and all captured logs — before and after the shutdown checkpoint — are scanned
   for secret1, secret2, the credentials, the `bnd_` key and the upstream secret: none is there.
2. While `serve` carries traffic on a managed connection, `bindify keys rotate` runs in a second
   process, is killed with SIGKILL at each of its three injected fault points and resumed:
   every client call succeeds, every blob ends on the new key, and removing the old key then
   succeeds.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.appliance import Appliance, admin_token, api_post, http, run_cli
from support.jsonrpc_upstream import jsonrpc_upstream

from bindify_appliance.crypto import fingerprint, generate_master_key, parse_credentials

UPSTREAM_SECRET = "upstream-secret-" + secrets.token_hex(16)
CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.fixture
def upstream() -> Iterator[str]:
    with jsonrpc_upstream({"tools": []}, require_authorization=f"Bearer {UPSTREAM_SECRET}") as url:
        yield url


SERVICE = {
    "id": "keyed",
    "name": "Keyed",
    "auth": {"type": "api_key", "header": "Authorization", "prefix": "Bearer "},
}


def _connect(app: Appliance, token: str, label: str = "main") -> dict[str, str]:
    created = api_post(
        app,
        token,
        "/connections",
        {
            "service": "keyed",
            "api_key": UPSTREAM_SECRET,
            "key_storage_mode": "managed",
            "label": label,
        },
    )
    return {"secret_url": created["secret_url"], "api_key": created["api_key"]}


def _call(app: Appliance, conn: dict[str, str], form: str) -> int:
    if form == "path":
        status, _, body = http("POST", conn["secret_url"], headers=MCP_HEADERS, body=CALL)
    else:
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {conn['api_key']}"}
        status, _, body = http("POST", app.url + "/mcp/keyed", headers=headers, body=CALL)
    if status == 200:
        assert json.loads(body)["result"] == {"tools": []}
    return status


def _needles(conn: dict[str, str]) -> dict[str, bytes]:
    text = conn["api_key"].removeprefix("bnd_live_")
    creds = parse_credentials(text)
    raw = {
        "credentials": text,
        "secret1": creds.secret1_b64,
        "secret2": creds.secret2_b64,
        "api key": conn["api_key"],
        "upstream secret": UPSTREAM_SECRET,
    }
    out = {name: value.encode() for name, value in raw.items()}
    # Raw bytes of each half too, in case something stored them undecoded.
    out["secret1 bytes"] = creds.secret1
    out["secret2 bytes"] = creds.secret2
    out["upstream secret (base64)"] = base64.b64encode(UPSTREAM_SECRET.encode())
    return out


def _scan(label: str, blob: bytes, needles: dict[str, bytes]) -> None:
    for name, needle in needles.items():
        assert needle not in blob, f"{name} found in {label}"


def test_no_secret_at_rest_or_in_logs(tmp_path: Path, upstream: str, redis_url: str) -> None:
    kv_url = redis_url.rsplit("/", 1)[0] + "/13"  # a database of its own, scanned whole
    client = redis.Redis.from_url(kv_url)
    client.flushdb()
    env = {
        "BINDIFY_KV_URL": kv_url,
        "BINDIFY_MASTER_KEYS": json.dumps([{"key": generate_master_key()}]),
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
        "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true",
        "BINDIFY_LOG_LEVEL": "debug",
    }
    data = tmp_path / "data"
    token = admin_token(data, env)
    app = Appliance(data, env).start()
    try:
        api_post(app, token, "/services", {**SERVICE, "mcp_url": upstream})
        conn = _connect(app, token)
        for form in ("path", "api_key", "path", "api_key"):
            assert _call(app, conn, form) == 200
        needles = _needles(conn)
        backup = tmp_path / "backup.db"
        assert run_cli(["backup", "--out", str(backup)], data, env=env).returncode == 0
        live = {p.name: p.read_bytes() for p in data.iterdir() if p.name.startswith("bindify.db")}
        assert "bindify.db-wal" in live  # scanned while the WAL still holds recent writes
        values = [client.dump(key) or b"" for key in client.scan_iter("*")]
        assert values, "the appliance wrote nothing to Redis"
    finally:
        assert app.stop() == 0
    for name, blob in live.items():
        _scan(f"{name} (running)", blob, needles)
    _scan("the backup", backup.read_bytes(), needles)
    for path in (data / "backups").iterdir():
        _scan(path.name, path.read_bytes(), needles)
    for value in values:
        _scan("a Redis value", value, needles)
    _scan("Redis keys", b" ".join(client.scan_iter("*")), needles)
    after = {p.name: p.read_bytes() for p in data.iterdir() if p.name.startswith("bindify.db")}
    for name, blob in after.items():
        _scan(f"{name} (after checkpoint)", blob, needles)
    _scan("the logs", app.stderr().encode(), needles)
    client.flushdb()
    client.close()


def _blob_fingerprints(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT key_fingerprint FROM connections WHERE key_storage_mode = 'managed'"
        ).fetchall()
    return {row[0] for row in rows}


@pytest.mark.slow
def test_rotation_while_serving_traffic(tmp_path: Path, upstream: str) -> None:
    data = tmp_path / "data"
    # 150 keys connected in a burst: the operator lifts the per-user key-check limit.
    env = {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true", "BINDIFY_KEY_CHECKS_PER_MINUTE": "0"}
    token = admin_token(data, env)
    app = Appliance(data, env).start()
    failures: list[int] = []
    calls = 0
    stop = threading.Event()
    try:
        api_post(app, token, "/services", {**SERVICE, "mcp_url": upstream})
        connections = [_connect(app, token, f"c{i}") for i in range(150)]
        old = json.loads((data / "master-keys.json").read_text())[0]["key"]

        def traffic() -> None:
            nonlocal calls
            while not stop.is_set():
                for conn in connections[::15]:
                    for form in ("path", "api_key"):
                        status = _call(app, conn, form)
                        calls += 1
                        if status != 200:
                            failures.append(status)

        worker = threading.Thread(target=traffic)
        worker.start()
        for point in ("before_swap", "after_swap", "after_batch"):
            killed = run_cli(
                ["keys", "rotate", "--yes"],
                data,
                env={
                    **env,
                    "BINDIFY_TEST_FAULT": f"rotate:{point}:20",
                },
                timeout=120,
            )
            assert killed.returncode == -9, (point, killed.stderr)
        finished = run_cli(["keys", "rotate", "--yes"], data, env=env, timeout=180)
        assert finished.returncode == 0, finished.stderr
        time.sleep(1.0)  # keep traffic flowing on the new key for a moment
        stop.set()
        worker.join(30)
        keys = json.loads((data / "master-keys.json").read_text())
        active = [k for k in keys if k.get("active", True)][-1]["key"]
        assert _blob_fingerprints(data / "bindify.db") == {fingerprint(active)}
        removed = run_cli(["keys", "remove", fingerprint(old)], data, env=env)
        assert removed.returncode == 0, removed.stderr
        for conn in connections[:5]:
            assert _call(app, conn, "api_key") == 200
    finally:
        stop.set()
        assert app.stop() == 0
    assert calls > 0
    assert failures == []
