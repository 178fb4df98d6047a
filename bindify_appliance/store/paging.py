"""Keyset pagination: the WHERE clause that starts a page after a cursor's sort values.

A cursor carries the sort-key values of the last row of the previous page (see
`api/pagination.py`, which encodes them). Ordering by a unique trailing key (the id) makes the
order total, so no row is skipped or repeated between pages even while rows are added.
"""

from __future__ import annotations

from collections.abc import Sequence

import peewee

__all__ = ["keyset_after"]


def keyset_after(fields: Sequence[peewee.Field], values: Sequence[str]) -> peewee.Expression:
    """`(f1, f2, …) > (v1, v2, …)` in lexicographic order, spelled portably.

    Raises:
        ValueError: the number of values does not match the number of fields.
    """
    if len(fields) != len(values) or not fields:
        raise ValueError("cursor does not match the sort keys")
    clause: peewee.Expression | None = None
    for index in range(len(fields) - 1, -1, -1):
        field, value = fields[index], values[index]
        here = field > value
        clause = here if clause is None else here | ((field == value) & clause)
    assert clause is not None
    return clause
