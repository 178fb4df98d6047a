"""The data directory: its layout, permissions, generated secrets and the serve lock (DESIGN §4).

Layout: `bindify.db` (+ `-wal`, `-shm`), `master-keys.json` (0600), `secret-key` (0600),
`config.toml` (optional), `backups/` (0700, files 0600), `bindify.lock` (held by `serve`).

Invariants:
- The directory is 0700 and every secret file 0600, whoever's umask is in force. Every command
  passes `ensure_data_dir`, which tightens an open directory (with a warning) and refuses to go
  on while `master-keys.json`, `secret-key` or `config.toml` is open to group or others.
- Generated files are written atomically (temp file, fsync, rename), so a crash never leaves a
  half-written key.
- When `BINDIFY_MASTER_KEYS` is set, `master-keys.json` is ignored (with a warning by the caller).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from bindify_appliance.config import Settings
from bindify_appliance.crypto.keyring import (
    WEAK_KEY_RULE,
    Keyring,
    MasterKey,
    dump_keyring_json,
    generate_master_key,
    is_strong_key,
    parse_keyring_json,
)
from bindify_appliance.errors import DataDirError, KeyringError

__all__ = [
    "PRIVATE_FILES",
    "DataDirLock",
    "KeySource",
    "check_private_files",
    "data_dir_line",
    "ensure_data_dir",
    "is_locked",
    "load_secret_key",
    "write_private_file",
]

log = logging.getLogger(__name__)

MASTER_KEYS_FILE = "master-keys.json"
SECRET_KEY_FILE = "secret-key"  # noqa: S105 - a file name
CONFIG_FILE = "config.toml"
LOCK_FILE = "bindify.lock"
#: Files that hold secrets (or may: config.toml can carry secret options) and must be 0600.
PRIVATE_FILES = (MASTER_KEYS_FILE, SECRET_KEY_FILE, CONFIG_FILE)
BACKUPS_DIR = "backups"


def ensure_data_dir(settings: Settings) -> Path:
    """Create the data directory (0700) and its `backups/` folder; return its path.

    A directory open to group or others is tightened to 0700 with a warning; a key or config
    file open to them stops everything (`check_private_files`).

    Raises:
        DataDirError: the directory cannot be made private, or a private file is not.
    """
    path = settings.data_path
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = stat.S_IMODE(path.stat().st_mode)
        os.chmod(path, 0o700)
        (path / BACKUPS_DIR).mkdir(mode=0o700, exist_ok=True)
        os.chmod(path / BACKUPS_DIR, 0o700)
    except OSError as exc:
        raise DataDirError(f"data directory {path}: {exc.strerror}") from None
    if found & 0o077:
        log.warning(
            f"data directory was mode {found:04o}, open to group or others; tightened to 0700",
            extra={"event": "data_dir_permissions", "file": str(path)},
        )
    check_private_files(path)
    return path


def data_dir_line(settings: Settings, *, created: bool) -> str:
    """The one line every command prints about its data directory (DESIGN §15).

    An absolute path, so that a command run from another folder shows at once that it works on
    another directory; a new one says so, with how to reach the usual one when the path was
    relative (the default `./bindify-data` is).
    """
    where = settings.data_path.absolute()
    if not created:
        return f"data directory {where}"
    line = f"created a new data directory {where}"
    if not settings.data_path.is_absolute():
        line += (
            f" ({settings.data_dir} is relative to the current folder: run bindify from the "
            "folder `serve` runs in, or set --data-dir or BINDIFY_DATA_DIR)"
        )
    return line


def check_private_files(data_dir: Path) -> None:
    """Refuse key and config files that the group or others may read or write.

    Refused rather than tightened: the file may have been read already (a restore under another
    umask, a copy through a shared folder), so the operator must know, and perhaps rotate the
    keys (`bindify keys rotate`); chmod-ing quietly would hide that. The directory itself is
    tightened instead (`ensure_data_dir`): it holds only private files, so opening it exposed
    names, not contents. The message names the file and the command that fixes it.
    """
    for name in PRIVATE_FILES:
        path = data_dir / name
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DataDirError(f"{path}: {exc.strerror}") from None
        if mode & 0o077:
            raise DataDirError(
                f"{path} is open to group or others (mode {mode:04o}); a key or config file "
                f"must be private to the appliance's user: run chmod 600 {path}"
            )


def write_private_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def load_secret_key(settings: Settings) -> bytes:
    """The cookie/CSRF signing key: the configured one, else `secret-key`, generated once."""
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = settings.data_path / SECRET_KEY_FILE
    if not path.exists():
        write_private_file(path, secrets.token_hex(32) + "\n")
        log.info("generated a new secret key", extra={"event": "secret_key_generated"})
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DataDirError(f"{SECRET_KEY_FILE}: {exc.strerror}") from None
    if not is_strong_key(text):
        raise DataDirError(f"{SECRET_KEY_FILE}: {WEAK_KEY_RULE}; delete it to generate a new one")
    return text.encode("utf-8")


class KeySource:
    """Where the master keys come from, and re-reading them when the key file changes.

    Environment-configured keys never change while running (restart to change them); the key file
    is re-read by `reload_if_changed()` (polled) and `reload()` (SIGHUP).
    """

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        """Load the keys; with `create`, generate `master-keys.json` first when it is missing.

        Raises:
            KeyringError: the keys are malformed, or missing and `create` is False.
        """
        self._settings = settings
        self.path = settings.data_path / MASTER_KEYS_FILE
        self.from_env = bool(settings.master_keys)
        self._stamp: tuple[int, int] | None = None
        self.generated = create and self._generate_if_missing()
        self.keyring = self._load()

    @property
    def description(self) -> str:
        return "BINDIFY_MASTER_KEYS" if self.from_env else str(self.path)

    def _generate_if_missing(self) -> bool:
        if self.from_env or self.path.exists():
            return False
        key = MasterKey(key=generate_master_key(), active_allowed=True)
        write_private_file(self.path, dump_keyring_json(Keyring([key])) + "\n")
        return True

    def _load(self) -> Keyring:
        if self.from_env:
            return parse_keyring_json(self._settings.master_keys, "BINDIFY_MASTER_KEYS")
        if not self.path.exists():
            raise KeyringError(
                f"no master keys: {self.path} does not exist (bindify serve creates it on first "
                "start)"
            )
        try:
            stat = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(f"{MASTER_KEYS_FILE}: {exc.strerror}") from None
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return parse_keyring_json(text, MASTER_KEYS_FILE)

    def reload(self) -> bool:
        """Re-read the key file; True if the fingerprints changed. A bad file keeps the old keys."""
        if self.from_env:
            return False
        before = self.keyring.fingerprints
        self.keyring = self._load()
        return self.keyring.fingerprints != before

    def reload_if_changed(self) -> bool:
        if self.from_env:
            return False
        try:
            stat = self.path.stat()
        except OSError:
            return False
        if (stat.st_mtime_ns, stat.st_size) == self._stamp:
            return False
        return self.reload()

    def save(self, keyring: Keyring) -> None:
        """Write a new key list to the key file (CLI key management only)."""
        if self.from_env:
            raise KeyringError(
                "master keys come from BINDIFY_MASTER_KEYS; change the variable on every instance"
            )
        write_private_file(self.path, dump_keyring_json(keyring) + "\n")
        self.keyring = self._load()


@dataclass
class DataDirLock:
    """An exclusive `flock` on `bindify.lock`, held by `serve` for its lifetime."""

    path: Path
    _fd: int | None = None

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirError(
                f"another bindify serve is already using {data_dir} (bindify.lock is held)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path=path, _fd=fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_locked(data_dir: Path) -> bool:
    """True while a `serve` process holds the data directory's lock."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
