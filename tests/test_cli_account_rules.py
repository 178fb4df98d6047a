"""`bindify admin create-token` / `create-user` follow the API's rules (one operation each).

The token cap (50 live tokens per user), the token name (1-100 characters) and the email check
are the ones `POST /api/v1/tokens` and `POST /api/v1/users` apply; a refusal is one error line,
exit 1, nothing on stdout and nothing created.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from support.appliance import run_cli

from bindify_appliance.accounts.personal_tokens import MAX_ACTIVE_TOKENS
from bindify_appliance.accounts.tokens import hash_token, new_personal_token
from bindify_appliance.store import Store, sessions, users


def _tokens(data: Path) -> int:
    with sqlite3.connect(data / "bindify.db") as db:
        return int(db.execute("SELECT count(*) FROM personal_tokens").fetchone()[0])


def test_create_token_keeps_the_cap_of_live_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = run_cli(["admin", "create-user", "ada@example.com"], data, stdin="a long password!\n")
    assert made.returncode == 0, made.stderr
    store = Store(f"sqlite:///{data}/bindify.db")
    try:
        user = store.call(users.find_user, "ada@example.com")
        assert user is not None
        now = datetime.now(UTC)
        for n in range(MAX_ACTIVE_TOKENS):
            hashed = hash_token(new_personal_token())
            store.call(sessions.insert_token, str(user.id), f"t{n}", hashed, now, 1000)
    finally:
        store.close()
    refused = run_cli(["admin", "create-token", "ada@example.com", "--name", "one more"], data)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert f"at most {MAX_ACTIVE_TOKENS} active tokens" in refused.stderr
    assert _tokens(data) == MAX_ACTIVE_TOKENS


def test_create_token_checks_the_name_like_the_api(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = run_cli(["admin", "create-user", "ada@example.com"], data, stdin="a long password!\n")
    assert made.returncode == 0, made.stderr
    refused = run_cli(["admin", "create-token", "ada@example.com", "--name", "x" * 101], data)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "name must be 1 to 100 characters" in refused.stderr
    assert _tokens(data) == 0


def test_create_user_checks_the_email_like_the_api(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Passes a naive "has @ and a dot" check; the API refuses it (no label after the dot).
    refused = run_cli(["admin", "create-user", "ada@example."], data, stdin="a long password!\n")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "not a valid email address" in refused.stderr
