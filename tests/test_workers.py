"""`bindify serve --workers N` as real processes: a supervisor and its workers on one port.

Which worker answers a request is the kernel's choice (SO_REUSEPORT). Where a test needs a
particular worker it keeps an HTTP connection open (keep-alive) and finds the process that holds
the server side of it in /proc, so "deleted through one worker, refused by the other" really
crosses processes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest
import redis
from support.appliance import Appliance, admin_token, api_post, http, run_cli
from support.jsonrpc_upstream import jsonrpc_upstream
from support.servers import REDIS_URL

MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
CALL = b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}'


@pytest.fixture
def kv_env() -> dict[str, str]:
    """Two workers on this test's own (emptied) Redis database."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    return {"BINDIFY_WORKERS": "2", "BINDIFY_KV_URL": REDIS_URL}


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def wait_for(predicate: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def events(app: Appliance, name: str) -> list[dict[str, object]]:
    return [r for r in app.log_records() if r.get("event") == name]


def start_workers(app: Appliance) -> Appliance:
    """Start the supervisor; return once every worker is ready (not only the first)."""
    app.start()
    wait_for(lambda: events(app, "workers_ready"), 30, "all workers ready")
    return app


def serving_pid(conn: HTTPConnection, server_port: int, pids: list[int]) -> int:
    """The worker holding the server side of the open client connection `conn`."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    wanted = f"0100007F:{server_port:04X} 0100007F:{client_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if f"{fields[1]} {fields[2]}" == wanted:
            inode = fields[9]
    assert inode is not None, "server side of the connection not found"
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


def call(conn: HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("POST", path, body=CALL, headers=MCP_HEADERS)
    response = conn.getresponse()
    return response.status, response.read()


# ----------------------------------------------------------------------------- configuration


def test_explicit_workers_without_redis_refused_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run_cli(["serve", "--workers", "2"], data)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "BINDIFY_KV_URL" in lines[0], done.stderr
    assert not data.exists()  # refused before anything was created


def test_auto_without_redis_runs_one_process_and_says_why(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data", {"BINDIFY_WORKERS": "auto"}).start()
    try:
        assert app.proc is not None
        assert children(app.proc.pid) == []  # today's single process, no supervisor
        notes = events(app, "workers")
        if (os.cpu_count() or 1) > 1:
            assert len(notes) == 1 and "BINDIFY_KV_URL" in str(notes[0]["msg"])
    finally:
        assert app.stop() == 0


# ----------------------------------------------------------------------------- lifecycle


def test_cold_start_runs_first_start_work_once(tmp_path: Path, kv_env: dict[str, str]) -> None:
    app = start_workers(Appliance(tmp_path / "data", kv_env))
    try:
        assert app.proc is not None
        assert len(children(app.proc.pid)) == 2
        assert app.stderr().count("/setup?token=") == 1  # one setup URL
        assert len(events(app, "migrated")) == 1  # migrations ran once
        assert len(events(app, "master_key_generated")) == 1
        assert sorted(r["worker"] for r in events(app, "listening")) == [0, 1]  # type: ignore[type-var]
        assert (tmp_path / "data" / "master-keys.json").exists()
    finally:
        assert app.stop() == 0
    assert not any(p for p in [app.proc] if p and p.poll() is None)


def test_sigkill_of_a_worker_is_replaced_under_a_request_loop(
    tmp_path: Path, kv_env: dict[str, str]
) -> None:
    app = start_workers(Appliance(tmp_path / "data", kv_env))
    assert app.proc is not None
    outcomes: list[bool] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                status, _, _ = http("GET", app.url + "/healthz", timeout=5)
                outcomes.append(status == 200)
            except OSError:
                outcomes.append(False)
            time.sleep(0.01)

    runner = threading.Thread(target=loop)
    runner.start()
    try:
        time.sleep(1.0)
        before = children(app.proc.pid)
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: len(events(app, "listening")) == 3, 10, "replacement worker listening")
        replaced_in = time.monotonic() - killed_at
        after = children(app.proc.pid)
        assert len(after) == 2 and victim not in after and before[1] in after
        time.sleep(1.0)
    finally:
        stop.set()
        runner.join(10)
        code = app.stop()
    assert replaced_in < 10
    assert outcomes.count(False) <= 5, outcomes.count(False)
    assert outcomes.count(True) > 50
    assert events(app, "worker_exited")[0]["status"] == -signal.SIGKILL
    assert code == 0


def test_sighup_reaches_every_worker(tmp_path: Path, kv_env: dict[str, str]) -> None:
    app = start_workers(Appliance(tmp_path / "data", kv_env))
    assert app.proc is not None
    try:
        app.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(events(app, "keys_reloaded")) == 2, 10, "both workers re-read keys")
    finally:
        assert app.stop() == 0


@pytest.fixture
def slow_upstream() -> Iterator[str]:
    with jsonrpc_upstream({"slow": True}, delay=2.0) as url:
        yield url


def _with_connection(
    tmp_path: Path, upstream: str, env: dict[str, str]
) -> tuple[Appliance, str, str, str]:
    data = tmp_path / "data"
    token = admin_token(data)
    app = start_workers(Appliance(data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true", **env}))
    service = {"id": "up", "name": "Up", "mcp_url": upstream, "auth": {"type": "none"}}
    api_post(app, token, "/services", service)
    time.sleep(1.1)  # every worker's service registry sees it within 1 s, as every instance's
    made = api_post(app, token, "/connections", {"service": "up"})
    return app, token, made["connection"]["id"], made["secret_url"]


def test_sigterm_lets_slow_calls_on_every_worker_complete(
    tmp_path: Path, slow_upstream: str, kv_env: dict[str, str]
) -> None:
    app, _, _, secret_url = _with_connection(tmp_path, slow_upstream, kv_env)
    results: list[object] = []

    def one() -> None:
        try:
            results.append(http("POST", secret_url, headers=MCP_HEADERS, body=CALL, timeout=30))
        except OSError as exc:
            results.append(exc)

    callers = [threading.Thread(target=one) for _ in range(6)]  # fresh connections: both workers
    for caller in callers:
        caller.start()
    time.sleep(0.8)  # every call now waits on the slow upstream
    assert app.proc is not None
    app.proc.send_signal(signal.SIGTERM)
    for caller in callers:
        caller.join(30)
    code = app.wait()
    assert len(results) == 6
    for result in results:
        assert isinstance(result, tuple), result
        status, _, body = result
        assert status == 200 and json.loads(body)["result"] == {"slow": True}
    assert code == 0
    assert len(events(app, "shutdown")) == 3  # the supervisor and both workers
    assert not events(app, "drain_timeout") and not events(app, "forced_exit")


def test_connection_deleted_through_one_worker_is_refused_by_the_other_within_1s(
    tmp_path: Path, kv_env: dict[str, str]
) -> None:
    with jsonrpc_upstream({"ok": True}) as upstream:
        app, token, connection_id, secret_url = _with_connection(tmp_path, upstream, kv_env)
        assert app.proc is not None
        workers = children(app.proc.pid)
        path = secret_url[len(app.url) :]
        pinned: dict[int, HTTPConnection] = {}
        spare: list[HTTPConnection] = []
        try:
            for _ in range(64):  # keep-alive connections until both workers hold one
                conn = HTTPConnection("127.0.0.1", app.port, timeout=10)
                assert call(conn, path)[0] == 200  # resolved and memoised by that worker
                pid = serving_pid(conn, app.port, workers)
                if pid in pinned:
                    spare.append(conn)
                else:
                    pinned[pid] = conn
                if len(pinned) == 2:
                    break
            assert len(pinned) == 2, "the kernel sent every connection to one worker"
            a, b = (pinned[pid] for pid in workers)
            for conn in (a, b):
                assert call(conn, path)[0] == 200  # each worker's memo holds the connection
            a.request(
                "DELETE",
                f"/api/v1/connections/{connection_id}",
                headers={"Authorization": f"Bearer {token}"},
            )
            deleted = a.getresponse()
            deleted.read()
            assert deleted.status in (200, 204)
            removed_at = time.monotonic()
            assert call(a, path)[0] == 404  # at once on the worker that deleted it
            while (status := call(b, path)[0]) == 200 and time.monotonic() - removed_at < 5:
                time.sleep(0.02)
            took = time.monotonic() - removed_at
            assert status == 404
            assert took <= 1.25, took  # the memo's 1 s, plus this loaded machine's slack
        finally:
            for conn in [*pinned.values(), *spare]:
                conn.close()
            assert app.stop() == 0


def _requests_counted(metrics_text: str) -> float:
    """The sum of bindify_http_requests_total over the unmatched-path requests of the test."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "bindify_http_requests_total" and (
                sample.labels.get("route") == "unmatched"
            ):
                total += sample.value
    return total


