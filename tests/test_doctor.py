"""`bindify doctor`: one line per check, exit 0 on a healthy data directory and 1 on a broken
one; the Redis eviction policy is a warning line (DESIGN §9, §12). Real processes throughout."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support.appliance import Appliance, free_port, run_cli
from support.jsonrpc_upstream import jsonrpc_upstream
from support.keys import STRONG_SECRET_KEY

LINE = re.compile(r"^(ok|warn|FAIL)\s+[a-zA-Z][\w .-]*: \S.*$")


def _lines(stdout: str) -> dict[str, str]:
    lines = stdout.splitlines()
    assert lines and all(LINE.match(line) for line in lines), stdout
    return {line.split(":", 1)[0].split(None, 1)[1]: line for line in lines}


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    app = Appliance(data).start()
    assert app.stop() == 0
    return data


def test_a_healthy_data_directory(healthy: Path) -> None:
    done = run_cli(["doctor"], healthy)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = _lines(done.stdout)
    for name in (
        "configuration",
        "data directory",
        "master keys",
        "secret key",
        "database",
        "migrations",
        "sealed data",
        "kv",
        "base URL",
        "services",
    ):
        assert lines[name].startswith("ok "), lines
    assert (healthy / "secret-key").read_text().strip() not in done.stdout


def test_a_broken_data_directory(healthy: Path) -> None:
    os.chmod(healthy, 0o755)
    os.chmod(healthy / "secret-key", 0o644)
    (healthy / "master-keys.json").unlink()
    with sqlite3.connect(healthy / "bindify.db") as db:
        db.execute(
            "INSERT INTO schema_migrations (number, name, applied_at) "
            "VALUES (9999, 'from_the_future', '2030-01-01T00:00:00Z')"
        )
    done = run_cli(["doctor"], healthy)
    assert done.returncode == 1
    lines = _lines(done.stdout)
    assert lines["data directory"].startswith("FAIL")
    assert (
        "not 0700" in lines["data directory"]
        and "secret-key is mode 0644" in lines["data directory"]
    )
    assert lines["master keys"].startswith("FAIL") and "does not exist" in lines["master keys"]
    assert lines["migrations"].startswith("FAIL") and "newer Bindify" in lines["migrations"]
    assert lines["kv"].startswith("ok")
    # Doctor changes nothing: still open, still missing.
    assert (healthy.stat().st_mode & 0o777) == 0o755
    assert not (healthy / "master-keys.json").exists()


def test_a_missing_database_and_a_bad_configuration(tmp_path: Path) -> None:
    done = run_cli(["doctor"], tmp_path / "never-started")
    assert done.returncode == 1
    assert _lines(done.stdout)["database"].startswith("FAIL")
    assert not (tmp_path / "never-started").exists()  # nothing was created
    bad = run_cli(["doctor"], tmp_path, env={"BINDIFY_BACKUP_INTERVAL": "soon"})
    assert bad.returncode == 1
    assert _lines(bad.stdout)["configuration"].startswith("FAIL  configuration: BINDIFY_BACKUP")


@pytest.fixture
def upstream() -> Iterator[str]:
    with jsonrpc_upstream({}) as url:
        yield url


def test_services_in_use_are_probed(healthy: Path, upstream: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    env = {
        "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true",
        # A configured OAuth app puts a service in use; the upstreams are on loopback.
        "BINDIFY_LINEAR_CLIENT_ID": "lin-app",
        "BINDIFY_LINEAR_MCP_URL": upstream,
        "BINDIFY_NOTION_CLIENT_ID": "notion-app",
        "BINDIFY_NOTION_MCP_URL": closed,
    }
    done = run_cli(["doctor"], healthy, env=env)
    assert done.returncode == 1
    lines = _lines(done.stdout)
    assert lines["service linear upstream"].startswith("ok ")
    assert "answers (HTTP" in lines["service linear upstream"]
    assert lines["service linear OAuth app"].startswith("ok ")
    assert lines["service notion upstream"].startswith("FAIL")
    assert "could not be reached" in lines["service notion upstream"]
    assert "lin-app" not in done.stdout and "/mcp" not in done.stdout

    # The outbound policy holds for doctor too: loopback is refused unless allowed.
    strict = run_cli(["doctor"], healthy, env={**env, "BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "false"})
    assert "refused by the outbound policy" in _lines(strict.stdout)["service linear upstream"]


def test_an_evicting_redis_is_a_warning_line(healthy: Path, redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    original = str(raw.config_get("maxmemory-policy")["maxmemory-policy"])
    env = {
        "BINDIFY_KV_URL": redis_url,
        "BINDIFY_MASTER_KEYS": '[{"key": "' + "A" * 43 + '="}]',
        "BINDIFY_SECRET_KEY": STRONG_SECRET_KEY,
    }
    try:
        raw.config_set("maxmemory-policy", "allkeys-lru")
        done = run_cli(["doctor"], healthy, env=env)
    finally:
        raw.config_set("maxmemory-policy", original)
        raw.close()
    kv = _lines(done.stdout)["kv"]
    assert kv.startswith("warn") and "allkeys-lru" in kv and "noeviction" in kv
