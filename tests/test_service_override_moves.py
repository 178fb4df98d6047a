"""End to end, with `bindify serve` running: a built-in's `BINDIFY_{SERVICE}_MCP_URL` changed
between two starts sends no credential to the new address (DESIGN §9, "changing where
credentials go needs the member").

The member connects Atlassian (service-account key, managed and zero-knowledge) while the
override points at a local upstream that accepts the key; the appliance is stopped and started
again with the override pointing at a second local server that records every request. Every
connection is then `needs_reconnect` (event "the service's address changed"), the member's calls
answer -32003, and the second server has received nothing. A third start with the same override
changes nothing more.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.appliance import Appliance, api_post, http, run_cli
from support.jsonrpc_upstream import jsonrpc_upstream

from bindify_appliance.crypto import generate_master_key

KEY = "sa-key-" + secrets.token_hex(12)
CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
).encode()
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@contextmanager
def recording_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A server that records every request (method, path, headers) and answers 200 `{}`."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length", "0") or 0)
            body = self.rfile.read(length) if length else b""
            seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
            del body
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = do_DELETE = _record

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp", seen
    finally:
        server.shutdown()
        server.server_close()


def _member_token(data: Path, env: dict[str, str]) -> str:
    made = run_cli(
        ["admin", "create-user", "member@example.com"],
        data,
        env=env,
        stdin="a long enough password\n",
    )
    assert made.returncode == 0, made.stderr
    token = run_cli(["admin", "create-token", "member@example.com"], data, env=env)
    assert token.returncode == 0, token.stderr
    return token.stdout.strip()


def _api(app: Appliance, token: str, method: str, path: str) -> tuple[int, dict[str, Any]]:
    status, _, raw = http(
        method, app.url + "/api/v1" + path, headers={"Authorization": f"Bearer {token}"}
    )
    return status, json.loads(raw) if raw else {}


def _call(app: Appliance, made: dict[str, Any], form: str) -> dict[str, Any]:
    if form == "path":
        # Each start listens on a port of its own: the secret URL's path, on this one.
        path = made["secret_url"][made["secret_url"].index("/mcp/") :]
        status, _, body = http("POST", app.url + path, headers=MCP_HEADERS, body=CALL)
    else:
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {made['api_key']}"}
        status, _, body = http("POST", app.url + "/mcp/atlassian", headers=headers, body=CALL)
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def test_a_changed_override_between_restarts_needs_the_member(tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = {
        "BINDIFY_MASTER_KEYS": json.dumps([{"key": generate_master_key()}]),
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
        "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true",
    }
    token = _member_token(data, base)
    with (
        jsonrpc_upstream({"ok": True}, require_authorization=f"Bearer {KEY}") as good,
        recording_server() as (evil, seen),
    ):
        app = Appliance(data, {**base, "BINDIFY_ATLASSIAN_MCP_URL": good}).start()
        try:
            made = [
                api_post(
                    app,
                    token,
                    "/connections",
                    {
                        "service": "atlassian",
                        "auth_mode": "service_account",
                        "fields": {"api_key": KEY},
                        "key_storage_mode": mode,
                    },
                )
                for mode in ("managed", "zero_knowledge")
            ]
            for one in made:
                assert _call(app, one, "path")["result"] == {"ok": True}
        finally:
            assert app.stop() == 0

        app = Appliance(data, {**base, "BINDIFY_ATLASSIAN_MCP_URL": evil}).start()
        try:
            for one in made:
                for form in ("path", "api_key"):
                    answer = _call(app, one, form)
                    assert answer.get("id") == 9, answer
                    assert answer.get("error", {}).get("code") == -32003, answer
                cid = one["connection"]["id"]
                status, got = _api(app, token, "GET", f"/connections/{cid}")
                assert status == 200 and got["connection"]["status"] == "needs_reconnect"
                status, events = _api(app, token, "GET", f"/connections/{cid}/events")
                details = [
                    e["detail"] for e in events["items"] if e["category"] == "needs_reconnect"
                ]
                assert details == ["the service's address changed"]
            assert seen == []
        finally:
            assert app.stop() == 0

        # The same override again: nothing new is flagged (the fingerprint was stored).
        app = Appliance(data, {**base, "BINDIFY_ATLASSIAN_MCP_URL": evil}).start()
        try:
            for one in made:
                cid = one["connection"]["id"]
                status, events = _api(app, token, "GET", f"/connections/{cid}/events")
                flagged = [e for e in events["items"] if e["category"] == "needs_reconnect"]
                assert len(flagged) == 1
            assert seen == []
        finally:
            assert app.stop() == 0
    assert not any(KEY in json.dumps(r) for r in seen)
