"""Dynamic client registrations (RFC 7591): one row per (service, issuer), sealed.

Units of work for `Store.run`. The registration JSON is sealed by the caller with
`seal_managed(keyring, <row id>, plaintext, field="registration_sealed")` (the convention key
rotation re-encrypts under, `store/keys.py` BLOB_FIELDS), so the row id must be chosen before
sealing: `new_id()`.

Invariants:
- At most one row per (service, issuer) — the unique index decides between two instances that
  registered at once; the loser reads the winner's row and uses it.
- A renewal replaces the blob only if it is still the one the renewer read (compare-and-swap),
  so a renewal racing a key rotation or another renewal never overwrites a newer blob.
"""

from __future__ import annotations

from datetime import datetime

import peewee

from bindify_appliance.errors import ConflictError
from bindify_appliance.store.models import DcrRegistration

__all__ = [
    "count_registrations",
    "delete_registrations",
    "get_registration",
    "insert_registration",
    "replace_registration",
]


def get_registration(service: str, issuer: str) -> DcrRegistration | None:
    return DcrRegistration.get_or_none(
        (DcrRegistration.service == service) & (DcrRegistration.issuer == issuer)
    )


def insert_registration(
    row_id: str,
    *,
    service: str,
    issuer: str,
    registration_sealed: str,
    key_fingerprint: str,
    client_id_expires_at: datetime | None,
    now: datetime,
) -> DcrRegistration:
    """Insert a new registration; `ConflictError` when (service, issuer) already has one."""
    db = DcrRegistration._meta.database
    try:
        with db.atomic():
            return DcrRegistration.create(
                id=row_id,
                service=service,
                issuer=issuer,
                registration_sealed=registration_sealed,
                key_fingerprint=key_fingerprint,
                client_id_expires_at=client_id_expires_at,
                created_at=now,
                updated_at=now,
            )
    except peewee.IntegrityError:
        raise ConflictError("a registration for this service and issuer exists") from None


def replace_registration(
    row_id: str,
    *,
    expected_sealed: str,
    registration_sealed: str,
    key_fingerprint: str,
    client_id_expires_at: datetime | None,
    now: datetime,
) -> bool:
    """Renew a registration in place if its blob is still `expected_sealed`; True if written."""
    changed = (
        DcrRegistration.update(
            {
                DcrRegistration.registration_sealed: registration_sealed,
                DcrRegistration.key_fingerprint: key_fingerprint,
                DcrRegistration.client_id_expires_at: client_id_expires_at,
                DcrRegistration.updated_at: now,
            }
        )
        .where(
            (DcrRegistration.id == row_id)
            & (DcrRegistration.registration_sealed == expected_sealed)
        )
        .execute()
    )
    return bool(changed == 1)


def count_registrations(service: str | None = None) -> int:
    query = DcrRegistration.select()
    if service is not None:
        query = query.where(DcrRegistration.service == service)
    return int(query.count())


def delete_registrations(service: str) -> int:
    """Forget every registration of a service (an admin deleted it); the number deleted."""
    return int(DcrRegistration.delete().where(DcrRegistration.service == service).execute())


def delete_expired_registrations(now: datetime) -> int:
    """Forget registrations whose client has expired (unit of work); the number deleted.

    The next connect to that server registers afresh; connections that still hold the dead
    client in their own token payload fail their next refresh with `invalid_client`, which the
    token lifecycle turns into needs-reconnect.
    """
    return int(
        DcrRegistration.delete()
        .where(
            DcrRegistration.client_id_expires_at.is_null(False)
            & (DcrRegistration.client_id_expires_at <= now)
        )
        .execute()
    )
