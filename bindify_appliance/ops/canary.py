"""`bindify doctor --canary URL --log-file F`: prove that no payload is stored or logged.

The appliance promises that nothing a client sends through the proxy, nor anything an upstream
answers, is ever written to a log, the database, its WAL, a backup or the KV store. The canary
checks that promise on a running instance:

1. start an echo upstream on 127.0.0.1 (`ops/canary_echo.py`);
2. with an admin personal token (`BINDIFY_CANARY_TOKEN`, or the first line of stdin — never
   argv, which every local user can read), ask the instance for the temporary service and its
   one-off allowance to reach the echo (`POST /api/v1/ops/canary`, `api/ops.py`: that service,
   127.0.0.1 and the echo's port, the proxy only, 10 minutes at most, after the echo answered
   the proof), then make a connection to it through the admin API;
3. send one unique marker through the proxy in every way a client can: tool arguments, results,
   JSON-RPC errors, a batch, an SSE answer and a notification — and check that each answer did
   carry the marker back (otherwise the run proves nothing and fails);
4. scan the SQLite file, its WAL and every file in `backups/` (PostgreSQL: every column of
   every table), the KV (Redis: every key name and value, read directly; the in-process KV
   through `POST /api/v1/ops/kv-scan`, which answers hit counts, never values) and the log
   file for the marker; then end the allowance and delete the connection and the service.

Any hit is a failing line naming the place (never the bytes around it). A place that could not
be scanned is a failing line too, unless `--accept-unscanned PLACE` names it (`database`,
`wal`, `backups`, `kv`, `log`).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bindify_appliance.config import Settings
from bindify_appliance.datadir import BACKUPS_DIR
from bindify_appliance.ops.canary_echo import EchoUpstream
from bindify_appliance.ops.doctor import Check, format_line

__all__ = ["PLACES", "Finding", "canary_command", "new_marker", "scan"]

PLACES = ("database", "wal", "backups", "kv", "log")
TOKEN_ENV = "BINDIFY_CANARY_TOKEN"  # noqa: S105 - a variable name
SETTLE_SECONDS = 1.5  # lets the instance finish its after-request writes (last-used, events)


def new_marker() -> str:
    return "bndcanary-" + secrets.token_hex(16)


@dataclass(frozen=True)
class Finding:
    place: str
    found: list[str]  # where the marker was found (file names, tables, key counts)
    unscanned: str | None = None  # why this place could not be scanned


# -- scanning -----------------------------------------------------------------------------------


def _file_hits(paths: Iterable[Path], needle: bytes) -> list[str]:
    hits = []
    for path in paths:
        if needle in path.read_bytes():
            hits.append(path.name)
    return hits


def _scan_sqlite(settings: Settings, needle: bytes) -> list[Finding]:
    from bindify_appliance.store import sqlite_path

    db_path = sqlite_path(settings.database_url)
    assert db_path is not None
    if not db_path.is_file():
        return [Finding("database", [], f"no database file at {db_path}")]
    wal = [p for p in (Path(f"{db_path}-wal"), Path(f"{db_path}-journal")) if p.is_file()]
    return [
        Finding("database", _file_hits([db_path], needle)),
        Finding("wal", _file_hits(wal, needle)),
    ]


def _scan_postgres(settings: Settings, marker: str) -> list[Finding]:
    from bindify_appliance.store import Store
    from bindify_appliance.store.inspection import tables_containing

    with Store(settings.database_url) as store:
        hits = store.call(tables_containing, marker)
    # PostgreSQL's WAL is the server's, not the appliance's: the tables are what can be read.
    return [
        Finding("database", [f"{table}.{column} ({rows} row(s))" for table, column, rows in hits]),
        Finding("wal", [], "PostgreSQL's WAL belongs to the database server"),
    ]


def _scan_backups(settings: Settings, needle: bytes) -> Finding:
    folder = settings.data_path / BACKUPS_DIR
    if not folder.is_dir():
        return Finding("backups", [])
    return Finding(
        "backups", _file_hits(sorted(p for p in folder.iterdir() if p.is_file()), needle)
    )


def _redis_values(client: Any, key: str) -> list[str]:
    kind = client.type(key)
    if kind == "string":
        return [client.get(key) or ""]
    if kind == "hash":
        return [f"{k}={v}" for k, v in client.hgetall(key).items()]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    return []


def _scan_redis(settings: Settings, marker: str) -> Finding:
    import redis

    client = redis.Redis.from_url(settings.kv_url, decode_responses=True, encoding_errors="replace")
    try:
        hits = 0
        scanned = 0
        for key in client.scan_iter(count=1000):
            scanned += 1
            if marker in key or any(marker in v for v in _redis_values(client, key)):
                hits += 1
    except redis.RedisError as exc:
        return Finding("kv", [], f"Redis could not be read ({type(exc).__name__})")
    finally:
        client.close()
    return Finding("kv", [f"{hits} of {scanned} key(s)"] if hits else [])


def scan(
    settings: Settings,
    log_file: Path,
    marker: str,
    kv_scan: Callable[[str], Finding] | None = None,
) -> list[Finding]:
    """Look for `marker` in every place the appliance writes; see the module docstring.

    `kv_scan` asks the running instance about its in-process KV (`_Api.kv_scan`).
    """
    needle = marker.encode("utf-8")
    if settings.is_sqlite:
        findings = _scan_sqlite(settings, needle)
    else:
        findings = _scan_postgres(settings, marker)
    findings.append(_scan_backups(settings, needle))
    if settings.uses_redis:
        findings.append(_scan_redis(settings, marker))
    elif kv_scan is not None:
        findings.append(kv_scan(marker))
    else:
        findings.append(
            Finding("kv", [], "the in-process KV lives inside the instance and is not readable")
        )
    if log_file.is_file():
        findings.append(Finding("log", _file_hits([log_file], needle)))
    else:
        findings.append(Finding("log", [], f"{log_file} is not a file"))
    return findings


# -- the run ------------------------------------------------------------------------------------


class _Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - http(s) checked by canary_command
            self.base + "/api/v1" + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - operator URL
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, None

    def kv_scan(self, marker: str) -> Finding:
        """The instance's in-process KV, scanned by the instance (hit counts only)."""
        status, answer = self.call("POST", "/ops/kv-scan", {"marker": marker})
        if status != 200 or not isinstance(answer, dict):
            return Finding("kv", [], f"the instance did not scan its in-process KV ({status})")
        hits = answer.get("hits") or []
        return Finding("kv", [f"{len(hits)} of {answer.get('scanned')} key(s)"] if hits else [])


