"""Connection credentials: the two 32-byte secrets behind a secret URL or a `bnd_` API key.

A connection's credentials are secret1 ‖ secret2 (32 random bytes each), written as 86 base64url
characters without padding (reference/hosted-bindify.md §3.1). They reach the appliance in two
forms (§2.1): the last path segment of `/mcp/{service}/{credentials}`, or an API key
`bnd_{live|stg|test}_{credentials}` in `Authorization`, with or without the `Bearer ` scheme.

What is stored (closing quirk Q3 of the hosted worker, DESIGN §6 "the database alone never grants
access"):
- `secret1_lookup_hash` — a domain-separated SHA-256 of secret1, the database lookup key. A copied
  database yields hashes, never a working URL.
- `secret2_verifier` — a domain-separated SHA-256 of secret2, kept for managed connections so the
  full credentials are required there too. Zero-knowledge connections need no verifier: the GCM tag
  of their blob already authenticates secret2 (see `sealing.zero_knowledge_key`). The verifier is a
  one-way hash under its own prefix, so it reveals neither secret2 nor the zero-knowledge key.

Invariants:
- Parsing is strict: exactly 86 ASCII characters of the base64url alphabet in canonical form, so a
  credential has exactly one spelling (the hosted worker tolerated non-zero spare bits; we do not).
- Every malformed kind has one `CredentialFormatError` message; no message contains the input.
- Work on secret material has no data-dependent early exit: the alphabet check scans the whole
  string (`bytes.translate`), canonical form and equality use `hmac.compare_digest`. Only the
  characters already known to be invalid are inspected to choose an error message.
- `repr()` of `Credentials` never shows the secrets.

API-key scheme handling, decided here: an optional leading `Bearer` (any case) followed by one or
more spaces or tabs (RFC 9110 allows only SP, but the hosted worker accepted any whitespace run and
existing client configurations may carry a doubled space). Nothing else is trimmed: the HTTP layer
already strips the header value's outer whitespace, and a raw key with stray whitespace is refused.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from bindify_appliance.errors import CredentialFormatError

__all__ = [
    "API_KEY_ENVS",
    "CREDENTIALS_LENGTH",
    "PERSONAL_TOKEN_PREFIX",
    "SECRET_B64_LENGTH",
    "SECRET_BYTES",
    "Credentials",
    "b64url_decode_canonical",
    "b64url_encode",
    "b64url_invalid_chars",
    "format_api_key",
    "generate_credentials",
    "parse_api_key",
    "parse_credentials",
    "secret1_lookup_hash",
    "secret2_verifier",
    "secret_url",
    "verify_secret2",
]

SECRET_BYTES = 32
SECRET_B64_LENGTH = 43  # ceil(32 * 8 / 6)
CREDENTIALS_LENGTH = 86  # ceil(64 * 8 / 6)
API_KEY_PREFIX = "bnd_"
API_KEY_ENVS: tuple[str, ...] = ("live", "stg", "test")
PERSONAL_TOKEN_PREFIX = "bndpat_"  # noqa: S105 - a prefix, not a secret

# In base64 value order (A=0 … _=63): _SIXBIT below depends on it.
_B64URL_ALPHABET = (string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_").encode()
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_SIXBIT = {char: value for value, char in enumerate(_B64URL_ALPHABET)}
# A final group of 2 characters carries 12 bits for 8 (4 spare), of 3 carries 18 for 16 (2 spare).
_SPARE_BITS = {2: 0b1111, 3: 0b11}
_WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")

# Domain-separation prefixes: each stored hash has its own, and neither can collide with the
# HKDF inputs of sealing.py (those take the base64 *text* of secret2, these the raw bytes).
_LOOKUP_PREFIX = b"bindify-appliance/secret1-lookup/v1\x00"
_VERIFIER_PREFIX = b"bindify-appliance/secret2-verifier/v1\x00"

# `Bearer` + 1..n SP/HTAB, matched only at the start: a well-formed key is never scanned by a
# regex past its scheme.
_BEARER = re.compile(r"bearer[ \t]+", re.IGNORECASE)
_BEARER_ALONE = re.compile(r"bearer[ \t]*", re.IGNORECASE)
# Any other `scheme<space>` prefix (RFC 9110 token characters), to name the problem clearly.
_OTHER_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^`|~-]*[ \t]")


@dataclass(frozen=True, eq=False, repr=False)
class Credentials:
    """secret1 (lookup) and secret2 (unlocks the blob / verified), 32 bytes each."""

    secret1: bytes
    secret2: bytes

    def __post_init__(self) -> None:
        for name, value in (("secret1", self.secret1), ("secret2", self.secret2)):
            if not isinstance(value, bytes) or len(value) != SECRET_BYTES:
                raise ValueError(f"{name} must be {SECRET_BYTES} bytes")

    def __repr__(self) -> str:
        return "Credentials(secret1=<hidden>, secret2=<hidden>)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return hmac.compare_digest(self.secret1 + self.secret2, other.secret1 + other.secret2)

    def __hash__(self) -> int:
        # Python's str/bytes hash is keyed per process (SipHash), so this leaks nothing useful.
        return hash((self.secret1, self.secret2))

    @property
    def secret1_b64(self) -> str:
        """43-char base64url of secret1 (the segment the hosted worker stored)."""
        return b64url_encode(self.secret1)

    @property
    def secret2_b64(self) -> str:
        """43-char base64url of secret2: the input of the zero-knowledge key derivation."""
        return b64url_encode(self.secret2)

    @property
    def text(self) -> str:
        """The 86-char credentials string: base64url(secret1 ‖ secret2), no padding."""
        return b64url_encode(self.secret1 + self.secret2)


def _encode(raw: bytes) -> bytes:
    # binascii directly: the base64 module's wrappers cost more than the encoding itself.
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_TO_URLSAFE)


def b64url_encode(raw: bytes) -> str:
    """base64url without padding (the only spelling the appliance writes)."""
    return _encode(raw).decode("ascii")


def b64url_invalid_chars(raw: bytes) -> bytes:
    """The bytes of `raw` outside the base64url alphabet; scans all of `raw`, no early exit."""
    return raw.translate(None, _B64URL_ALPHABET)


def b64url_decode_canonical(raw: bytes) -> bytes | None:
    """Decode unpadded base64url whose alphabet was already checked; None unless canonical.

    Canonical means a possible length and zero spare bits in the last character, so every byte
    string has exactly one spelling. Only those spare bits are inspected (they carry no data), so
    no branch depends on secret bits.
    """
    remainder = len(raw) % 4
    if remainder == 1:
        return None
    if remainder and _SIXBIT[raw[-1]] & _SPARE_BITS[remainder]:
        return None
    return binascii.a2b_base64(
        raw.translate(_TO_STANDARD) + b"=" * (4 - remainder if remainder else 0)
    )


def generate_credentials() -> Credentials:
    """Fresh credentials from the CSPRNG."""
    return Credentials(secrets.token_bytes(SECRET_BYTES), secrets.token_bytes(SECRET_BYTES))


def _decode_credentials(text: object, what: str) -> Credentials:
    """Strict decode of the 86-char form; `what` names the thing in error messages."""
    if not isinstance(text, str):
        raise CredentialFormatError(f"{what} must be text")
    if not text:
        raise CredentialFormatError(f"{what} are empty")
    if not text.isascii():  # O(1) in CPython: a flag on the string object
        raise CredentialFormatError(
            f"{what} contain non-ASCII characters (look-alike or full-width characters?)"
        )
    raw = text.encode("ascii")
    # Whole-string scan with no early exit; what is left are the invalid characters only.
    invalid = b64url_invalid_chars(raw)
    if invalid:
        if _WHITESPACE.intersection(invalid):
            raise CredentialFormatError(f"{what} contain whitespace")
        if b"=" in invalid:
            raise CredentialFormatError(f"{what} must not carry base64 padding ('=')")
        if b"/" in invalid:
            raise CredentialFormatError(
                f"{what} contain '/': expected a single path segment of base64url"
            )
        if b"+" in invalid:
            raise CredentialFormatError(
                f"{what} contain '+': expected base64url ('-' and '_'), not standard base64"
            )
        raise CredentialFormatError(f"{what} contain characters outside the base64url alphabet")
    if len(raw) != CREDENTIALS_LENGTH:
        raise CredentialFormatError(
            f"{what} must be exactly {CREDENTIALS_LENGTH} characters, got {len(raw)}"
        )
    # 86 chars carry 516 bits for 512: the last character's 4 spare bits must be zero.
    decoded = b64url_decode_canonical(raw)
    if decoded is None:
        raise CredentialFormatError(
            f"{what} are not canonical base64url (the last character has non-zero unused bits)"
        )
    return Credentials(decoded[:SECRET_BYTES], decoded[SECRET_BYTES:])


def parse_credentials(text: str) -> Credentials:
    """Parse the 86-char credentials (secret-URL segment); `CredentialFormatError` if malformed."""
    return _decode_credentials(text, "credentials")


def secret_url(base_url: str, service_id: str, creds: Credentials) -> str:
    """`{base_url}/mcp/{service}/{credentials}`; `service_id` is an already-validated slug."""
    return f"{base_url.rstrip('/')}/mcp/{service_id}/{creds.text}"


def format_api_key(creds: Credentials, env: str = "live") -> str:
    """`bnd_{env}_{credentials}`; the appliance issues `live`, the others are for compatibility."""
    if env not in API_KEY_ENVS:
        raise ValueError(f"API key environment tag must be one of {', '.join(API_KEY_ENVS)}")
    return f"{API_KEY_PREFIX}{env}_{creds.text}"


def parse_api_key(text: str) -> tuple[str, Credentials]:
    """Parse an `Authorization` value or a raw key into (environment tag, credentials).

    Accepts `bnd_{live|stg|test}_{86 chars}` with an optional leading `Bearer` + spaces/tabs (any
    case). Refuses personal API tokens (`bndpat_`) with their own message; everything malformed
    raises `CredentialFormatError`, whose message never contains the input.
    """
    if not isinstance(text, str):
        raise CredentialFormatError("API key must be text")
    if _BEARER_ALONE.fullmatch(text):
        raise CredentialFormatError("Authorization 'Bearer' carries no API key")
    scheme = _BEARER.match(text)
    if scheme is not None:
        text = text[scheme.end() :]
    elif not text.startswith("bnd") and _OTHER_SCHEME.match(text):
        raise CredentialFormatError("unsupported Authorization scheme; use 'Bearer bnd_…'")
    if not text:
        raise CredentialFormatError("API key is empty")
    if text.startswith(PERSONAL_TOKEN_PREFIX):
        raise CredentialFormatError("personal API tokens are for /api/v1, not MCP routes")
    if not text.startswith(API_KEY_PREFIX):
        raise CredentialFormatError(f"API key must start with '{API_KEY_PREFIX}'")
    # Tags never contain '_', so the first '_' after the prefix ends the tag even though the
    # credentials themselves may contain '_'.
    env, sep, rest = text[len(API_KEY_PREFIX) :].partition("_")
    if not sep:
        raise CredentialFormatError("API key has no environment tag ('bnd_live_…')")
    if env not in API_KEY_ENVS:
        raise CredentialFormatError(
            f"API key environment tag must be one of {', '.join(API_KEY_ENVS)}"
        )
    return env, _decode_credentials(rest, "API key credentials")


def secret1_lookup_hash(creds: Credentials) -> str:
    """Hex SHA-256 of secret1 under its own prefix: the stored database lookup key.

    secret1 carries 256 random bits, so an unsalted hash cannot be brute-forced; determinism is
    what makes it usable as a unique, indexed lookup column.
    """
    return hashlib.sha256(_LOOKUP_PREFIX + creds.secret1).hexdigest()


def secret2_verifier(creds: Credentials) -> str:
    """Hex SHA-256 of secret2 under its own prefix, stored for managed connections."""
    return hashlib.sha256(_VERIFIER_PREFIX + creds.secret2).hexdigest()


def verify_secret2(creds: Credentials, stored_verifier: str) -> bool:
    """True when `creds` carry the secret2 whose verifier was stored (constant-time compare)."""
    expected = secret2_verifier(creds).encode("ascii")
    return hmac.compare_digest(expected, stored_verifier.encode("utf-8", "surrogatepass"))
