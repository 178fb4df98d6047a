"""The audit chain: canonical form, MAC key, appending, retention and re-keying (DESIGN §12).

Each row's `mac` is HMAC-SHA-256, under the audit key of master key `key_fp`, of the previous
row's MAC (32 raw bytes; 32 zero bytes before the first row) followed by the row's canonical
JSON (`canonical`: every column but `mac`, the fingerprint included, keys sorted, compact,
ASCII). Changing any field, removing a row or re-ordering rows breaks the next link.

The audit key is HKDF-SHA256(master key text, salt `bindify-audit-chain`, info
`bindify-audit-mac-v1`): distinct from every sealing key, and stored nowhere. New rows use the
active master key; a row names the key it was made with, so rows made before `keys rotate`
still verify while the old key is configured. `keys remove` re-keys: it verifies the whole
chain first, then re-computes every MAC from the first row made under the removed key to the
head under the active key and appends `audit.rekey` naming the range and the previous head.

Retention deletes a prefix (rows older than the cut-off, never a row with a newer row before
it) and appends `audit.retention` holding the last deleted row's `seq` and MAC, from which
verification starts again.

Invariants: every append, seal, deletion and re-key runs inside `store.audit.chain_transaction`
(gap-free `seq`); the units here are synchronous (run them with `Store.run`/`Store.call`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from functools import lru_cache
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bindify_appliance.crypto.keyring import Keyring
from bindify_appliance.store import audit as rows
from bindify_appliance.store.audit import AuditRow

__all__ = [
    "ANCHOR_HEX",
    "GENESIS",
    "REKEY",
    "RETENTION",
    "ZERO_MAC",
    "append",
    "audit_key",
    "canonical",
    "compute_mac",
    "entry_json",
    "prune",
    "rekey",
]

GENESIS: Final = "audit.genesis"
RETENTION: Final = "audit.retention"
REKEY: Final = "audit.rekey"
ZERO_MAC: Final = bytes(32)
# Anchors (log lines, `audit export`) carry the first 32 hex digits (128 bits) of the head's
# MAC: enough to detect a changed head, and short of the 40-hex run the log scrubber redacts.
ANCHOR_HEX: Final = 32
_SALT: Final = b"bindify-audit-chain"
_INFO: Final = b"bindify-audit-mac-v1"


@lru_cache(maxsize=16)
def _derive(master_key: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(
        master_key.encode("utf-8")
    )


def audit_key(keyring: Keyring, fingerprint: str) -> bytes | None:
    """The audit MAC key of the configured master key `fingerprint` (None: not configured)."""
    if fingerprint not in keyring:
        return None
    return _derive(keyring.get(fingerprint).key)


def _entry_fields(row: AuditRow) -> dict[str, Any]:
    """The entry's own fields, in the one shape the MAC, the API and the export share."""
    return {
        "seq": row.seq,
        "at": row.at,
        "actor": {"type": row.actor_type, "id": row.actor_id, "email": row.actor_email},
        "action": row.action,
        "target": (
            {"type": row.target_type, "id": row.target_id}
            if row.target_type is not None or row.target_id is not None
            else None
        ),
        "ip": row.ip,
        "outcome": row.outcome,
        "detail": row.detail,
    }


def canonical(row: AuditRow) -> bytes:
    """The bytes a row's MAC covers: its fields and its key's fingerprint, keys sorted."""
    body = {**_entry_fields(row), "key": row.key_fp}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _prev_bytes(prev_mac: str) -> bytes:
    if not prev_mac:
        return ZERO_MAC
    try:
        raw = bytes.fromhex(prev_mac)
    except ValueError:
        raw = b""
    # A malformed stored MAC still yields a definite (wrong) link, so the break is reported.
    return raw if len(raw) == 32 else hashlib.sha256(prev_mac.encode("utf-8", "replace")).digest()


def compute_mac(key: bytes, prev_mac: str, row: AuditRow) -> str:
    return hmac.new(key, _prev_bytes(prev_mac) + canonical(row), hashlib.sha256).hexdigest()


