"""PostgreSQL's driver loads on first PostgreSQL use, not with peewee.

peewee imports psycopg at its own import when it is installed; on an SQLite appliance that is
~10 MiB of resident memory (measured: `import bindify_appliance.app` 68 → 58 MiB maxrss) for
a driver it never calls. `defer()` (run by `store/__init__.py`, before any module of this
package imports peewee) lets peewee find no driver; `attach()` (run by `db.open_database` before
it creates a PostgreSQL database) imports psycopg and gives peewee exactly what its own import
would have set: the module globals and the psycopg 3 adapter's transaction states (peewee 4).

Invariants: nothing changes when peewee or psycopg was imported first (defer does nothing, and
attach finds the driver in place); a missing psycopg still fails the same way, at
`_postgres_params`, with the message naming the option.
"""

from __future__ import annotations

import sys

__all__ = ["attach", "defer"]


def defer() -> None:
    """Import peewee without psycopg (no-op if either is imported already)."""
    if "peewee" in sys.modules or "psycopg" in sys.modules:
        return
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # peewee's optional import fails
    try:
        import peewee  # noqa: F401
    finally:
        if sys.modules.get("psycopg", False) is None:
            del sys.modules["psycopg"]


def attach() -> None:
    """Give peewee the psycopg 3 driver if its import went without it."""
    import peewee

    if getattr(peewee, "psycopg", None) is not None:
        return
    import psycopg
    from psycopg.pq import TransactionStatus
    from psycopg.types.json import Json, Jsonb

    peewee.psycopg = psycopg  # type: ignore[attr-defined]
    peewee.TransactionStatus = TransactionStatus  # type: ignore[attr-defined]
    peewee.Json_pg3 = Json  # type: ignore[attr-defined]
    peewee.Jsonb_pg3 = Jsonb  # type: ignore[attr-defined]
    adapter = peewee.Psycopg3Adapter  # type: ignore[attr-defined]
    adapter.txn_idle = TransactionStatus.IDLE
    adapter.txn_inerror = TransactionStatus.INERROR
    adapter.txn_unknown = TransactionStatus.UNKNOWN
