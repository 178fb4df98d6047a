"""Blobs sealed under master keys: usage counts, rotation reads and conditional rewrites.

Three columns hold managed blobs (sealed with `crypto.seal_managed(keyring, <row id>, plaintext,
field=<column>)`, the fingerprint of the sealing key stored beside each):

| kind                | table             | blob column                  | fingerprint column      |
|---------------------|-------------------|------------------------------|-------------------------|
| `connection`        | connections       | `encrypted_tokens`           | `key_fingerprint`       |
| `service_secret`    | services          | `oauth_client_secret_sealed` | `oauth_key_fingerprint` |
| `dcr_registration`  | dcr_registrations | `registration_sealed`        | `key_fingerprint`       |

Only managed connections count (`key_storage_mode = 'managed'`); zero-knowledge blobs are sealed
under a key no one stores. Every function is a synchronous unit of work for `Store.call`/`run`.

Invariants:
- A connection blob is rewritten only through `connections.swap_tokens` (compare-and-swap on
  `token_generation`, DESIGN §8). Service secrets and DCR registrations have no generation; their
  rewrite is conditional on the exact blob and fingerprint read (a fresh random IV makes every
  seal distinct, so an unchanged blob means nobody wrote the row since).
- `rewrite_batch` runs its rows in one transaction and decides nothing: the caller sealed the
  new blobs before calling, so the write lock is held only for the UPDATEs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, cast

from peewee import fn

from bindify_appliance.store.connections import swap_tokens
from bindify_appliance.store.models import Connection, DcrRegistration, Service, database_proxy

__all__ = [
    "BLOB_FIELDS",
    "KINDS",
    "BlobKind",
    "Rewrite",
    "SealedRow",
    "blob_counts",
    "count_not_on",
    "pending_rows",
    "read_row",
    "rewrite_batch",
]

BlobKind = Literal["connection", "service_secret", "dcr_registration"]
KINDS: Final[tuple[BlobKind, ...]] = ("connection", "service_secret", "dcr_registration")
# The `field` each kind is sealed with (associated data), i.e. its column name.
BLOB_FIELDS: Final[dict[BlobKind, str]] = {
    "connection": "encrypted_tokens",
    "service_secret": "oauth_client_secret_sealed",
    "dcr_registration": "registration_sealed",
}


@dataclass(frozen=True)
class SealedRow:
    """One managed blob as read: `generation` is the connection's token_generation (else None)."""

    kind: BlobKind
    id: str
    blob: str
    fingerprint: str
    generation: int | None = None


@dataclass(frozen=True)
class Rewrite:
    """A re-sealed blob to write over `row`, conditional on `row` still being current."""

    row: SealedRow
    blob: str
    fingerprint: str


def _tuples(query: Any) -> list[tuple[Any, ...]]:
    # peewee's stubs type `.tuples()` as yielding models; at run time they are plain tuples.
    return cast(list[tuple[Any, ...]], list(query.tuples()))


def _connection_blobs() -> Any:
    return (Connection.key_storage_mode == "managed") & Connection.encrypted_tokens.is_null(False)


def blob_counts() -> dict[str, dict[BlobKind, int]]:
    """{fingerprint: {kind: count}} over every managed blob; "" for blobs with no fingerprint."""
    out: dict[str, dict[BlobKind, int]] = {}

    def add(kind: BlobKind, pairs: list[tuple[Any, ...]]) -> None:
        for fp, count in pairs:
            out.setdefault(fp or "", dict.fromkeys(KINDS, 0))[kind] += int(count)

    add(
        "connection",
        _tuples(
            Connection.select(Connection.key_fingerprint, fn.COUNT(Connection.id))
            .where(_connection_blobs())
            .group_by(Connection.key_fingerprint)
        ),
    )
    add(
        "service_secret",
        _tuples(
            Service.select(Service.oauth_key_fingerprint, fn.COUNT(Service.id))
            .where(Service.oauth_client_secret_sealed.is_null(False))
            .group_by(Service.oauth_key_fingerprint)
        ),
    )
    add(
        "dcr_registration",
        _tuples(
            DcrRegistration.select(
                DcrRegistration.key_fingerprint, fn.COUNT(DcrRegistration.id)
            ).group_by(DcrRegistration.key_fingerprint)
        ),
    )
    return out


def count_not_on(fingerprint: str) -> dict[BlobKind, int]:
    """How many blobs of each kind are sealed under any key other than `fingerprint`."""
    return {
        "connection": int(
            Connection.select()
            .where(_connection_blobs() & (Connection.key_fingerprint != fingerprint))
            .count()
        ),
        "service_secret": int(
            Service.select()
            .where(
                Service.oauth_client_secret_sealed.is_null(False)
                & (Service.oauth_key_fingerprint != fingerprint)
            )
            .count()
        ),
        "dcr_registration": int(
            DcrRegistration.select().where(DcrRegistration.key_fingerprint != fingerprint).count()
        ),
    }