def test_metrics_are_summed_over_every_worker(tmp_path: Path, kv_env: dict[str, str]) -> None:
    app = start_workers(Appliance(tmp_path / "data", kv_env))
    try:
        pids = children(app.proc.pid)  # type: ignore[union-attr]
        served: set[int] = set()
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            conn = HTTPConnection("127.0.0.1", app.port, timeout=10)
            conn.request("GET", "/nowhere-at-all")
            conn.getresponse().read()
            served.add(serving_pid(conn, app.port, pids))
            conn.close()
        assert len(served) == 2, "the kernel sent every request to one worker"
        # Whichever worker answers the scrape, it reports both workers' requests.
        for _ in range(6):
            status, _, body = http("GET", app.url + "/metrics")
            assert status == 200
            assert _requests_counted(body.decode()) == 40
        worker = pids[0]
        os.kill(worker, signal.SIGKILL)
        supervisor = app.proc.pid  # type: ignore[union-attr]
        wait_for(
            lambda: len(children(supervisor)) == 2 and worker not in children(supervisor),
            20,
            "replaced",
        )
        wait_for(lambda: http("GET", app.url + "/readyz")[0] == 200, 20, "ready")
        # The dead worker's counts stay in the sum (counters are totals since start).
        status, _, body = http("GET", app.url + "/metrics")
        assert _requests_counted(body.decode()) >= 40
    finally:
        assert app.stop() == 0
