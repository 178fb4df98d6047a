"""The command line's contract: exit codes, stdout for scripts, stderr for people."""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from pathlib import Path

import pytest
from support.appliance import Appliance, admin_token, http, run_cli

from bindify_appliance.accounts.tokens import is_personal_token


@pytest.mark.binary
def test_version_forms(tmp_path: Path) -> None:
    plain = run_cli(["--version"], tmp_path)
    assert plain.returncode == 0
    assert plain.stdout.startswith("bindify 0.1.0 (commit ")
    assert "SQLite" in plain.stdout
    as_json = run_cli(["version", "--json"], tmp_path)
    info = json.loads(as_json.stdout)
    assert set(info) == {"version", "commit", "python", "sqlite"}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli(["frobnicate"], tmp_path).returncode == 2
    assert run_cli(["keys"], tmp_path).returncode == 2
    assert run_cli(["serve", "--no-such-flag"], tmp_path).returncode == 2


def test_help_exits_0(tmp_path: Path) -> None:
    done = run_cli(["--help"], tmp_path)
    assert done.returncode == 0
    assert "healthcheck" in done.stdout


def test_migrate_and_status(tmp_path: Path) -> None:
    data = tmp_path / "data"
    status = run_cli(["migrate", "--status", "--json"], data)
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["migrations"]
    assert rows and all(r["applied_at"] is None for r in rows)
    done = run_cli(["migrate"], data)
    assert done.returncode == 0 and done.stdout == ""
    status = run_cli(["migrate", "--status", "--json"], data)
    assert all(r["applied_at"] for r in json.loads(status.stdout)["migrations"])
    again = run_cli(["migrate"], data)
    assert "up to date" in again.stderr


def test_refuses_a_database_newer_than_the_code(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli(["migrate"], data).returncode == 0
    with sqlite3.connect(data / "bindify.db") as db:
        db.execute(
            "INSERT INTO schema_migrations (number, name, applied_at) "
            "VALUES (9999, 'from_the_future', '2030-01-01T00:00:00Z')"
        )

    def dump() -> list[str]:
        with sqlite3.connect(data / "bindify.db") as db:
            return list(db.iterdump())

    before = dump()
    done = run_cli(["serve"], data)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("bindify: ") and "9999" in last
    assert dump() == before


def test_admin_user_and_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = run_cli(
        ["admin", "create-user", "Ada@Example.com", "--admin"],
        data,
        stdin="a long enough password\n",
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout == ""
    dup = run_cli(["admin", "create-user", "ada@example.com"], data, stdin="another password!\n")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    short = run_cli(["admin", "create-user", "bob@example.com"], data, stdin="short\n")
    assert short.returncode == 1 and "at least" in short.stderr
    bad = run_cli(["admin", "create-user", "not-an-email"], data, stdin="long enough pw!!\n")
    assert bad.returncode == 1
    token = run_cli(["admin", "create-token", "ada@example.com", "--name", "ci"], data)
    assert token.returncode == 0, token.stderr
    assert is_personal_token(token.stdout.strip())
    assert token.stdout.count("\n") == 1
    with sqlite3.connect(data / "bindify.db") as db:
        stored = [r[0] for r in db.execute("SELECT token_hash FROM personal_tokens")]
        users = [r[0] for r in db.execute("SELECT email FROM users")]
    assert token.stdout.strip() not in stored and len(stored) == 1
    assert users == ["ada@example.com"]
    missing = run_cli(["admin", "create-token", "nobody@example.com"], data)
    assert missing.returncode == 1 and missing.stdout == ""


def test_reset_password_and_setup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_cli(["admin", "create-user", "ada@example.com", "--admin"], data, stdin="first password!\n")
    with sqlite3.connect(data / "bindify.db") as db:
        before = db.execute("SELECT password_hash FROM users").fetchone()[0]
    done = run_cli(["admin", "reset-password", "ada@example.com"], data, stdin="second password!\n")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(data / "bindify.db") as db:
        after = db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert after != before and after.startswith("scrypt$")
    url = run_cli(["admin", "reset-setup"], data, env={"BINDIFY_BASE_URL": "https://b.example"})
    assert url.returncode == 0
    assert url.stdout.startswith("https://b.example/setup?token=")


def test_reset_password_ends_personal_tokens_over_http(tmp_path: Path) -> None:
    """DESIGN §3: `admin reset-password` ends the user's sessions AND personal tokens; a token
    leaked with the old password must not outlive the reset (checked on a running appliance)."""
    data = tmp_path / "data"
    token = admin_token(data)
    other = run_cli(["admin", "create-user", "bob@example.com"], data, stdin="bob's password!\n")
    assert other.returncode == 0, other.stderr
    bob = run_cli(["admin", "create-token", "bob@example.com"], data).stdout.strip()
    app = Appliance(data).start()
    try:

        def me(bearer: str) -> int:
            status, _, _ = http(
                "GET", app.url + "/api/v1/me", headers={"Authorization": f"Bearer {bearer}"}
            )
            return status

        assert me(token) == 200 and me(bob) == 200
        done = run_cli(
            ["admin", "reset-password", "ops@example.com"], data, stdin="a new long password\n"
        )
        assert done.returncode == 0, done.stderr
        assert me(token) == 401  # revoked at once, on the running instance
        assert "personal tokens" in done.stderr
        assert me(bob) == 200  # another user's token is untouched
    finally:
        app.stop()


def test_backup_during_writes_and_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli(["migrate"], data).returncode == 0
    db_path = data / "bindify.db"
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        conn = sqlite3.connect(db_path, timeout=10)
        i = 0
        while not stop.is_set():
            i += 1
            conn.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)",
                (f"k{i}", "v" * 200, "2026-11-29T10:00:00Z"),
            )
            conn.commit()
            written.append(i)
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 200:
            pass
        committed_before = len(written)
        out = tmp_path / "copy.db"
        done = run_cli(["backup", "--out", str(out)], data)
    finally:
        stop.set()
        thread.join()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert "master keys" in done.stderr
    with sqlite3.connect(out) as copy:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = copy.execute("SELECT count(*) FROM settings").fetchone()[0]
    assert count >= committed_before
    restored = run_cli(["restore", str(out)], data)
    assert restored.returncode == 0, restored.stderr
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM settings").fetchone()[0] == count


