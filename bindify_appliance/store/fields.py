"""The base model, the database proxy and the column types every model uses.

Invariants:
- Models reach the database only through `database_proxy`, which `Store` initialises (`bind`),
  so the same classes serve SQLite and PostgreSQL.
- `UtcTimestampField` writes exactly one form, `YYYY-MM-DDTHH:MM:SSZ`, refuses naive datetimes
  and reads back aware UTC datetimes; text comparison in SQL is chronological comparison.
- `LowercaseTextField` lower-cases what it stores and the right-hand side of comparisons.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import peewee
from peewee import DatabaseProxy, Model, TextField

from bindify_appliance.clock import iso, parse_iso

_V = TypeVar("_V")

database_proxy = DatabaseProxy()


def bind(db: peewee.Database) -> None:
    """Point every model at `db` (called by `Store`)."""
    database_proxy.initialize(db)


def new_id() -> str:
    """A fresh row id: a random UUID4 as text."""
    return str(uuid.uuid4())


class UtcTimestampField(peewee.Field, Generic[_V]):
    """A timestamp stored as `YYYY-MM-DDTHH:MM:SSZ` text; aware UTC datetimes in Python.

    Accepts aware datetimes (any offset; converted to UTC) and ISO-8601 strings (normalised).
    Naive datetimes are refused: they are a bug upstream, not something to guess about.
    """

    field_type = "TEXT"

    if TYPE_CHECKING:

        @overload
        def __new__(
            cls, *args: Any, null: Literal[True], **kwargs: Any
        ) -> UtcTimestampField[datetime | None]: ...
        @overload
        def __new__(
            cls, *args: Any, null: Literal[False] = ..., **kwargs: Any
        ) -> UtcTimestampField[datetime]: ...
        def __new__(cls, *args: Any, **kwargs: Any) -> Any: ...

    def db_value(self, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = parse_iso(value)
        if not isinstance(value, datetime):
            raise TypeError(f"{self.name}: expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError(f"{self.name}: naive datetime; timestamps must be timezone-aware")
        return iso(value)

    def python_value(self, value: object) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):  # a driver that already parsed it; naive means UTC
            return parse_iso(value.isoformat())
        return parse_iso(str(value))


class LowercaseTextField(TextField, Generic[_V]):
    """Text stored lower-case (e-mail addresses); comparisons lower-case their operand too."""

    if TYPE_CHECKING:

        @overload
        def __new__(
            cls, *args: Any, null: Literal[True], **kwargs: Any
        ) -> LowercaseTextField[str | None]: ...
        @overload
        def __new__(
            cls, *args: Any, null: Literal[False] = ..., **kwargs: Any
        ) -> LowercaseTextField[str]: ...
        def __new__(cls, *args: Any, **kwargs: Any) -> Any: ...

    def db_value(self, value: object) -> str | None:
        if value is None:
            return None
        return str(value).lower()


class BaseModel(Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False
