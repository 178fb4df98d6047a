"""The `bindify keys` commands: generate, list, rotate, remove (DESIGN §3, §7).

- `generate`: a new master key alone on stdout; its fingerprint and next steps on stderr.
- `list [--json]`: each configured key (active or not), how many blobs it protects, and orphan
  fingerprints (stored beside blobs, matching no configured key), highlighted.
- `rotate [--yes]` (`commands.keys_rotate`): see `keymgmt.rotation` for the plan. Key file:
  generates and adds a key when there is no new one, waits for live instances to load it,
  marks it active, re-encrypts. Environment keys: the operator has made the new key active on
  every instance already.
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
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from bindify_appliance import audit
from bindify_appliance.audit.chain import rekey
from bindify_appliance.audit.verify import verify_chain
from bindify_appliance.clock import Clock, SystemClock, iso
from bindify_appliance.commands.database import open_migrated_store
from bindify_appliance.commands.key_files import Printer, keys_for_change, load_keys, warn_orphans
from bindify_appliance.commands.keys_rotate import rotate
from bindify_appliance.config import Settings
from bindify_appliance.crypto.keyring import Keyring, fingerprint, generate_master_key
from bindify_appliance.errors import ConfigError, KeyringError
from bindify_appliance.keymgmt.rotation import LIVE_MAX_AGE, FaultHook, describe_instance
from bindify_appliance.keymgmt.usage import KeyUsage, UsageReport, key_usage
from bindify_appliance.store.instances import live_instances

__all__ = ["FAULT_ENV", "parse_fault", "run"]


FAULT_ENV = "BINDIFY_TEST_FAULT"
FAULT_POINTS = ("before_swap", "after_swap", "after_batch")
# How long `rotate` waits for instances to re-read a key file it just changed.
INSTANCE_WAIT_SECONDS = 30.0
# Pause before another pass, giving instances time to re-read the keys they seal with.
SETTLE_SECONDS = 2.0
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")


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
    keys = load_keys(settings, say)
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
    warn_orphans(report, say)
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
    with keys_for_change(settings, say) as keys:
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
