"""`bindify keys rotate`: see `keymgmt.rotation` for the plan, `commands.keys` for the rules.

Key file: generates and adds a key when there is no new one, waits for live instances to load
it, marks it active, re-encrypts. Environment keys: the operator has made the new key active on
every instance already. A refusal changes nothing and is one `BindifyError` line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from bindify_appliance import audit
from bindify_appliance.clock import Clock
from bindify_appliance.commands.database import open_migrated_store
from bindify_appliance.commands.key_files import Printer, keys_for_change, warn_orphans
from bindify_appliance.config import Settings
from bindify_appliance.crypto.keyring import (
    WEAK_KEY_RULE,
    MasterKey,
    generate_master_key,
    is_strong_key,
)
from bindify_appliance.datadir import KeySource
from bindify_appliance.errors import ConfigError, KeyringError
from bindify_appliance.keymgmt.rotation import (
    FaultHook,
    Reencryptor,
    RotationPlan,
    RotationResult,
    describe_instance,
    instances_lacking,
    plan_rotation,
    wait_for_instances,
)
from bindify_appliance.keymgmt.usage import UsageReport, key_usage
from bindify_appliance.store import Store
from bindify_appliance.store.instances import InstanceRecord

__all__ = ["rotate"]

_SHOWN_FAILURES = 10


def _names(records: list[InstanceRecord]) -> str:
    return ", ".join(describe_instance(r) for r in records)


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
    with keys_for_change(settings, say) as keys:
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
    warn_orphans(usage, say)
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
