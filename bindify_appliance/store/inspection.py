"""Read-only questions `bindify doctor` asks the database: services in use, and a marker search.

Units of work for `Store.call`/`Store.run`. Nothing here writes, and nothing returns a stored
value: `tables_containing` answers only *where* a marker string occurs (table and column names,
a row count), so a canary scan can never become a way to read data back.
"""

from __future__ import annotations

import re

import peewee

from bindify_appliance.store.db import run_sql
from bindify_appliance.store.models import Connection

__all__ = ["connections_per_service", "tables_containing"]

# No LIKE or GLOB wildcard can appear in a marker, so the patterns below match it literally.
_MARKER = re.compile(r"[A-Za-z0-9-]{8,128}")


def connections_per_service() -> dict[str, int]:
    """{service id: number of connections} for every service that has any."""
    table = _quote(Connection._meta.table_name)
    sql = f"SELECT service, COUNT(*) FROM {table} GROUP BY service"
    return {str(service): int(n) for service, n in run_sql(Connection._meta.database, sql)}


def _quote(name: str) -> str:
    # Names come from the schema itself; doubling quotes keeps any odd name an identifier.
    return '"' + name.replace('"', '""') + '"'


def tables_containing(marker: str) -> list[tuple[str, str, int]]:
    """(table, column, rows) for every column whose text form contains `marker` (case-sensitive).

    Every column of every table is cast to text, so JSON, bytes written as text, numbers and
    timestamps are all searched.
    """
    if not _MARKER.fullmatch(marker):
        raise ValueError("the marker must be 8 to 128 letters, digits or dashes")
    db = Connection._meta.database
    hits = []
    for table in sorted(db.get_tables()):
        for column in db.get_columns(table):
            col = _quote(column.name)
            text = f"CAST({col} AS TEXT)"
            sql = f"SELECT COUNT(*) FROM {_quote(table)} WHERE {text} LIKE {db.param}"
            if isinstance(db, peewee.SqliteDatabase):
                # SQLite's LIKE ignores ASCII case; GLOB does not (the marker holds no * ? [).
                sql = sql.replace(f"LIKE {db.param}", f"GLOB {db.param}")
                pattern = f"*{marker}*"
            else:
                pattern = f"%{marker}%"
            count = int(run_sql(db, sql, [pattern]).fetchone()[0])
            if count:
                hits.append((table, column.name, count))
    return hits