def pending_rows(kind: BlobKind, not_on: str, after_id: str, limit: int) -> list[SealedRow]:
    """Up to `limit` blobs of `kind` not sealed under `not_on`, with id > `after_id`, by id.

    Keyset pagination: rows that fail (and stay pending) are never read twice in one pass.
    """
    if kind == "connection":
        query = (
            Connection.select(
                Connection.id,
                Connection.encrypted_tokens,
                Connection.key_fingerprint,
                Connection.token_generation,
            )
            .where(
                _connection_blobs()
                & (Connection.key_fingerprint != not_on)
                & (Connection.id > after_id)
            )
            .order_by(Connection.id)
            .limit(limit)
        )
        return [
            SealedRow("connection", cid, blob, fp or "", int(gen))
            for cid, blob, fp, gen in _tuples(query)
        ]
    if kind == "service_secret":
        squery = (
            Service.select(
                Service.id, Service.oauth_client_secret_sealed, Service.oauth_key_fingerprint
            )
            .where(
                Service.oauth_client_secret_sealed.is_null(False)
                & (Service.oauth_key_fingerprint != not_on)
                & (Service.id > after_id)
            )
            .order_by(Service.id)
            .limit(limit)
        )
        return [
            SealedRow("service_secret", sid, blob, fp or "") for sid, blob, fp in _tuples(squery)
        ]
    dquery = (
        DcrRegistration.select(
            DcrRegistration.id, DcrRegistration.registration_sealed, DcrRegistration.key_fingerprint
        )
        .where((DcrRegistration.key_fingerprint != not_on) & (DcrRegistration.id > after_id))
        .order_by(DcrRegistration.id)
        .limit(limit)
    )
    return [SealedRow("dcr_registration", did, blob, fp or "") for did, blob, fp in _tuples(dquery)]


def read_row(kind: BlobKind, row_id: str) -> SealedRow | None:
    """The current blob of one row; None when the row is gone or holds no managed blob."""
    if kind == "connection":
        conn = Connection.get_or_none(Connection.id == row_id)
        if conn is None or conn.key_storage_mode != "managed" or conn.encrypted_tokens is None:
            return None
        return SealedRow(
            "connection",
            conn.id,
            conn.encrypted_tokens,
            conn.key_fingerprint or "",
            int(conn.token_generation),
        )
    if kind == "service_secret":
        svc = Service.get_or_none(Service.id == row_id)
        if svc is None or svc.oauth_client_secret_sealed is None:
            return None
        return SealedRow(
            "service_secret",
            svc.id,
            svc.oauth_client_secret_sealed,
            svc.oauth_key_fingerprint or "",
        )
    reg = DcrRegistration.get_or_none(DcrRegistration.id == row_id)
    if reg is None:
        return None
    return SealedRow("dcr_registration", reg.id, reg.registration_sealed, reg.key_fingerprint or "")


def _swap_one(write: Rewrite, now: datetime) -> bool:
    row = write.row
    if row.kind == "connection":
        if row.generation is None:
            raise ValueError("a connection rewrite needs the generation it read")
        return swap_tokens(
            row.id,
            expected_generation=row.generation,
            encrypted_tokens=write.blob,
            key_fingerprint=write.fingerprint,
            now=now,
        )
    if row.kind == "service_secret":
        changed = (
            Service.update(
                {
                    Service.oauth_client_secret_sealed: write.blob,
                    Service.oauth_key_fingerprint: write.fingerprint,
                    Service.updated_at: now,
                }
            )
            .where(
                (Service.id == row.id)
                & (Service.oauth_client_secret_sealed == row.blob)
                & (Service.oauth_key_fingerprint == row.fingerprint)
            )
            .execute()
        )
        return bool(changed == 1)
    changed = (
        DcrRegistration.update(
            {
                DcrRegistration.registration_sealed: write.blob,
                DcrRegistration.key_fingerprint: write.fingerprint,
                DcrRegistration.updated_at: now,
            }
        )
        .where(
            (DcrRegistration.id == row.id)
            & (DcrRegistration.registration_sealed == row.blob)
            & (DcrRegistration.key_fingerprint == row.fingerprint)
        )
        .execute()
    )
    return bool(changed == 1)


def rewrite_batch(
    writes: Sequence[Rewrite],
    now: datetime,
    on_swap: Callable[[str, SealedRow], None] | None = None,
) -> list[bool]:
    """Apply each conditional rewrite in one transaction; True where the row was still current.

    `on_swap(point, row)` is called with "before_swap" and "after_swap" around each UPDATE
    (inside the transaction), for progress and fault injection; it must not touch the database.
    """
    won: list[bool] = []
    with database_proxy.atomic():
        for write in writes:
            if on_swap is not None:
                on_swap("before_swap", write.row)
            ok = _swap_one(write, now)
            won.append(ok)
            if on_swap is not None and ok:
                on_swap("after_swap", write.row)
    return won
