"""PostgreSQL's driver is not loaded with the store, and works once a PostgreSQL store opens.

Each case runs in a fresh interpreter: this test process has long imported psycopg.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import PG_SERVER_URL


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_an_sqlite_appliance_never_loads_psycopg(tmp_path: object) -> None:
    out = run(
        f"""
        import sys
        import bindify_appliance.app
        from bindify_appliance.store import open_database
        db = open_database("sqlite:///{tmp_path}/x.db")
        db.connect(); db.execute_sql("select 1"); db.close()
        print("psycopg" in sys.modules, "peewee" in sys.modules)
        """
    )
    assert out == "False True"


def test_a_postgresql_store_loads_the_driver_and_works() -> None:
    out = run(
        f"""
        import sys
        from bindify_appliance.store import open_database
        assert "psycopg" not in sys.modules
        db = open_database({PG_SERVER_URL!r})
        db.connect()
        with db.atomic():
            db.execute_sql("create temporary table t (v jsonb)")
            db.execute_sql("insert into t values ('{{\\"a\\": 1}}')")
            (value,) = db.execute_sql("select v->>'a' from t").fetchone()
        state = db._adapter.txn_status(db.connection())
        db.close()  # back to the pool: peewee checks the transaction state here
        print(value, state == db._adapter.txn_idle)
        """
    )
    assert out == "1 True"