def _seal(keyring: Keyring, row: AuditRow, prev_mac: str) -> AuditRow:
    fp = keyring.active.fingerprint
    key = audit_key(keyring, fp)
    assert key is not None
    unsealed = replace(row, key_fp=fp, mac="")
    return replace(unsealed, mac=compute_mac(key, prev_mac, unsealed))


def _link_head(keyring: Keyring) -> AuditRow | None:
    """The head, after sealing the migration's unsealed genesis entry when it is the head."""
    head = rows.head()
    if head is not None and head.seq == 1 and head.action == GENESIS and not head.mac:
        head = _seal(keyring, head, "")
        rows.set_mac(head.seq, head.key_fp, head.mac)
    return head


def append(keyring: Keyring, draft: AuditRow) -> AuditRow:
    """Append `draft` (its seq, key and MAC are assigned here) under the chain lock."""

    def inside() -> AuditRow:
        head = _link_head(keyring)
        numbered = replace(draft, seq=head.seq + 1 if head else 1)
        row = _seal(keyring, numbered, head.mac if head else "")
        rows.insert(row)
        return row

    return rows.chain_transaction(inside)


def prune(keyring: Keyring, cutoff: str, now: str) -> int:
    """Delete the leading rows older than `cutoff` and record `audit.retention`; the count."""

    def inside() -> int:
        through = rows.last_seq_before(cutoff)
        head = _link_head(keyring)
        if through is None or head is None:
            return 0
        last = next(rows.iter_rows(through - 1, batch=1))
        deleted = rows.delete_through(through)
        checkpoint = AuditRow(
            seq=head.seq + 1,
            at=now,
            actor_type="system",
            actor_id=None,
            actor_email=None,
            action=RETENTION,
            target_type=None,
            target_id=None,
            ip=None,
            outcome="success",
            detail={"through_seq": through, "prev_mac": last.mac, "deleted": deleted},
        )
        rows.insert(_seal(keyring, checkpoint, head.mac))
        return deleted

    return rows.chain_transaction(inside)


def rekey(keyring: Keyring, fingerprint: str, now: str) -> int:
    """Re-compute every MAC from the first row under `fingerprint` to the head under the active
    key and append `audit.rekey`; the number of rows re-keyed. Verify the chain first."""

    def inside() -> int:
        first = next((r for r in rows.iter_rows() if r.key_fp == fingerprint), None)
        head = _link_head(keyring)
        if first is None or head is None:
            return 0
        prev = _mac_before(first.seq)
        count = 0
        for row in rows.iter_rows(first.seq - 1):
            sealed = _seal(keyring, row, prev)
            rows.set_mac(row.seq, sealed.key_fp, sealed.mac)
            prev = sealed.mac
            count += 1
        marker = AuditRow(
            seq=head.seq + 1,
            at=now,
            actor_type="cli",
            actor_id=None,
            actor_email=None,
            action=REKEY,
            target_type="master_key",
            target_id=fingerprint,
            ip=None,
            outcome="success",
            detail={
                "from_seq": first.seq,
                "through_seq": head.seq,
                "previous_head": head.mac[:ANCHOR_HEX],
            },
        )
        rows.insert(_seal(keyring, marker, prev))
        return count

    return rows.chain_transaction(inside)


def _mac_before(seq: int) -> str:
    """The MAC row `seq` links to: the previous row's, or a retention checkpoint's."""
    if seq == 1:
        return ""
    previous = next(rows.iter_rows(seq - 2, batch=1), None)
    if previous is not None and previous.seq == seq - 1:
        return previous.mac
    for checkpoint in rows.rows_with_action((RETENTION,)):
        if checkpoint.detail.get("through_seq") == seq - 1:
            return str(checkpoint.detail.get("prev_mac", ""))
    return ""


def entry_json(row: AuditRow) -> dict[str, Any]:
    """An entry as the API lists it and `audit export` writes it (one shape for both)."""
    return {**_entry_fields(row), "key_fp": row.key_fp, "mac": row.mac}
