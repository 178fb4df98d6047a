"""`bindify serve` as users run it: first start, restart, lock, readiness, signals."""

from __future__ import annotations

import json
import re
import secrets
import signal
import stat
from pathlib import Path

import pytest
from support.appliance import Appliance, http, run_cli

SETUP_URL = re.compile(r"http://127\.0\.0\.1:\d+/setup\?token=([A-Za-z0-9_-]{43})")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.binary
def test_first_start_creates_private_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = Appliance(data).start()
    try:
        status, _, body = http("GET", app.url + "/healthz")
        assert status == 200
        assert json.loads(body)["status"] == "ok"
        assert _mode(data) == 0o700
        for name in ("master-keys.json", "secret-key", "bindify.lock", "bindify.db"):
            assert (data / name).exists(), name
            assert _mode(data / name) == 0o600, name
        assert _mode(data / "backups") == 0o700
        keys = json.loads((data / "master-keys.json").read_text())
        assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{64}", keys[0]["key"])
    finally:
        assert app.stop() == 0


@pytest.mark.binary
def test_setup_url_on_stderr_never_in_logs(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    assert app.stop() == 0
    text = app.stderr()
    tokens = SETUP_URL.findall(text)
    assert len(tokens) == 1
    records = app.log_records()
    assert any(r.get("event") == "setup_url_printed" for r in records)
    for line in text.splitlines():
        if line.startswith("{"):
            assert tokens[0] not in line


def test_restart_reuses_keys_and_prints_a_new_setup_url(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Appliance(data).start()
    assert first.stop() == 0
    keys = (data / "master-keys.json").read_bytes()
    secret = (data / "secret-key").read_bytes()
    second = Appliance(data, port=first.port).start()
    assert second.stop() == 0
    assert (data / "master-keys.json").read_bytes() == keys
    assert (data / "secret-key").read_bytes() == secret
    tokens = SETUP_URL.findall(second.stderr())
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    # The migration ran once; the second start found nothing to do and took no backup.
    events = [r.get("event") for r in second.log_records()]
    assert events.count("migrated") == 1
    assert list((data / "backups").iterdir()) == []


def test_no_setup_url_once_an_admin_exists(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run_cli(
        ["admin", "create-user", "root@example.com", "--admin"],
        data,
        stdin="correct horse battery\n",
    )
    assert done.returncode == 0, done.stderr
    app = Appliance(data).start()
    assert app.stop() == 0
    assert not SETUP_URL.search(app.stderr())


def test_second_serve_on_same_data_dir_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = Appliance(data).start()
    try:
        other = Appliance(data)
        other.start(wait=False)
        assert other.proc is not None
        code = other.proc.wait(30)
        other._stderr.close()
        assert code == 1
        assert "bindify.lock is held" in other.stderr()
        assert len(other.stderr().strip().splitlines()) == 1
    finally:
        assert app.stop() == 0


def test_sigint_also_drains_and_exits_zero(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    assert app.stop(signal.SIGINT) == 0
    events = [r.get("event") for r in app.log_records()]
    assert events[-2:] == ["shutdown", "stopped"] or "stopped" in events


def test_unmatched_paths_logged_as_template(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    secretish = "A" * 86
    status, _, _ = http("GET", f"{app.url}/nothing/{secretish}")
    assert status == 404
    assert app.stop() == 0
    access = [r for r in app.log_records() if r.get("logger") == "bindify_appliance.access"]
    assert any(r.get("route") == "<unmatched>" and r.get("status") == 404 for r in access)
    assert secretish not in app.stderr()


def test_healthcheck_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = Appliance(data).start()
    try:
        ok = run_cli(["healthcheck"], data, env={"BINDIFY_PORT": str(app.port)})
        assert ok.returncode == 0, ok.stderr
        ok = run_cli(["healthcheck", app.url + "/readyz"], data)
        assert ok.returncode == 0
    finally:
        assert app.stop() == 0
    down = run_cli(["healthcheck"], data, env={"BINDIFY_PORT": str(app.port)})
    assert down.returncode == 1
    assert down.stdout == ""


def test_invalid_configuration_stops_startup_with_one_line(tmp_path: Path) -> None:
    done = run_cli(["serve"], tmp_path / "data", env={"BINDIFY_PORT": "eighty"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["bindify: BINDIFY_PORT: must be a whole number"]


def test_postgres_without_redis_refused(tmp_path: Path) -> None:
    done = run_cli(
        ["serve"],
        tmp_path / "data",
        env={
            "BINDIFY_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
            "BINDIFY_MASTER_KEYS": json.dumps([{"key": secrets.token_hex(32)}]),
            "BINDIFY_SECRET_KEY": secrets.token_hex(32),
        },
    )
    assert done.returncode == 1
    assert "BINDIFY_SINGLE_INSTANCE" in done.stderr
    assert not (tmp_path / "data").exists()


def test_serves_on_postgresql_and_redis(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    env = {
        "BINDIFY_DATABASE_URL": pg_url,
        "BINDIFY_KV_URL": redis_url,
        "BINDIFY_MASTER_KEYS": json.dumps([{"key": secrets.token_hex(32)}]),
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
    }
    app = Appliance(tmp_path / "data", env).start()
    try:
        status, _, body = http("GET", app.url + "/readyz")
        assert status == 200
        assert json.loads(body)["checks"] == {"lifecycle": "ok", "database": "ok", "kv": "ok"}
    finally:
        assert app.stop() == 0
    # Keys and secret came from the environment: nothing generated on disk.
    assert not (tmp_path / "data" / "master-keys.json").exists()
    assert not (tmp_path / "data" / "secret-key").exists()
    assert not (tmp_path / "data" / "bindify.db").exists()


def test_the_http_client_is_not_imported_on_the_start_up_path() -> None:
    # aiohttp costs ~0.3 s to import; `serve` imports it in a worker thread once it listens.
    import subprocess
    import sys

    code = (
        "import sys, bindify_appliance.cli, bindify_appliance.server\n"
        "from bindify_appliance.app import build_application\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
