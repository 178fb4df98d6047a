"""Put a used migrated PostgreSQL database back exactly as the migrations left it.

`support.databases` reuses its migrated databases from test to test, because on this kind of
machine `CREATE DATABASE` is the costly part (0.3-0.9 s of server CPU and fsync each, even as a
copy of a template), while emptying two dozen small tables costs ~20 ms.

`Baseline.of(conn)` records, on the freshly migrated template: a fingerprint of the schema (every
schema, relation, column with type and default, constraint, index, view, function, trigger,
type, extension and per-database setting), the rows the migrations wrote, and every sequence's
position. `Baseline.restore(conn)` puts a used database back: it refuses (returns False, and the
caller drops the database instead) when the schema fingerprint differs, so a test that altered
the schema never hands a changed database to the next one; otherwise it deletes every row of
every table, writes the recorded rows back and sets every sequence back, in one transaction
with triggers and foreign keys off (`session_replication_role = replica`). The caller ends every
other connection to the database first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Baseline", "fingerprint"]

# One line per schema object outside the system schemas; any change to the schema changes the
# md5 of their sorted concatenation.
_FINGERPRINT = r"""
SELECT md5(coalesce(string_agg(x, E'\n' ORDER BY x), '')) FROM (
  SELECT 'n:' || nspname AS x FROM pg_namespace
   WHERE nspname NOT LIKE 'pg\_%' AND nspname <> 'information_schema'
  UNION ALL
  SELECT 'c:' || c.oid::regclass::text || ':' || c.relkind::text || ':'
         || coalesce(c.relacl::text, '')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT 'a:' || a.attrelid::regclass::text || ':' || a.attname || ':'
         || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull || ':'
         || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
     AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'k:' || conrelid::regclass::text || ':' || conname || ':' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace,
                                                  'information_schema'::regnamespace)
  UNION ALL
  SELECT 'i:' || schemaname || ':' || indexdef FROM pg_indexes
   WHERE schemaname NOT LIKE 'pg\_%' AND schemaname <> 'information_schema'
  UNION ALL
  SELECT 'v:' || schemaname || '.' || viewname || ':' || md5(definition) FROM pg_views
   WHERE schemaname NOT LIKE 'pg\_%' AND schemaname <> 'information_schema'
  UNION ALL
  SELECT 't:' || tgrelid::regclass::text || ':' || tgname || ':' || tgenabled::text
    FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT 'f:' || p.oid::regprocedure::text || ':' || md5(p.prosrc)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT 'y:' || t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema' AND t.typtype <> 'c'
  UNION ALL
  SELECT 'e:' || extname || ':' || extversion FROM pg_extension
  UNION ALL
  SELECT 's:' || array_to_string(setconfig, ',') FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) objects
"""

_TABLES = r"""
SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables
 WHERE schemaname NOT LIKE 'pg\_%' AND schemaname <> 'information_schema' ORDER BY 1
"""

_SEQUENCES = r"""
SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename), start_value, last_value
  FROM pg_sequences ORDER BY 1
"""


@dataclass(frozen=True)
class Baseline:
    """A migrated database's schema fingerprint, rows (as JSON, per table) and sequences."""

    fingerprint: str
    rows: dict[str, str | None]  # table -> json_agg of its rows; None: the table is empty
    sequences: tuple[tuple[str, int, int | None], ...]  # (name, start_value, last_value)

    @classmethod
    def of(cls, conn: Any) -> Baseline:
        """Record `conn`'s database (a psycopg connection, autocommit)."""
        tables = [row[0] for row in conn.execute(_TABLES).fetchall()]
        rows = {t: _scalar(conn, f"SELECT json_agg(r)::text FROM {t} r") for t in tables}
        sequences = tuple(tuple(row) for row in conn.execute(_SEQUENCES).fetchall())
        return cls(fingerprint(conn), rows, sequences)  # type: ignore[arg-type]

    def restore(self, conn: Any) -> bool:
        """Put `conn`'s database back to this baseline; False if its schema differs."""
        if fingerprint(conn) != self.fingerprint:
            return False
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            for table, rows in self.rows.items():
                conn.execute(f"DELETE FROM {table}")
                if rows is not None:
                    conn.execute(
                        f"INSERT INTO {table}"
                        f" SELECT * FROM json_populate_recordset(NULL::{table}, %s)",
                        (rows,),
                    )
            for name, start, last in self.sequences:
                conn.execute(
                    "SELECT setval(%s, %s, %s)",
                    (name, start if last is None else last, last is not None),
                )
        return True


def _scalar(conn: Any, sql: str) -> Any:
    return conn.execute(sql).fetchone()[0]


def fingerprint(conn: Any) -> str:
    """The md5 of the schema of `conn`'s database (`_FINGERPRINT` lists what it covers)."""
    return str(_scalar(conn, _FINGERPRINT))
