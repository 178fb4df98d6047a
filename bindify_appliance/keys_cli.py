"""The `bindify keys` commands: generate, list, rotate, remove (DESIGN §3, §7).

- `generate`: a new master key alone on stdout; its fingerprint and next steps on stderr.
- `list [--json]`: each configured key (active or not), how many blobs it protects, and orphan
  fingerprints (stored beside blobs, matching no configured key), highlighted.
- `rotate [--yes]`: see `keymgmt.rotation` for the plan. Key file: generates and adds a key when
  there is no new one, waits for live instances to load it, marks it active, re-encrypts.
  Environment keys: the operator has made the new key active on every instance already.
- `remove FINGERPRINT`: refused while any blob uses the key, for the last or the active key.

Invariants:
- A key is printed only by `generate`, only on stdout. Nothing else here shows key material.
- Commands that rewrite `master-keys.json` hold an exclusive `flock` on the data directory for
  their whole run and re-read the file under it, so two `keys` commands never interleave
  their edits (an edit based on a stale read could drop a key that protects blobs).
- A refusal changes nothing and surfaces as one `BindifyError` line (cli.py prints it, exit 1).

Test hook (never for production): `BINDIFY_TEST_FAULT=rotate:<point>:<n>`, read once when a
command starts, makes `keys rotate` SIGKILL its own process at `<point>` once `n` rows have been
rewritten: `before_swap` (about to UPDATE a row), `after_swap` (a row UPDATEd, its batch not yet
committed) or `after_batch` (a batch committed). Crash-resume tests use it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from bindify_appliance import audit
from bindify_appliance.audit.chain import rekey
from bindify_appliance.audit.verify import verify_chain
from bindify_appliance.clock import Clock, SystemClock, iso
from bindify_appliance.config import Settings
from bindify_appliance.crypto.keyring import (
    WEAK_KEY_RULE,
    Keyring,
    MasterKey,
    fingerprint,
    generate_master_key,
    is_strong_key,
)
from bindify_appliance.datadir import KeySource, ensure_data_dir
from bindify_appliance.errors import ConfigError, KeyringError
from bindify_appliance.keymgmt.rotation import (
    LIVE_MAX_AGE,
    FaultHook,
    Reencryptor,
    RotationPlan,
    RotationResult,
    describe_instance,
    instances_lacking,
    plan_rotation,
    wait_for_instances,
)
from bindify_appliance.keymgmt.usage import KeyUsage, UsageReport, key_usage
from bindify_appliance.operations import open_migrated_store
from bindify_appliance.store import Store
from bindify_appliance.store.instances import InstanceRecord, live_instances

__all__ = ["FAULT_ENV", "parse_fault", "run"]

Printer = Callable[[str], None]

FAULT_ENV = "BINDIFY_TEST_FAULT"
FAULT_POINTS = ("before_swap", "after_swap", "after_batch")
# How long `rotate` waits for instances to re-read a key file it just changed.
INSTANCE_WAIT_SECONDS = 30.0
# Pause before another pass, giving instances time to re-read the keys they seal with.
SETTLE_SECONDS = 2.0
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")
_SHOWN_FAILURES = 10


def run(
    action: str,
    args: argparse.Namespace,
    settings_factory: Callable[[argparse.Namespace], Settings],
    *,
    out: Printer,
    say: Printer,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
    instance_wait: float = INSTANCE_WAIT_SECONDS,
    settle_seconds: float = SETTLE_SECONDS,
    stream: TextIO | None = None,
) -> int:
    """Run `keys <action>`; returns the exit status (refusals raise `BindifyError`)."""
    fault = parse_fault((os.environ if environ is None else environ).get(FAULT_ENV))
    if action == "generate":
        return generate(out=out, say=say)
    settings = settings_factory(args)
    clock = clock or SystemClock()
    if action == "list":
        return list_keys(
            settings, as_json=bool(getattr(args, "json", False)), out=out, say=say, clock=clock
        )
    if action == "rotate":
        return rotate(
            settings,
            yes=bool(getattr(args, "yes", False)),
            say=say,
            clock=clock,
            fault=fault,
            instance_wait=instance_wait,
            settle_seconds=settle_seconds,
            stream=stream or sys.stderr,
        )
    if action == "remove":
        return remove(settings, str(args.fingerprint), say=say)
    raise ConfigError(f"unknown keys action {action!r}")


# ----------------------------------------------------------------------------- test hook


def parse_fault(text: str | None) -> FaultHook | None:
    """The `BINDIFY_TEST_FAULT` hook, or None when unset (documented in the module docstring)."""
    if not text:
        return None
    parts = text.strip().split(":")
    if (
        len(parts) != 3
        or parts[0] != "rotate"
        or parts[1] not in FAULT_POINTS
        or not parts[2].isdigit()
    ):
        raise ConfigError(f"{FAULT_ENV}: expected rotate:<{'|'.join(FAULT_POINTS)}>:<rows>")
    point, after = parts[1], int(parts[2])

    def hook(at: str, rows: int) -> None:
        if at == point and rows >= after:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


# ----------------------------------------------------------------------------- generate


def generate(*, out: Printer, say: Printer) -> int:
    key = generate_master_key()
    out(key)
    say(f"fingerprint {fingerprint(key)}")
    say(
        'Next: add it as the last entry of the master keys, marked {"key": "…", "active": false}, '
        "on every instance (master-keys.json is re-read on change; instances configured with "
        "BINDIFY_MASTER_KEYS restart), then run `bindify keys rotate`. With one instance and "
        "the key file, `bindify keys rotate` alone generates, adds and activates a key."
    )
    return 0


# ----------------------------------------------------------------------------- list


def _counts_text(entry: KeyUsage) -> str:
    c = entry.counts
    return f"{c['connection']:>11}  {c['service_secret']:>15}  {c['dcr_registration']:>17}"


def _state(entry: KeyUsage) -> str:
    if entry.active:
        return "active"
    return "new (inactive)" if entry.marked_inactive else "old"


def list_keys(
    settings: Settings, *, as_json: bool, out: Printer, say: Printer, clock: Clock
) -> int:
    keys = _load_keys(settings, say)
    store = open_migrated_store(settings)
    try:
        report = store.call(key_usage, keys.keyring)
        live = store.call(live_instances, clock.now(), LIVE_MAX_AGE)
    finally:
        store.close()
    configured = set(keys.keyring.fingerprints)
    if as_json:
        out(
            json.dumps(
                {
                    "source": "environment" if keys.from_env else "file",
                    "active": keys.keyring.active.fingerprint,
                    "keys": [entry.as_dict() for entry in report.keys],
                    "orphans": [entry.as_dict() for entry in report.orphans],
                    "instances": [
                        {
                            "id": r.id,
                            "hostname": r.hostname,
                            "pid": r.pid,
                            "version": r.version,
                            "heartbeat_at": iso(r.heartbeat_at),
                            "missing": sorted(configured - r.fingerprints),
                        }
                        for r in live
                    ],
                }
            )
        )
    else:
        _print_table(report, out, highlight=sys.stdout.isatty())
        for record in live:
            missing = sorted(configured - record.fingerprints)
            holds = "holds every key" if not missing else "lacks " + ", ".join(missing)
            out(f"instance {describe_instance(record)}: {holds}")
    say(f"keys from {keys.description}")
    _warn_orphans(report, say)
    return 0


def _print_table(report: UsageReport, out: Printer, *, highlight: bool) -> None:
    out(f"{'FINGERPRINT':<16}  {'STATE':<14}  CONNECTIONS  SERVICE SECRETS  DCR REGISTRATIONS")
    for entry in report.keys:
        out(f"{entry.fingerprint:<16}  {_state(entry):<14}  {_counts_text(entry)}")
    for entry in report.orphans:
        line = (
            f"{entry.fingerprint or '(none)':<16}  {'ORPHAN (no key)':<14}  {_counts_text(entry)}"
        )
        out(f"\x1b[1;31m{line}\x1b[0m" if highlight else line)


def _warn_orphans(report: UsageReport, say: Printer) -> None:
    for entry in report.orphans:
        say(
            f"warning: {entry.total} blob(s) are sealed under fingerprint "
            f"{entry.fingerprint or '(none)'}, which no configured key matches; they cannot be "
            "decrypted until that key is added back"
        )


# ----------------------------------------------------------------------------- shared


@contextlib.contextmanager
def _key_file_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive flock on the data directory itself (no extra file in the layout)."""
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KeyringError(
                f"another bindify keys command is changing the master keys in {data_dir}; "
                "wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def _load_keys(settings: Settings, say: Printer) -> KeySource:
    keys = KeySource(settings)
    if keys.from_env and keys.path.exists():
        say(f"note: BINDIFY_MASTER_KEYS is set, so {keys.path} is ignored")
    return keys


@contextlib.contextmanager
def _keys_for_change(settings: Settings, say: Printer) -> Iterator[KeySource]:
    """The key source, loaded under the key-file lock when the keys come from the file."""
    ensure_data_dir(settings)
    if settings.master_keys:
        yield _load_keys(settings, say)
        return
    with _key_file_lock(settings.data_path):
        yield _load_keys(settings, say)


def _names(records: list[InstanceRecord]) -> str:
    return ", ".join(describe_instance(r) for r in records)


# ----------------------------------------------------------------------------- rotate


class _Progress:
    """`\\r` counter on a terminal; a plain line per 10 % otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_step = -1
        self._open = False

    def __call__(self, done: int, total: int) -> None:
        if total <= 0:
            return
        pct = 100 * done // total
        text = f"re-encrypting: {done}/{total} ({pct}%)"
        if self.tty:
            self.stream.write("\r" + text)
            self._open = done < total
            if not self._open:
                self.stream.write("\n")
        else:
            if done == 0:  # a new pass starts
                self._last_step = -1
            if pct // 10 <= self._last_step:
                return
            self._last_step = pct // 10
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise ConfigError("keys rotate rewrites every managed blob: pass --yes to confirm")
    sys.stderr.write(question + " [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise KeyringError("rotation cancelled; nothing changed")


def rotate(
    settings: Settings,
    *,
    yes: bool,
    say: Printer,
    clock: Clock,
    fault: FaultHook | None,
    instance_wait: float,
    settle_seconds: float,
    stream: TextIO,
) -> int:
    with _keys_for_change(settings, say) as keys:
        store = open_migrated_store(settings)
        try:
            return _rotate(
                keys,
                store,
                yes=yes,
                say=say,
                clock=clock,
                fault=fault,
                instance_wait=instance_wait,
                settle_seconds=settle_seconds,
                stream=stream,
            )
        finally:
            store.close()


def _rotate(
    keys: KeySource,
    store: Store,
    *,
    yes: bool,
    say: Printer,
    clock: Clock,
    fault: FaultHook | None,
    instance_wait: float,
    settle_seconds: float,
    stream: TextIO,
) -> int:
    usage = store.call(key_usage, keys.keyring)
    _warn_orphans(usage, say)
    plan = plan_rotation(keys.keyring, from_env=keys.from_env, usage=usage)
    if plan.target is not None and not is_strong_key(keys.keyring.get(plan.target).key):
        raise KeyringError(
            f"key {plan.target} {WEAK_KEY_RULE}; keys rotate will not seal data under it. Make "
            "a new key with `bindify keys generate` and rotate to that; nothing was changed"
        )
    if plan.target is None and not plan.generate:
        say(
            f"every blob is already sealed under the active key {keys.keyring.active.fingerprint}; "
            "nothing to re-encrypt. To rotate environment-configured keys: bindify keys generate, "
            'add the key with "active": false on every instance and restart them, then make it '
            "active (drop the marker) on every instance, restart, and run bindify keys rotate"
        )
        return 0
    if plan.target is not None and not plan.activate:
        # Finishing a rotation, or the operator activated the key in BINDIFY_MASTER_KEYS.
        lacking = instances_lacking(store, plan.target, clock.now())
        if lacking:
            raise KeyringError(
                f"live instance(s) {_names(lacking)} do not hold key {plan.target}; add it to "
                "their master keys (restart instances configured by BINDIFY_MASTER_KEYS), then "
                "run keys rotate again"
            )
    if not yes:
        _confirm(f"This will {_describe(plan)} and re-encrypt {plan.pending} blob(s). Continue?")
    _make_target_active(keys, store, plan, say=say, clock=clock, wait=instance_wait)

    progress = _Progress(stream)
    reencryptor = Reencryptor(
        store,
        keys.keyring,
        clock,
        progress=progress,
        fault=fault,
        settle=(lambda: time.sleep(settle_seconds)) if settle_seconds > 0 else None,
    )
    try:
        result = reencryptor.run()
    finally:
        progress.close()
    code = _summarise(result, store.call(key_usage, keys.keyring), say)
    audit.record_sync(
        store,
        keys.keyring,
        clock,
        audit.CLI,
        "key.rotate",
        audit.Target("master_key", keys.keyring.active.fingerprint),
    )
    return code


def _describe(plan: RotationPlan) -> str:
    if plan.generate:
        return "generate a new master key, make it active"
    if plan.activate:
        return f"make key {plan.target} active"
    return f"finish rotating to key {plan.target}"


def _make_target_active(
    keys: KeySource, store: Store, plan: RotationPlan, *, say: Printer, clock: Clock, wait: float
) -> str:
    """Generate and add the new key if planned, then activate it once every instance holds it."""
    target = plan.target
    if plan.generate:
        new = MasterKey(generate_master_key(), active_allowed=False)
        keys.save(keys.keyring.added(new))
        target = new.fingerprint
        say(f"generated master key {target} and added it to {keys.description} (not active yet)")
    if target is None:
        raise KeyringError("no key to rotate to")  # unreachable: plan_rotation guarantees one
    if plan.activate:
        lacking = wait_for_instances(
            store,
            target,
            clock,
            timeout=wait,
            sleep=time.sleep,
            on_wait=lambda pending: say(
                f"waiting up to {wait:.0f} s for {_names(pending)} to load key {target}"
            ),
        )
        if lacking:
            raise KeyringError(
                f"live instance(s) {_names(lacking)} do not hold key {target}; it is in "
                f"{keys.description} marked inactive: make them re-read it (SIGHUP) or add it, "
                "then run keys rotate again"
            )
        keys.save(keys.keyring.activated(target))
        say(f"key {target} is now the active key")
    if keys.keyring.active.fingerprint != target:
        raise KeyringError(f"key {target} is not the active key; nothing was re-encrypted")
    return target


def _summarise(result: RotationResult, usage: UsageReport, say: Printer) -> int:
    r = result.rewritten
    say(
        f"rotated to key {result.target}: {result.total_rewritten} blob(s) re-encrypted "
        f"({r['connection']} connections, {r['service_secret']} service secrets, "
        f"{r['dcr_registration']} DCR registrations), {result.already_current} already current, "
        f"{len(result.failures)} failure(s); {result.seconds:.2f} s, "
        f"{result.rows_per_second:.0f} blobs/s"
    )
    for failure in result.failures[:_SHOWN_FAILURES]:
        say(f"  failed: {failure.kind} {failure.id}: {failure.reason}")
    if len(result.failures) > _SHOWN_FAILURES:
        say(f"  … and {len(result.failures) - _SHOWN_FAILURES} more")
    unused = [e.fingerprint for e in usage.keys if not e.active and e.total == 0]
    if unused and not result.failures and result.remaining == 0:
        say(
            "no blob uses key(s) " + ", ".join(unused) + " any more; remove each with "
            "`bindify keys remove FINGERPRINT` once no backup taken before now needs it"
        )
    if result.failures:
        raise KeyringError(
            f"rotation incomplete: {len(result.failures)} blob(s) could not be re-encrypted "
            "(listed above); fix or delete them, then run keys rotate again"
        )
    if result.remaining:
        raise KeyringError(
            f"rotation incomplete: {result.remaining} blob(s) were sealed under an older key "
            "while it ran (an instance that had not re-read its keys yet); run keys rotate again"
        )
    return 0


# ----------------------------------------------------------------------------- remove


def _retire_audit_key(settings: Settings, keyring: Keyring, fp: str, say: Printer) -> None:
    """Re-key the audit chain off `fp` (verified first) and record the removal (DESIGN §12)."""
    clock = SystemClock()
    store = open_migrated_store(settings)
    try:
        checked = store.call(verify_chain, keyring, [])
        if checked.problem is not None:
            raise KeyringError(
                f"the audit trail does not verify ({checked.problem}); key {fp} is kept so "
                "the evidence stays checkable"
            )
        rekeyed = store.call(rekey, keyring, fp, iso(clock.now()))
        audit.record_sync(
            store, keyring, clock, audit.CLI, "key.remove", audit.Target("master_key", fp)
        )
    finally:
        store.close()
    if rekeyed:
        say(f"audit trail: {rekeyed} entries re-keyed off key {fp}")


def remove(settings: Settings, fingerprint_arg: str, *, say: Printer) -> int:
    fp = fingerprint_arg.strip().lower()
    if not _FINGERPRINT.fullmatch(fp):
        raise KeyringError(
            "a fingerprint is 16 hexadecimal characters, as shown by bindify keys list"
        )
    with _keys_for_change(settings, say) as keys:
        keyring = keys.keyring
        if fp not in keyring:
            raise KeyringError(f"no configured key has fingerprint {fp} (see bindify keys list)")
        if len(keyring) == 1:
            raise KeyringError(f"key {fp} is the last master key; it cannot be removed")
        if keyring.active.fingerprint == fp:
            raise KeyringError(
                f"key {fp} is the active key; run bindify keys rotate to move to another key first"
            )
        store = open_migrated_store(settings)
        try:
            entry = store.call(key_usage, keyring).of(fp)
        finally:
            store.close()
        if entry.total:
            c = entry.counts
            raise KeyringError(
                f"key {fp} still protects {entry.total} blob(s) ({c['connection']} connections, "
                f"{c['service_secret']} service secrets, {c['dcr_registration']} DCR "
                "registrations); run bindify keys rotate first"
            )
        if keys.from_env:
            raise KeyringError(
                f"the master keys come from BINDIFY_MASTER_KEYS: no blob uses key {fp}, so remove "
                "its entry from BINDIFY_MASTER_KEYS on every instance and restart them"
            )
        _retire_audit_key(settings, keyring, fp, say)
        keys.save(keyring.without(fp))
    say(f"removed key {fp} from {keys.description}")
    return 0
