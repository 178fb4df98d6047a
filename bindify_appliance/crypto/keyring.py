"""Master keys for managed connections: fingerprints, the keyring, its JSON form, managed sealing.

The JSON form is `[{"key": "<text>", "active": false?}, ...]` — the value of `BINDIFY_MASTER_KEYS`
and the content of `master-keys.json` (DESIGN §4). A key is a non-empty string used as text
(generated: 64 hex chars from 32 random bytes); its fingerprint is the lowercase hex of the first
8 bytes of SHA-256 of its UTF-8 bytes (reference/hosted-bindify.md §3.3).

Strength (security review; `is_strong_key`): a NEW key must decode (hex, else base64/base64url)
to at least 32 bytes that look random (at least 16 distinct byte values: 32 random bytes hold
about 30, a pattern or a repeated character far fewer). Parsing stays permissive so that a
weaker key from an earlier version still opens what it sealed; `check_key_strength` is the
start-up policy: a weak active key that protects nothing yet is refused, a weak key that
protects data (or an inactive one) is only warned about, naming `bindify keys rotate`.

Invariants:
- The active key is the LAST entry not marked `"active": false`; a keyring always has one.
  Marking a freshly added key inactive lets every instance learn it before anything is sealed
  under it (DESIGN §7 rotation step 1).
- Fingerprints are unique within a keyring.
- Opening is strict: a blob is opened only with the key whose fingerprint was stored beside it.
  (The hosted worker fell back to the active key for an unknown fingerprint; that only turned a
  clear "key missing" into a confusing decrypt failure.)
- No message or repr ever contains a key. Messages name the source, the entry index and, where
  useful, the fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from bindify_appliance.crypto.sealing import managed_key, open_sealed, seal
from bindify_appliance.errors import KeyringError

__all__ = [
    "MIN_KEY_BYTES",
    "WEAK_KEY_RULE",
    "Keyring",
    "MasterKey",
    "check_key_strength",
    "dump_keyring_json",
    "fingerprint",
    "generate_master_key",
    "is_strong_key",
    "key_bytes",
    "open_managed",
    "parse_keyring_json",
    "seal_managed",
]

_ALLOWED_FIELDS = frozenset({"key", "active"})
# Unknown field names are echoed only when they look like identifiers, so a key pasted as a
# field name (`[{"3f9a…": true}]`) never reaches a message.
_SAFE_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


MIN_KEY_BYTES: Final = 32
_MIN_DISTINCT_BYTES: Final = 16
WEAK_KEY_RULE: Final = (
    "does not decode to at least 32 random bytes (64 hex or 43 base64 characters)"
)
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def key_bytes(text: str) -> bytes | None:
    """The bytes a key's text encodes: hex, else base64 or base64url (padding optional)."""
    if _HEX.fullmatch(text):
        return bytes.fromhex(text)
    if not _BASE64.fullmatch(text):
        return None
    body = text.rstrip("=").replace("+", "-").replace("/", "_")
    if len(body) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None


def is_strong_key(text: str) -> bool:
    """Whether `text` decodes to at least 32 bytes that look random (see the module doc)."""
    raw = key_bytes(text)
    return raw is not None and len(raw) >= MIN_KEY_BYTES and len(set(raw)) >= _MIN_DISTINCT_BYTES


def check_key_strength(keyring: Keyring, protected: Mapping[str, int], source: str) -> list[str]:
    """The start-up policy for weak keys; `protected` maps fingerprints to their blob counts.

    Returns one warning per weak key that is tolerated (it protects data, or is not active).

    Raises:
        KeyringError: the active key is weak and protects nothing yet: a new key, refused.
    """
    warnings: list[str] = []
    for entry in keyring:
        if is_strong_key(entry.key):
            continue
        fp, count = entry.fingerprint, protected.get(entry.fingerprint, 0)
        if entry is keyring.active and count == 0:
            raise KeyringError(
                f"{source}: the active master key (fingerprint {fp}) {WEAK_KEY_RULE}; replace "
                "it with one from `bindify keys generate` (it protects nothing yet)"
            )
        if count:
            warnings.append(
                f"master key {fp} is weak: it {WEAK_KEY_RULE}; it still opens the {count} "
                "blob(s) it protects. Run `bindify keys rotate` to re-encrypt them under a new "
                f"key, then `bindify keys remove {fp}`"
            )
        else:
            warnings.append(
                f"master key {fp} is weak: it {WEAK_KEY_RULE} and protects nothing; remove it "
                f"with `bindify keys remove {fp}` (`bindify keys rotate` moves data off a key)"
            )
    return warnings


