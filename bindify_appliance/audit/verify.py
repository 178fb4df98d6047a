"""Verifying the audit chain (`bindify audit verify`): the first broken, missing or rolled-back row.

The walk goes oldest first, in batches, and stops at the first problem:
- missing: a `seq` is absent — inside the chain (a deleted row) or at its start when no
  `audit.retention` checkpoint covers the gap (rows deleted from the start by someone else);
- broken: a row's MAC does not match its content and the previous row's MAC (an edited,
  re-ordered or forged row), a row names a master key that is not configured, or a row is
  unsealed anywhere but as the lone genesis entry;
- rolled back: an anchor (`SEQ:MAC` from the log or an export) names a `seq` beyond the head
  (the tail was truncated or an older database restored) or a row whose MAC differs.
An anchor inside a range re-keyed by `keys remove` is accepted only when it is that range's
recorded previous head; other anchors there cannot be compared and are reported as notes.

Invariant: verification only reads; its messages name seq numbers and kinds, never content.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field

from bindify_appliance.audit.chain import (
    ANCHOR_HEX,
    REKEY,
    RETENTION,
    audit_key,
    compute_mac,
)
from bindify_appliance.crypto.keyring import Keyring
from bindify_appliance.errors import ConfigError
from bindify_appliance.store import audit as rows

__all__ = ["Anchor", "Problem", "Verification", "parse_anchor", "verify_chain"]

_ANCHOR = re.compile(rf"(\d{{1,18}}):([0-9a-f]{{{ANCHOR_HEX},64}})")


@dataclass(frozen=True)
class Anchor:
    seq: int
    mac: str  # a prefix of at least ANCHOR_HEX hex digits

    def __str__(self) -> str:
        return f"{self.seq}:{self.mac}"


def parse_anchor(text: str) -> Anchor:
    match = _ANCHOR.fullmatch(text.strip().lower())
    if match is None:
        raise ConfigError(
            f"an anchor is SEQ:MAC with at least {ANCHOR_HEX} hex digits, as logged by "
            "audit_anchor lines and written last by bindify audit export"
        )
    return Anchor(int(match.group(1)), match.group(2))


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # "broken" | "missing" | "rolled_back"
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} at seq {self.seq}: {self.reason}"


@dataclass
class Verification:
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_mac: str = ""
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def anchor(self) -> str | None:
        if self.last_seq is None:
            return None
        return f"{self.last_seq}:{self.head_mac[:ANCHOR_HEX]}"


def _start_link(first_seq: int) -> tuple[str, Problem | None]:
    """The MAC the first remaining row links to, from the retention checkpoint covering it."""
    if first_seq == 1:
        return "", None
    covered = 0
    for checkpoint in rows.rows_with_action((RETENTION,)):
        through = checkpoint.detail.get("through_seq")
        if through == first_seq - 1:
            return str(checkpoint.detail.get("prev_mac", "")), None
        if isinstance(through, int) and through < first_seq:
            covered = max(covered, through)
    return "", Problem(
        covered + 1, "missing", "rows were removed from the start without a retention checkpoint"
    )


def verify_chain(keyring: Keyring, anchors: list[Anchor] | None = None) -> Verification:
    """Walk the chain (unit of work); the result names the first problem, if any."""
    result = Verification()
    pending = {anchor.seq: anchor for anchor in anchors or []}
    rekeyed = [
        (int(r.detail.get("from_seq", 0)), int(r.detail.get("through_seq", 0)), r)
        for r in rows.rows_with_action((REKEY,))
    ]
    prev_mac = ""
    expected: int | None = None
    for row in rows.iter_rows():
        if expected is None:
            result.first_seq = row.seq
            prev_mac, result.problem = _start_link(row.seq)
            if result.problem is not None:
                return result
            expected = row.seq
        if row.seq != expected:
            result.problem = Problem(expected, "missing", "this row was deleted")
            return result
        problem = _check_row(keyring, row, prev_mac)
        if problem is not None:
            result.problem = problem
            return result
        anchor = pending.pop(row.seq, None)
        if (
            anchor is not None
            and not hmac.compare_digest(row.mac[: len(anchor.mac)], anchor.mac)
            and not _rekeyed_anchor(anchor, rekeyed, result)
        ):
            result.problem = Problem(
                row.seq,
                "rolled_back",
                "the row differs from the anchor (rewritten, or an older database restored)",
            )
            return result
        result.entries += 1
        result.last_seq = row.seq
        result.head_mac = row.mac
        prev_mac = row.mac
        expected = row.seq + 1
    if expected is None:
        result.problem = Problem(1, "missing", "the trail is empty (it always starts with genesis)")
        return result
    for anchor in sorted(pending.values(), key=lambda a: a.seq):
        if result.first_seq is not None and anchor.seq < result.first_seq:
            result.notes.append(f"anchor {anchor.seq} predates the retained rows; not compared")
            continue
        result.problem = Problem(
            anchor.seq,
            "rolled_back",
            f"an anchor names seq {anchor.seq} but the trail ends at seq {result.last_seq or 0} "
            "(the tail was removed, or an older database restored)",
        )
        return result
    return result


def _check_row(keyring: Keyring, row: rows.AuditRow, prev_mac: str) -> Problem | None:
    if "_unreadable" in row.detail:
        return Problem(row.seq, "broken", "the detail is not a JSON object")
    if not row.mac:
        if row.seq == 1 and not row.key_fp:
            return None  # the migration's genesis entry before the first append seals it
        return Problem(row.seq, "broken", "the row is not sealed")
    key = audit_key(keyring, row.key_fp)
    if key is None:
        return Problem(
            row.seq, "broken", f"the row names master key {row.key_fp[:16]!r}, not configured"
        )
    if not hmac.compare_digest(compute_mac(key, prev_mac, row), row.mac):
        return Problem(row.seq, "broken", "the MAC does not match (row changed or re-ordered)")
    return None


def _rekeyed_anchor(
    anchor: Anchor, rekeyed: list[tuple[int, int, rows.AuditRow]], result: Verification
) -> bool:
    for first, last, marker in rekeyed:
        if first <= anchor.seq <= last:
            previous = str(marker.detail.get("previous_head", ""))
            if anchor.seq == last and previous and previous.startswith(anchor.mac[: len(previous)]):
                return True
            result.notes.append(
                f"anchor {anchor.seq} predates the re-key at seq {marker.seq}; not compared"
            )
            return True
    return False