def test_restore_refused_while_serving(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = Appliance(data).start()
    try:
        out = tmp_path / "b.db"
        assert run_cli(["backup", "--out", str(out)], data).returncode == 0
        refused = run_cli(["restore", str(out)], data)
        assert refused.returncode == 1
        assert "stop it before restoring" in refused.stderr
    finally:
        assert app.stop() == 0


def test_backup_refuses_postgres(tmp_path: Path) -> None:
    done = run_cli(
        ["backup"],
        tmp_path / "data",
        env={
            "BINDIFY_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
            "BINDIFY_SINGLE_INSTANCE": "true",
            "BINDIFY_MASTER_KEYS": json.dumps([{"key": secrets.token_hex(32)}]),
            "BINDIFY_SECRET_KEY": secrets.token_hex(32),
        },
    )
    assert done.returncode == 1 and "pg_dump" in done.stderr


def test_admin_remove_user_with_revoke(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for email, flags in (("ada@example.com", ["--admin"]), ("bob@example.com", [])):
        made = run_cli(["admin", "create-user", email, *flags], data, stdin="long enough pw!!\n")
        assert made.returncode == 0, made.stderr
    missing = run_cli(["admin", "remove-user", "nobody@example.com", "--revoke"], data)
    assert missing.returncode == 1 and "no user" in missing.stderr
    last = run_cli(["admin", "remove-user", "ada@example.com", "--revoke"], data)
    assert last.returncode == 1  # the last administrator stays
    gone = run_cli(["admin", "remove-user", "bob@example.com", "--revoke"], data)
    assert gone.returncode == 0, gone.stderr
    assert "removed bob@example.com" in gone.stderr
    with sqlite3.connect(data / "bindify.db") as db:
        users = [r[0] for r in db.execute("SELECT email FROM users")]
    assert users == ["ada@example.com"]


def test_admin_remove_user_without_revoke_is_audited(tmp_path: Path) -> None:
    """The CLI deletes through the same operation as the API: the last-admin rule holds and a
    `user.delete` entry names the operator on the host."""
    data = tmp_path / "data"
    for email, flags in (("ada@example.com", ["--admin"]), ("bob@example.com", [])):
        made = run_cli(["admin", "create-user", email, *flags], data, stdin="long enough pw!!\n")
        assert made.returncode == 0, made.stderr
    last = run_cli(["admin", "remove-user", "ada@example.com"], data)
    assert last.returncode == 1 and "administrator" in last.stderr
    gone = run_cli(["admin", "remove-user", "bob@example.com"], data)
    assert gone.returncode == 0, gone.stderr
    assert "deleted bob@example.com (grants at the providers were not revoked)" in gone.stderr
    with sqlite3.connect(data / "bindify.db") as db:
        entries = list(
            db.execute("SELECT actor_type, target_type FROM audit_log WHERE action = 'user.delete'")
        )
    assert entries == [("cli", "user")]
