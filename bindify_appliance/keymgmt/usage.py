"""Which master key protects how many blobs, and which stored fingerprints match no key.

`key_usage` feeds `keys list`, `keys remove` and the rotation plan; `orphan_fingerprints` is the
start-up and periodic check (DESIGN §7, issue 3): a fingerprint stored beside a blob that no
configured key matches means those blobs cannot be opened until the key is put back.

Both are synchronous units of work for `Store.call`/`Store.run`. They return data and never log:
the caller decides how to report (fingerprints are not secrets; keys never leave the keyring).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bindify_appliance.crypto.keyring import Keyring
from bindify_appliance.store.keys import KINDS, BlobKind, blob_counts

__all__ = ["KeyUsage", "UsageReport", "key_usage", "orphan_fingerprints"]


@dataclass(frozen=True)
class KeyUsage:
    """Blob counts for one fingerprint, configured or not."""

    fingerprint: str
    configured: bool
    active: bool = False
    marked_inactive: bool = False
    counts: dict[BlobKind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"fingerprint": self.fingerprint}
        if self.configured:
            data["active"] = self.active
            data["marked_inactive"] = self.marked_inactive
        data.update(
            connections=self.counts["connection"],
            service_secrets=self.counts["service_secret"],
            dcr_registrations=self.counts["dcr_registration"],
            total=self.total,
        )
        return data


@dataclass(frozen=True)
class UsageReport:
    """Configured keys in key-file order, then orphans (stored, unmatched) by fingerprint."""

    keys: tuple[KeyUsage, ...]
    orphans: tuple[KeyUsage, ...]

    def of(self, fingerprint: str) -> KeyUsage:
        """The usage of `fingerprint` (zero counts when nothing mentions it)."""
        for entry in (*self.keys, *self.orphans):
            if entry.fingerprint == fingerprint:
                return entry
        return KeyUsage(fingerprint=fingerprint, configured=False)

    def not_on_active(self) -> int:
        """Blobs sealed under a configured key other than the active one (rotation's work)."""
        return sum(entry.total for entry in self.keys if not entry.active)


def _usage(keyring: Keyring) -> UsageReport:
    counts = blob_counts()
    active = keyring.active.fingerprint
    keys = tuple(
        KeyUsage(
            fingerprint=entry.fingerprint,
            configured=True,
            active=entry.fingerprint == active,
            marked_inactive=not entry.active_allowed,
            counts=counts.get(entry.fingerprint, dict.fromkeys(KINDS, 0)),
        )
        for entry in keyring
    )
    orphans = tuple(
        KeyUsage(fingerprint=fp, configured=False, counts=by_kind)
        for fp, by_kind in sorted(counts.items())
        if fp not in keyring and sum(by_kind.values()) > 0
    )
    return UsageReport(keys=keys, orphans=orphans)


def key_usage(keyring: Keyring) -> UsageReport:
    """Unit of work: blob counts per configured key, plus the orphan fingerprints."""
    return _usage(keyring)


def orphan_fingerprints(keyring: Keyring) -> dict[str, int]:
    """Unit of work: {stored fingerprint no configured key matches: blobs affected}.

    Counts connections, service client secrets and DCR registrations together. A blob stored
    with an empty fingerprint is reported under "". Empty dict when all is well.
    """
    return {entry.fingerprint: entry.total for entry in _usage(keyring).orphans}