def fingerprint(master_key: str) -> str:
    """16 lowercase hex chars: the first 8 bytes of SHA-256 over the key's UTF-8 bytes."""
    return hashlib.sha256(master_key.encode("utf-8")).digest()[:8].hex()


def generate_master_key() -> str:
    """A new master key: 64 hex characters from 32 CSPRNG bytes."""
    return secrets.token_hex(32)


@dataclass(frozen=True, eq=False, repr=False)
class MasterKey:
    """One master key; `active_allowed` is False when the entry is marked `"active": false`."""

    key: str
    active_allowed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise KeyringError("a master key must be a non-empty string")
        try:
            self.key.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" in JSON
            raise KeyringError("a master key must be valid Unicode text") from None

    @cached_property
    def fingerprint(self) -> str:
        # Cached: the keyring indexes by fingerprint and rotation compares them repeatedly.
        return fingerprint(self.key)

    def __repr__(self) -> str:
        return f"MasterKey(fingerprint={self.fingerprint!r}, active_allowed={self.active_allowed})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        same_key = hmac.compare_digest(self.key.encode("utf-8"), other.key.encode("utf-8"))
        return same_key and self.active_allowed == other.active_allowed

    def __hash__(self) -> int:
        return hash((self.fingerprint, self.active_allowed))


