"""Key rotation: choosing the target key, checking live instances, re-encrypting every blob.

Replaces the hosted worker's handshake table and cron (reference/hosted-bindify.md §3.5) with
direct, resumable work from the CLI (DESIGN §7):

1. `plan_rotation` decides the target from the keyring and the blob counts alone — no state is
   kept anywhere else, so a run killed at any moment is resumed by running it again:
   - the newest key is marked `"active": false` → it is the target and must be activated;
   - else blobs remain on an older configured key → finish the rotation to the active key;
   - else everything is current → (key file) generate a new key; (environment) nothing to do.
2. `instances_lacking` lists live instances (heartbeat within `LIVE_MAX_AGE`) that do not hold
   the target key; rotation must not seal anything under a key some instance cannot open.
3. `Reencryptor` rewrites every managed blob not on the target key, in small batches.

Invariants:
- Every row is, at every instant, sealed under either its old key or the target key: a row is
  rewritten by one conditional UPDATE (`store.keys.rewrite_batch`; connections through
  `swap_tokens`' compare-and-swap on `token_generation`), committed per batch.
- A lost compare-and-swap (a concurrent refresh wrote the row) is never overwritten: the row is
  re-read and re-sealed from what is now stored, or counted current when the writer already used
  the target key.
- New blobs are sealed outside the transaction, so the write lock is held only for the UPDATEs.
- Per-row failures (an orphan fingerprint, a blob that does not open) are collected and never
  abort the run; nothing here logs or puts a key or plaintext in a message.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bindify_appliance.clock import Clock
from bindify_appliance.crypto.keyring import Keyring, open_managed, seal_managed
from bindify_appliance.errors import DecryptError, KeyringError
from bindify_appliance.keymgmt.usage import UsageReport
from bindify_appliance.store import Store
from bindify_appliance.store.instances import InstanceRecord, live_instances
from bindify_appliance.store.keys import (
    BLOB_FIELDS,
    KINDS,
    BlobKind,
    Rewrite,
    SealedRow,
    blob_counts,
    count_not_on,
    pending_rows,
    read_row,
    rewrite_batch,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LIVE_MAX_AGE",
    "FaultHook",
    "ProgressHook",
    "Reencryptor",
    "RotationFailure",
    "RotationPlan",
    "RotationResult",
    "describe_instance",
    "instances_lacking",
    "plan_rotation",
    "wait_for_instances",
]

# An instance whose heartbeat is older than this is not live (instances heartbeat well inside it).
LIVE_MAX_AGE = timedelta(minutes=2)
DEFAULT_BATCH_SIZE = 100
# Attempts per row after a lost compare-and-swap before it is reported as a failure.
MAX_ROW_ATTEMPTS = 5
# Passes over the table: a second one picks up rows an instance re-sealed under the old key
# while it had not yet re-read the key file.
MAX_PASSES = 3

# (point, rows rewritten so far) at "before_swap", "after_swap" and "after_batch".
FaultHook = Callable[[str, int], None]
# (rows handled so far, rows to handle) after each batch.
ProgressHook = Callable[[int, int], None]


@dataclass(frozen=True)
class RotationPlan:
    """What `keys rotate` will do.

    `target` is None when there is nothing to do, or when `generate` (the key does not exist yet).
    """

    target: str | None
    generate: bool = False  # generate a new key and add it (marked inactive) first
    activate: bool = False  # make `target` the active key in the key file
    pending: int = 0  # blobs on configured keys other than the (current) active key


def plan_rotation(keyring: Keyring, *, from_env: bool, usage: UsageReport) -> RotationPlan:
    """Choose the rotation's target key from the keyring and the blob counts.

    Raises:
        KeyringError: environment-configured keys whose newest key is still marked inactive
            (the operator makes it active on every instance; this process cannot).
    """
    newest = keyring.keys[-1]
    pending = usage.not_on_active()
    if not newest.active_allowed:
        if from_env:
            raise KeyringError(
                f'the newest key in BINDIFY_MASTER_KEYS ({newest.fingerprint}) is marked "active": '
                "false; once every instance holds it, remove that marker on every instance, "
                "restart them, then run keys rotate again"
            )
        return RotationPlan(target=newest.fingerprint, activate=True, pending=_usage_total(usage))
    active = keyring.active.fingerprint
    if pending:
        return RotationPlan(target=active, pending=pending)
    if from_env:
        return RotationPlan(target=None)
    return RotationPlan(target=None, generate=True, activate=True, pending=_usage_total(usage))


def _usage_total(usage: UsageReport) -> int:
    """Blobs under configured keys (what a rotation to a brand-new key rewrites)."""
    return sum(entry.total for entry in usage.keys)


# ----------------------------------------------------------------------------- instances


def _dead_here(record: InstanceRecord) -> bool:
    """True for a record left by a process of this host that no longer exists (SIGKILL)."""
    if record.hostname != socket.gethostname() or record.pid <= 0:
        return False
    try:
        os.kill(record.pid, 0)
    except OSError as exc:
        return exc.errno == errno.ESRCH
    return False


def instances_lacking(
    store: Store, fingerprint: str, now: datetime, *, max_age: timedelta = LIVE_MAX_AGE
) -> list[InstanceRecord]:
    """Live instances that do not hold key `fingerprint` (records of dead local pids ignored)."""
    live = store.call(live_instances, now, max_age)
    return [r for r in live if fingerprint not in r.fingerprints and not _dead_here(r)]


def wait_for_instances(
    store: Store,
    fingerprint: str,
    clock: Clock,
    *,
    timeout: float,
    sleep: Callable[[float], None],
    on_wait: Callable[[list[InstanceRecord]], None] | None = None,
    poll: float = 1.0,
) -> list[InstanceRecord]:
    """Wait up to `timeout` s for every live instance to hold `fingerprint`; the laggards left.

    Instances using a key file re-read it on change and record what they hold, so a key just
    written to the file reaches them within seconds. `on_wait` is told once, when waiting starts.
    """
    deadline = clock.monotonic() + timeout
    told = False
    while True:
        lacking = instances_lacking(store, fingerprint, clock.now())
        if not lacking or clock.monotonic() >= deadline:
            return lacking
        if not told and on_wait is not None:
            on_wait(lacking)
            told = True
        sleep(poll)


def describe_instance(record: InstanceRecord) -> str:
    """A short, secret-free name for an instance in messages."""
    return f"{record.hostname} (pid {record.pid}, instance {record.id[:8]})"


# ----------------------------------------------------------------------------- re-encryption


@dataclass(frozen=True)
class RotationFailure:
    kind: BlobKind
    id: str
    reason: str


@dataclass
class RotationResult:
    target: str
    rewritten: dict[BlobKind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    already_current: int = 0  # on the target key at the end without this run rewriting them
    raced: int = 0  # lost a compare-and-swap at least once (re-read and handled)
    gone: int = 0  # deleted while the rotation ran
    failures: list[RotationFailure] = field(default_factory=list)
    remaining: int = 0  # blobs still not on the target key at the end (failures included)
    passes: int = 0
    seconds: float = 0.0

    @property
    def total_rewritten(self) -> int:
        return sum(self.rewritten.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_rewritten / self.seconds if self.seconds > 0 else 0.0


class Reencryptor:
    """Re-seal every managed blob under the keyring's active key (the rotation target)."""

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        clock: Clock,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: ProgressHook | None = None,
        fault: FaultHook | None = None,
        settle: Callable[[], None] | None = None,
        max_passes: int = MAX_PASSES,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.store = store
        self.keyring = keyring
        self.target = keyring.active.fingerprint
        self.clock = clock
        self.batch_size = batch_size
        self.progress = progress
        self.fault = fault
        self.settle = settle
        self.max_passes = max_passes
        self._result = RotationResult(target=self.target)
        self._failed: set[tuple[BlobKind, str]] = set()
        self._swapped = 0  # rows rewritten, counting UPDATEs of the batch in flight
        self._done = 0
        self._total = 0

    def run(self) -> RotationResult:
        """Run up to `max_passes` passes; returns the counts. Call once per instance."""
        result = self._result
        started = self.clock.monotonic()
        for number in range(1, self.max_passes + 1):
            result.passes = number
            before = result.total_rewritten
            self._pass()
            result.remaining = sum(self.store.call(count_not_on, self.target).values())
            retryable = result.remaining - len(self._failed)
            if retryable <= 0 or result.total_rewritten == before or number == self.max_passes:
                break
            if self.settle is not None:
                self.settle()
        result.seconds = self.clock.monotonic() - started
        # Counted at the end: rows a concurrent writer sealed under the target key before this
        # run reached them are current without a rewrite, like those that started there.
        on_target = sum(self.store.call(blob_counts).get(self.target, {}).values())
        result.already_current = max(0, on_target - result.total_rewritten)
        return result

    # -- one pass --------------------------------------------------------------------------

    def _pass(self) -> None:
        pending = self.store.call(count_not_on, self.target)
        self._total = max(0, sum(pending.values()) - len(self._failed))
        self._done = 0
        self._report()
        for kind in KINDS:
            if not pending[kind]:
                continue
            cursor = ""
            while True:
                rows = self.store.call(pending_rows, kind, self.target, cursor, self.batch_size)
                if not rows:
                    break
                cursor = rows[-1].id
                self._batch(rows)
                self._fire("after_batch", self._result.total_rewritten)
                self._report()

    def _batch(self, rows: list[SealedRow]) -> None:
        writes = [
            write
            for row in rows
            if (row.kind, row.id) not in self._failed and (write := self._reseal(row)) is not None
        ]
        if not writes:
            return
        for write, ok in zip(writes, self._write(writes), strict=True):
            if ok:
                self._won(write.row)
            else:
                self._result.raced += 1
                self._retry(write.row)

    def _retry(self, row: SealedRow) -> None:
        """A concurrent writer won this row: re-read it and try again from what is stored."""
        result = self._result
        for _attempt in range(MAX_ROW_ATTEMPTS):
            current = self.store.call(read_row, row.kind, row.id)
            if current is None:
                result.gone += 1
                self._done += 1
                return
            if current.fingerprint == self.target:
                # The writer already sealed under the target key: its write stays untouched.
                self._done += 1
                return
            write = self._reseal(current)
            if write is None:
                return
            if self._write([write])[0]:
                self._won(row)
                return
        self._fail(row, "kept changing under concurrent writes; run keys rotate again")

    def _write(self, writes: list[Rewrite]) -> list[bool]:
        self._swapped = self._result.total_rewritten
        return self.store.call(rewrite_batch, writes, self.clock.now(), self._on_swap)

    def _on_swap(self, point: str, _row: SealedRow) -> None:
        if point == "after_swap":
            self._swapped += 1
        self._fire(point, self._swapped)

    def _won(self, row: SealedRow) -> None:
        self._result.rewritten[row.kind] += 1
        self._done += 1

    def _reseal(self, row: SealedRow) -> Rewrite | None:
        field_name = BLOB_FIELDS[row.kind]
        try:
            plaintext = open_managed(
                self.keyring, row.fingerprint, row.id, row.blob, field=field_name
            )
        except KeyringError:
            shown = row.fingerprint or "(none)"
            self._fail(row, f"sealed under fingerprint {shown}, which no configured key has")
            return None
        except DecryptError:
            self._fail(row, f"does not open with key {row.fingerprint} (damaged blob)")
            return None
        blob, fp = seal_managed(self.keyring, row.id, plaintext, field=field_name)
        return Rewrite(row=row, blob=blob, fingerprint=fp)

    def _fail(self, row: SealedRow, reason: str) -> None:
        if (row.kind, row.id) not in self._failed:
            self._failed.add((row.kind, row.id))
            self._result.failures.append(RotationFailure(row.kind, row.id, reason))
        self._done += 1

    def _fire(self, point: str, count: int) -> None:
        if self.fault is not None:
            self.fault(point, count)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(min(self._done, self._total), self._total)
