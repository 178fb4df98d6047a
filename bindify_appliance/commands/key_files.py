"""What the `bindify keys` commands share: loading the keys, the key-file lock, the orphan
warning.

Invariant: commands that rewrite `master-keys.json` hold an exclusive `flock` on the data
directory for their whole run and re-read the file under it (`keys_for_change`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from bindify_appliance.config import Settings
from bindify_appliance.datadir import KeySource, ensure_data_dir
from bindify_appliance.errors import KeyringError
from bindify_appliance.keymgmt.usage import UsageReport

__all__ = ["Printer", "key_file_lock", "keys_for_change", "load_keys", "warn_orphans"]

Printer = Callable[[str], None]


def warn_orphans(report: UsageReport, say: Printer) -> None:
    for entry in report.orphans:
        say(
            f"warning: {entry.total} blob(s) are sealed under fingerprint "
            f"{entry.fingerprint or '(none)'}, which no configured key matches; they cannot be "
            "decrypted until that key is added back"
        )


@contextlib.contextmanager
def key_file_lock(data_dir: Path) -> Iterator[None]:
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


def load_keys(settings: Settings, say: Printer) -> KeySource:
    keys = KeySource(settings)
    if keys.from_env and keys.path.exists():
        say(f"note: BINDIFY_MASTER_KEYS is set, so {keys.path} is ignored")
    return keys


@contextlib.contextmanager
def keys_for_change(settings: Settings, say: Printer) -> Iterator[KeySource]:
    """The key source, loaded under the key-file lock when the keys come from the file."""
    ensure_data_dir(settings)
    if settings.master_keys:
        yield load_keys(settings, say)
        return
    with key_file_lock(settings.data_path):
        yield load_keys(settings, say)
