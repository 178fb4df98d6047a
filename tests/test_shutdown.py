"""Graceful shutdown with traffic in flight: SIGTERM lets a slow proxied call finish, exit 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.appliance import Appliance, admin_token, api_post, http
from support.jsonrpc_upstream import jsonrpc_upstream


@pytest.fixture
def slow_upstream() -> Iterator[str]:
    with jsonrpc_upstream({"slow": True}, delay=2.0) as url:
        yield url


def _start_with_slow_connection(tmp_path: Path, slow_upstream: str) -> tuple[Appliance, str]:
    data = tmp_path / "data"
    token = admin_token(data)
    app = Appliance(data, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true"}).start()
    service = {"id": "slow", "name": "Slow", "mcp_url": slow_upstream, "auth": {"type": "none"}}
    api_post(app, token, "/services", service)
    return app, api_post(app, token, "/connections", {"service": "slow"})["secret_url"]


def _call_in_background(secret_url: str, result: dict[str, object]) -> threading.Thread:
    def call() -> None:
        try:
            result["response"] = http(
                "POST",
                secret_url,
                headers={
                    "Content-Type": "application/json",
                    "Accept": "application/json, text/event-stream",
                },
                body=b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}',
                timeout=30,
            )
        except OSError as exc:  # a forced exit drops the connection
            result["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    return caller


@pytest.mark.binary
def test_sigterm_completes_an_in_flight_request(tmp_path: Path, slow_upstream: str) -> None:
    app, secret_url = _start_with_slow_connection(tmp_path, slow_upstream)
    result: dict[str, object] = {}
    caller = _call_in_background(secret_url, result)
    time.sleep(0.7)  # the call is now waiting on the slow upstream
    assert app.proc is not None
    app.proc.send_signal(signal.SIGTERM)
    caller.join(30)
    code = app.wait()
    response = result["response"]
    assert isinstance(response, tuple)
    status, _, body = response
    assert status == 200
    assert json.loads(body) == {"jsonrpc": "2.0", "id": 7, "result": {"slow": True}}
    assert code == 0
    events = [r.get("event") for r in app.log_records()]
    assert "shutdown" in events and "stopped" in events
    assert "drain_timeout" not in events


def test_second_signal_forces_exit(tmp_path: Path, slow_upstream: str) -> None:
    app, secret_url = _start_with_slow_connection(tmp_path, slow_upstream)
    result: dict[str, object] = {}
    caller = _call_in_background(secret_url, result)
    time.sleep(0.7)
    assert app.proc is not None
    app.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    app.proc.send_signal(signal.SIGTERM)
    code = app.wait()
    assert code == 1
    assert time.monotonic() - started < 1.5  # did not wait for the 2 s upstream call
    caller.join(30)
    assert "error" in result  # the call was cut, not completed
    assert "forced_exit" in [r.get("event") for r in app.log_records()]


def test_one_signal_delivered_twice_still_drains(tmp_path: Path, slow_upstream: str) -> None:
    """Ctrl-C under `make run` reaches serve twice within milliseconds (the terminal signals the
    process group and make passes it on): that is one request to stop, not a forced exit."""
    app, secret_url = _start_with_slow_connection(tmp_path, slow_upstream)
    result: dict[str, object] = {}
    caller = _call_in_background(secret_url, result)
    time.sleep(0.7)
    assert app.proc is not None
    app.proc.send_signal(signal.SIGINT)
    app.proc.send_signal(signal.SIGINT)
    caller.join(30)
    assert app.wait() == 0
    response = result["response"]
    assert isinstance(response, tuple)
    status, _, _ = response
    assert status == 200
    assert "forced_exit" not in [r.get("event") for r in app.log_records()]
