"""A migrated database for a test, the one way every in-process harness gets one.

SQLite: the migrations run once per test process into a template file, which each test then
copies (a file copy costs ~10 ms, running every migration ~150 ms, and nearly every test starts
an appliance). Any other URL (PostgreSQL) is migrated in place, which costs nothing when it
comes from the `pg_migrated_url` fixture: that database is a copy of a template migrated once
per test process (`support.databases`). Either way `apply` then runs on the test's own
database, so what a test gets is exactly a migrated database.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bindify_appliance.store import Store, apply

__all__ = ["migrated_store"]

_SQLITE = "sqlite:///"
_template: Path | None = None


def _sqlite_template() -> Path:
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="bindify-template-"))
        path = folder / "template.db"
        store = Store(_SQLITE + str(path))
        try:
            apply(store, backup_dir=None)
        finally:
            store.close()  # checkpoints the WAL: the file alone is the database
        _template = path
    return _template


def migrated_store(url: str) -> Store:
    """A `Store` on `url` with every migration applied (see the module docstring)."""
    if url.startswith(_SQLITE):
        target = Path(url[len(_SQLITE) :])
        if not target.exists():
            shutil.copyfile(_sqlite_template(), target)
    store = Store(url)
    apply(store, backup_dir=None)
    return store
