"""Key-rotation throughput: managed connections re-encrypted per second (prints figures only).

Seeds N managed connections (realistic OAuth token JSON) sealed under an old master key into a
fresh database, then runs the rotation core (`keymgmt.Reencryptor`: batches of 100, each row
opened with the old key, sealed under the new one and written through the `swap_tokens`
compare-and-swap) and reports connections per second. Also times the whole `bindify keys rotate
--yes` command in a subprocess (process start, migrations check and key-file edits included).

Run: .venv/bin/python bench/bench_rotation.py [--rows 5000] [--batch 100] [--pg URL]
(`--pg` takes a server URL such as postgresql://postgres@127.0.0.1:5432/postgres; a scratch
database is created and dropped.)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bindify_appliance.clock import SystemClock  # noqa: E402
from bindify_appliance.crypto import Keyring, MasterKey, dump_keyring_json, seal_managed  # noqa: E402
from bindify_appliance.keymgmt import Reencryptor  # noqa: E402
from bindify_appliance.store import Store, apply  # noqa: E402
from bindify_appliance.store.models import Connection, User, new_id  # noqa: E402

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


def seed(store: Store, keyring: Keyring, rows: int) -> None:
    def work() -> None:
        user = User.create(email="bench@example.com", role="member", created_at=NOW, updated_at=NOW)
        batch = []
        for i in range(rows):
            cid = new_id()
            tokens = json.dumps(
                {
                    "access_token": "lin_oauth_" + secrets.token_hex(27),
                    "refresh_token": "lin_refresh_" + secrets.token_hex(26),
                    "expires_at": "2026-11-29T11:00:00Z",
                }
            ).encode()
            blob, fp = seal_managed(keyring, cid, tokens, field="encrypted_tokens")
            batch.append(
                {
                    "id": cid,
                    "user": user.id,
                    "service": "linear",
                    "auth_type": "oauth",
                    "key_storage_mode": "managed",
                    "secret1_hash": secrets.token_hex(32),
                    "encrypted_tokens": blob,
                    "key_fingerprint": fp,
                    "token_generation": i % 5,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
            if len(batch) == 500:
                Connection.insert_many(batch).execute()
                batch = []
        if batch:
            Connection.insert_many(batch).execute()

    store.call(work)


def core(url: str, rows: int, batch: int) -> float:
    old, new = MasterKey(secrets.token_hex(32)), MasterKey(secrets.token_hex(32))
    store = Store(url)
    try:
        apply(store, backup_dir=None)
        seed(store, Keyring([old]), rows)
        result = Reencryptor(store, Keyring([old, new]), SystemClock(), batch_size=batch).run()
    finally:
        store.close()
    assert result.total_rewritten == rows and not result.failures, result
    return result.rows_per_second


def command(rows: int) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        old = MasterKey(secrets.token_hex(32))
        (data / "master-keys.json").write_text(dump_keyring_json(Keyring([old])))
        (data / "master-keys.json").chmod(0o600)  # the CLI refuses a key file others can read
        store = Store(f"sqlite:///{data}/bindify.db")
        try:
            apply(store, backup_dir=None)
            seed(store, Keyring([old]), rows)
        finally:
            store.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BINDIFY_")}
        env.update(BINDIFY_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bindify_appliance", "keys", "rotate", "--yes"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.perf_counter() - started
        summary = next(line for line in done.stderr.splitlines() if line.startswith("rotated"))
        return elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pg", metavar="URL", help="also measure PostgreSQL (server URL)")
    opts = parser.parse_args()

    print(f"rotation of {opts.rows} managed connections, batches of {opts.batch}")
    for round_ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            rate = core(f"sqlite:///{tmp}/bench.db", opts.rows, opts.batch)
        print(f"  SQLite core, round {round_ + 1}: {rate:,.0f} connections/s")
    elapsed, summary = command(opts.rows)
    print(f"  SQLite `bindify keys rotate --yes` (whole process): {elapsed:.2f} s")
    print(f"    {summary}")
    if opts.pg:
        import psycopg

        name = "bindify_bench_" + secrets.token_hex(4)
        with psycopg.connect(opts.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            base = opts.pg.rsplit("/", 1)[0]
            rate = core(f"{base}/{name}", opts.rows, opts.batch)
            print(f"  PostgreSQL core: {rate:,.0f} connections/s")
        finally:
            with psycopg.connect(opts.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