def _post_mcp(url: str, body: Any, accept: str) -> tuple[int, str]:
    req = urllib.request.Request(  # noqa: S310 - the instance's own secret URL
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": accept},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:  # noqa: S310 - operator URL
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def send_everything(secret_url: str, marker: str) -> list[Check]:
    """Send the marker every way a client can; a way whose answer lacks it is a failing line."""
    both = "application/json, text/event-stream"
    ways: list[tuple[str, Any, str, bool]] = [
        (
            "arguments and results",
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": marker}},
            },
            "application/json",
            True,
        ),
        (
            "errors",
            {"jsonrpc": "2.0", "id": 2, "method": "canary/fail", "params": {"text": marker}},
            "application/json",
            True,
        ),
        (
            "batches",
            [
                {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"text": marker}},
                {"jsonrpc": "2.0", "id": 4, "method": "canary/fail", "params": {"text": marker}},
            ],
            "application/json",
            True,
        ),
        (
            "SSE",
            {"jsonrpc": "2.0", "id": 5, "method": "canary/sse", "params": {"text": marker}},
            both,
            True,
        ),
        (
            "notifications",
            {"jsonrpc": "2.0", "method": "notifications/canary", "params": {"text": marker}},
            both,
            False,
        ),
    ]
    checks = []
    for name, body, accept, echoed in ways:
        status, text = _post_mcp(secret_url, body, accept)
        if status >= 400 or (echoed and marker not in text):
            checks.append(
                Check(f"canary sent {name}", "FAIL", f"the proxy answered {status} without it")
            )
        else:
            checks.append(Check(f"canary sent {name}", "ok", f"relayed (HTTP {status})"))
    return checks


