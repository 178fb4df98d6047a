"""SQL text that peewee builds once per dialect, for the reads on the proxy's hot path.

Building a query and its row objects costs peewee ~0.4-0.7 ms here, the statement itself a few
tens of µs. The few reads a proxied request can make (on a resolution-memo miss: the connection
row, the service list) keep peewee's SQL but run it directly.

Invariant: a compiled query carries placeholders only, never a value; the text depends on the
dialect (placeholder and identifier quoting) alone, so models being rebound to another database
of the same dialect (every Store binds them) cannot make it wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee

from bindify_appliance.store.db import run_sql

__all__ = ["compiled_sql", "converted", "fetch_models"]

M = TypeVar("M", bound=peewee.Model)

_cache: dict[tuple[str, str, str], str] = {}


def compiled_sql(name: str, db: peewee.Database, build: Callable[[], peewee.Query]) -> str:
    """The SQL of `build()` for `db`'s dialect, built on first use and kept under `name`."""
    key = (name, str(db.param), str(db.quote))
    sql = _cache.get(key)
    if sql is None:
        sql = db.get_sql_context().sql(build()).query()[0]  # type: ignore[no-untyped-call]
        _cache[key] = sql
    return sql


def converted(fields: Sequence[peewee.Field], row: Sequence[Any]) -> list[Any]:
    """A result row's values as the fields' Python values (timestamps parsed, and so on)."""
    return [
        field.python_value(value)  # type: ignore[no-untyped-call]
        for field, value in zip(fields, row, strict=True)
    ]


def fetch_models(
    model: type[M], fields: Sequence[peewee.Field], sql: str, params: Sequence[object] = ()
) -> list[M]:
    """Model instances for the rows of `sql`, whose columns are `fields` in order; read-only
    use (they are built like peewee's own rows: nothing marked dirty)."""
    out: list[M] = []
    for row in run_sql(model._meta.database, sql, params).fetchall():  # type: ignore[attr-defined]
        instance = model(__no_default__=1)
        instance.__data__ = {f.name: v for f, v in zip(fields, converted(fields, row), strict=True)}
        out.append(instance)
    return out