class Keyring:
    """An ordered, validated list of master keys with one active key."""

    def __init__(self, keys: Iterable[MasterKey], *, source: str = "master keys") -> None:
        entries = tuple(keys)
        if not entries:
            raise KeyringError(f"{source}: must contain at least one key")
        first_index: dict[str, int] = {}
        for index, entry in enumerate(entries):
            fp = entry.fingerprint
            if fp in first_index:
                raise KeyringError(
                    f"{source}: entry {index} repeats the key of entry {first_index[fp]} "
                    f"(fingerprint {fp})"
                )
            first_index[fp] = index
        candidates = [entry for entry in entries if entry.active_allowed]
        if not candidates:
            raise KeyringError(
                f'{source}: every key is marked "active": false; at least one must be usable '
                "as the active key"
            )
        self._keys = entries
        self._by_fp = {fp: entries[index] for fp, index in first_index.items()}
        self._active = candidates[-1]

    @property
    def active(self) -> MasterKey:
        """The key new blobs are sealed under: the last entry not marked inactive."""
        return self._active

    @property
    def keys(self) -> tuple[MasterKey, ...]:
        return self._keys

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """Fingerprints in file order."""
        return tuple(entry.fingerprint for entry in self._keys)

    def get(self, fingerprint: str) -> MasterKey:
        """The key with this fingerprint; `KeyringError` naming the fingerprint if absent."""
        found = self._by_fp.get(fingerprint)
        if found is None:
            fp = str(fingerprint)
            shown = fp if len(fp) <= 64 else fp[:64] + "…"
            raise KeyringError(f"no master key with fingerprint {shown!r} in the keyring")
        return found

    def __contains__(self, fp: object) -> bool:
        return fp in self._by_fp

    def __iter__(self) -> Iterator[MasterKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        fps, active = list(self.fingerprints), self.active.fingerprint
        return f"Keyring(fingerprints={fps!r}, active={active!r})"

    # Pure edits for the `keys` commands; each returns a new, validated keyring.

    def added(self, key: MasterKey) -> Keyring:
        """This keyring with `key` appended (typically marked inactive until rotation)."""
        return Keyring((*self._keys, key))

    def activated(self, fp: str) -> Keyring:
        """This keyring with key `fp` moved last and usable, so it becomes the active key."""
        target = self.get(fp)
        rest = tuple(entry for entry in self._keys if entry.fingerprint != fp)
        return Keyring((*rest, MasterKey(target.key, active_allowed=True)))

    def without(self, fp: str) -> Keyring:
        """This keyring minus key `fp`; refused when it would leave no usable key."""
        self.get(fp)
        return Keyring(entry for entry in self._keys if entry.fingerprint != fp)


def _reject_duplicate_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise _DuplicateField(name)
        seen[name] = value
    return seen


class _DuplicateField(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _describe_fields(names: Iterable[str]) -> str:
    safe = sorted(name for name in names if _SAFE_FIELD_NAME.fullmatch(name))
    return ", ".join(repr(name) for name in safe) if safe else "(name not shown)"


def parse_keyring_json(text: str, source: str) -> Keyring:
    """Parse `[{"key": "...", "active": false?}, ...]`; `KeyringError` naming `source`."""
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_fields)
    except _DuplicateField as dup:
        where = repr(dup.name) if _SAFE_FIELD_NAME.fullmatch(dup.name) else "a field"
        raise KeyringError(f"{source}: {where} appears twice in one entry") from None
    except json.JSONDecodeError as exc:
        # Position only; exc.msg describes the syntax, exc.doc (the keys) is never shown.
        raise KeyringError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, list):
        raise KeyringError(f'{source}: must be a JSON array like [{{"key": "…"}}]')
    if not data:
        raise KeyringError(f"{source}: must contain at least one key")
    keys: list[MasterKey] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise KeyringError(f'{source}: entry {index} must be an object like {{"key": "…"}}')
        unknown = set(entry) - _ALLOWED_FIELDS
        if unknown:
            raise KeyringError(
                f"{source}: entry {index} has unknown field(s) {_describe_fields(unknown)}; "
                'allowed: "key", "active"'
            )
        key = entry.get("key")
        if not isinstance(key, str) or not key:
            raise KeyringError(f'{source}: entry {index}: "key" must be a non-empty string')
        if key != key.strip():
            raise KeyringError(
                f'{source}: entry {index}: "key" must not start or end with whitespace'
            )
        active = entry.get("active", True)
        if not isinstance(active, bool):
            raise KeyringError(f'{source}: entry {index}: "active" must be true or false')
        try:
            keys.append(MasterKey(key, active_allowed=active))
        except KeyringError as exc:
            raise KeyringError(f"{source}: entry {index}: {exc}") from None
    return Keyring(keys, source=source)


def dump_keyring_json(keyring: Keyring) -> str:
    """The JSON form of `keyring` (for master-keys.json); `active` written only when false."""
    entries: list[dict[str, object]] = []
    for entry in keyring:
        item: dict[str, object] = {"key": entry.key}
        if not entry.active_allowed:
            item["active"] = False
        entries.append(item)
    return json.dumps(entries, indent=2, ensure_ascii=False) + "\n"


def seal_managed(
    keyring: Keyring, connection_id: str, plaintext: bytes, *, field: str
) -> tuple[str, str]:
    """Seal under the active key's per-connection key; returns (blob, fingerprint to store)."""
    active = keyring.active
    blob = seal(managed_key(active.key, connection_id), plaintext, row=connection_id, field=field)
    return blob, active.fingerprint


def open_managed(
    keyring: Keyring, fingerprint: str, connection_id: str, blob: str, *, field: str
) -> bytes:
    """Open a managed blob with the key named by its stored fingerprint (strict).

    `KeyringError` when the fingerprint is unknown, `DecryptError` when the blob does not open.
    """
    key = keyring.get(fingerprint)
    return open_sealed(managed_key(key.key, connection_id), blob, row=connection_id, field=field)