def _judge(findings: list[Finding], accept_unscanned: tuple[str, ...]) -> list[Check]:
    checks = []
    for finding in findings:
        name = f"canary {finding.place}"
        if finding.found:
            checks.append(Check(name, "FAIL", "marker found in " + ", ".join(finding.found)))
        elif finding.unscanned is None:
            checks.append(Check(name, "ok", "no marker"))
        elif finding.place in accept_unscanned:
            checks.append(Check(name, "warn", f"not scanned (accepted): {finding.unscanned}"))
        else:
            checks.append(Check(name, "FAIL", f"not scanned: {finding.unscanned}"))
    return checks


def _read_token(say: Callable[[str], None]) -> str | None:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token and not sys.stdin.isatty():
        token = sys.stdin.readline().strip()
    if not token:
        say(f"bindify: the canary needs an admin personal token in {TOKEN_ENV} or on stdin")
        return None
    return token


def canary_command(
    settings: Settings,
    url: str,
    log_file: str,
    *,
    accept_unscanned: tuple[str, ...],
    out: Callable[[str], None],
    say: Callable[[str], None],
) -> int:
    unknown = sorted(set(accept_unscanned) - set(PLACES))
    if unknown:
        say(f"bindify: --accept-unscanned takes {', '.join(PLACES)}, not {unknown[0]}")
        return 2
    if not url.startswith(("http://", "https://")):
        say("bindify: --canary takes the instance's http:// or https:// URL")
        return 2
    token = _read_token(say)
    if token is None:
        return 1
    marker = new_marker()
    api = _Api(url, token)
    checks: list[Check] = []
    with EchoUpstream() as echo:
        status, allowed = api.call("POST", "/ops/canary", {"port": echo.port, "proof": echo.proof})
        service = allowed.get("service") if isinstance(allowed, dict) else None
        if status != 201 or not isinstance(service, dict):
            out(
                format_line(
                    Check(
                        "canary",
                        "FAIL",
                        f"the instance refused the canary's temporary service (HTTP {status}); "
                        "it needs an administrator's personal token",
                    )
                )
            )
            return 1
        service_id = str(service["id"])
        connection_id = None
        try:
            status, created = api.call("POST", "/connections", {"service": service_id})
            if status != 201 or not isinstance(created, dict):
                checks.append(Check("canary", "FAIL", f"no connection could be made ({status})"))
            else:
                connection = created.get("connection")
                connection_id = connection.get("id") if isinstance(connection, dict) else None
                checks += send_everything(str(created["secret_url"]), marker)
                # Scanned before the cleanup: deleting the connection must not hide a hit.
                time.sleep(SETTLE_SECONDS)
                findings = scan(settings, Path(log_file), marker, api.kv_scan)
                checks += _judge(findings, accept_unscanned)
        finally:
            api.call("DELETE", f"/ops/canary/{service_id}")  # the allowance ends now
            if connection_id:
                api.call("DELETE", f"/connections/{connection_id}")
            removed, _ = api.call("DELETE", f"/services/{service_id}")
            checks.append(
                Check(
                    "canary cleanup",
                    "ok" if removed == 204 else "FAIL",
                    f"temporary service {service_id} removed"
                    if removed == 204
                    else f"temporary service {service_id} not removed (HTTP {removed})",
                )
            )
    for check in checks:
        out(format_line(check))
    return 1 if any(c.status == "FAIL" for c in checks) else 0
