"""`bindify doctor --canary`: on a running appliance no payload reaches a log, the database,
its WAL, a backup or the KV; a marker planted in any of those places is found (DESIGN §12)."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import redis
from support.appliance import Appliance, admin_token, run_cli

from bindify_appliance.config import load_settings
from bindify_appliance.ops.canary import new_marker, scan
from bindify_appliance.store import Store, apply


def _lines(stdout: str) -> dict[str, str]:
    return {line.split(":", 1)[0].split(None, 1)[1]: line for line in stdout.splitlines()}


def _canary(app: Appliance, data: Path, token: str, *extra: str) -> tuple[int, dict[str, str]]:
    done = run_cli(
        ["doctor", "--canary", app.url, "--log-file", str(app.stderr_path), *extra],
        data,
        env={"BINDIFY_CANARY_TOKEN": token, **{k: v for k, v in app.env.items() if k != "PATH"}},
        timeout=90,
    )
    return done.returncode, _lines(done.stdout)


def test_the_canary_passes_on_a_running_appliance(tmp_path: Path) -> None:
    """Private upstreams OFF (a production instance) and the in-process KV: the canary reaches
    its echo through its one-off allowance and scans the KV through the admin endpoint."""
    data = tmp_path / "data"
    env = {"BINDIFY_LOG_LEVEL": "debug"}
    token = admin_token(data, env)
    app = Appliance(data, env).start()
    try:
        # A backup taken while serving is scanned too.
        assert run_cli(["backup"], data, env=env).returncode == 0
        code, lines = _canary(app, data, token)
    finally:
        assert app.stop() == 0
    assert code == 0, "\n".join(lines.values())
    for way in ("arguments and results", "errors", "batches", "SSE", "notifications"):
        assert lines[f"canary sent {way}"].startswith("ok"), lines
    for place in ("database", "wal", "backups", "kv", "log"):
        assert lines[f"canary {place}"].startswith("ok"), lines
    assert lines["canary cleanup"].startswith("ok")
    # The temporary service is gone: its id never reappears as a live service.
    with Store(f"sqlite:///{data}/bindify.db") as store:
        rows = store.call(
            lambda: store.db.execute_sql("SELECT id FROM services WHERE id LIKE 'canary-%'")
        )
        assert list(rows) == []


def test_the_canary_is_refused_without_an_admin_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin_token(data)
    app = Appliance(data).start()
    try:
        code, lines = _canary(app, data, "bndpat_" + "x" * 40)
        assert code == 1 and lines["canary"].startswith("FAIL")
        no_token = run_cli(["doctor", "--canary", app.url, "--log-file", "x"], data, stdin="")
        assert no_token.returncode == 1 and "BINDIFY_CANARY_TOKEN" in no_token.stderr
    finally:
        assert app.stop() == 0


def test_planted_markers_are_found_everywhere(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "backups").mkdir(mode=0o700)
    marker = new_marker()
    env = {
        "BINDIFY_DATA_DIR": str(data),
        "BINDIFY_KV_URL": redis_url,
        "BINDIFY_MASTER_KEYS": '[{"key": "' + "A" * 43 + '="}]',
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
    }
    settings = load_settings({}, env)
    with Store(settings.database_url) as store:
        apply(store, backup_dir=None)
    clean = {f.place: f for f in scan(settings, tmp_path / "missing.log", marker)}
    assert all(not f.found for f in clean.values())
    assert clean["log"].unscanned is not None

    log = tmp_path / "serve.log"
    log.write_text('{"msg": "request", "body": "' + marker + '"}\n')
    with sqlite3.connect(data / "bindify.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)",
            ("planted", marker, "2026-11-29T10:00:00Z"),
        )
        db.commit()
        (data / "backups" / "mine.db").write_bytes(b"xx" + marker.encode() + b"yy")
        raw = redis.Redis.from_url(redis_url)
        key = "canary-test:" + secrets.token_hex(4)
        raw.set(key, "value " + marker, ex=60)
        try:
            found = {f.place: f.found for f in scan(settings, log, marker)}
        finally:
            raw.delete(key)
            raw.close()
    assert found["log"] == ["serve.log"]
    assert found["wal"] == ["bindify.db-wal"]  # still only in the WAL: not checkpointed
    assert found["backups"] == ["mine.db"]
    assert found["kv"] and found["kv"][0].startswith("1 of ")


def test_postgres_tables_are_scanned(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    env = {
        "BINDIFY_DATA_DIR": str(tmp_path / "data"),
        "BINDIFY_DATABASE_URL": pg_url,
        "BINDIFY_KV_URL": redis_url,
        "BINDIFY_MASTER_KEYS": '[{"key": "' + "A" * 43 + '="}]',
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
    }
    settings = load_settings({}, env)
    marker = new_marker()
    with Store(pg_url) as store:
        apply(store, backup_dir=None)
        assert not {f.place: f.found for f in scan(settings, tmp_path / "x", marker)}["database"]
        store.call(
            lambda: store.db.execute_sql(
                "INSERT INTO settings (key, value, updated_at) VALUES (%s, %s, now())",
                ("planted", f"before {marker} after"),
            )
        )
    found = {f.place: f for f in scan(settings, tmp_path / "x", marker)}
    assert found["database"].found == ["settings.value (1 row(s))"]
    assert found["wal"].unscanned is not None
