"""Tests of bindify_appliance.store, with small helpers shared by its test modules.

Every store test runs against a real SQLite file in tmp_path and, where the behaviour is meant
to hold on both engines, against the real PostgreSQL server through the `pg_url` fixture.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from bindify_appliance import resources

ENGINES = ["sqlite", "postgresql"]


def engine_url(request: pytest.FixtureRequest, tmp_path: Path, *, migrated: bool = False) -> str:
    """A database URL for the engine named by `request.param` (a fresh database each time).

    The database is empty, except that `migrated=True` gives a PostgreSQL one every migration
    is applied to already (`support.databases.pg_migrated_url`), for callers that migrate at
    once anyway; the SQLite file never exists yet. Migration tests keep the default.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bindify.db"
    return str(request.getfixturevalue("pg_migrated_url" if migrated else "pg_url"))


def copy_initial(folder: Path) -> Path:
    """A migrations folder holding a copy of the real 0001 (for tests that add later ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = resources.resource_dir("migrations") / "0001_initial.py"
    shutil.copy(source, folder / source.name)
    return folder


def write_migration(folder: Path, number: int, name: str, body: str) -> Path:
    """Write `NNNN_name.py` whose `up(db)` runs `body` (indented automatically)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:04d}_{name}.py"
    code = "import peewee\n\n\ndef up(db):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    path.write_text(code + "\n")
    return path


def create_table_migration(folder: Path, number: int, table: str) -> Path:
    """A migration creating `table(id INTEGER PRIMARY KEY, note TEXT)` on either engine."""
    return write_migration(
        folder,
        number,
        f"create_{table}",
        f'db.execute_sql("CREATE TABLE {table} (id INTEGER PRIMARY KEY, note TEXT)")\n',
    )
