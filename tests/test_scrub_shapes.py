"""Credential shapes the first scrubber missed (DESIGN §9, last bullets), through the real setup.

Each shape is logged through `configure_logging()` — as the message, as an extra field and
through Tornado's logger — and the written line must hold no 12-character piece of the secret,
while the text around it survives. Exact `scrub()` outputs pin what the redaction looks like.
Percent-encoded shapes are checked after percent-decoding the line, so a secret cannot hide
behind `%XX` escapes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bindify_appliance import scrubbing
from bindify_appliance.logs import add_secret_names, configure_logging, reset_logging, scrub
from bindify_appliance.scrubbing import _apply_rules, _may_match

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _alnum(seed: str, n: int) -> str:
    """`n` deterministic letters and digits (fake tokens: no real provider issued them)."""
    digest = hashlib.shake_256(seed.encode()).digest(n)
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest)


def _b64url(seed: str, nbytes: int) -> str:
    digest = hashlib.shake_256(seed.encode()).digest(nbytes)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _escape_some(text: str, every: int, lower: bool = False) -> str:
    """Percent-encode every `every`-th character (an unreserved one: still the same URL)."""
    form = "%{:02x}" if lower else "%{:02X}"
    return "".join(form.format(ord(c)) if i % every == 3 else c for i, c in enumerate(text))


CREDENTIALS = _b64url("shapes credentials", 64)  # 86 characters: a secret-URL segment
HEX40 = hashlib.sha1(b"shapes hex token").hexdigest()  # a fake token of the 40-hex shape
BASIC = base64.b64encode(b"alice@example.com:" + _alnum("basic", 24).encode()).decode()

# (name, secret, text containing it): the secret must not survive in any form.
SHAPES: list[tuple[str, str, str]] = [
    (
        "secret URL, some characters percent-encoded",
        CREDENTIALS,
        f"GET /mcp/linear/{_escape_some(CREDENTIALS, 7)} HTTP/1.1",
    ),
    (
        "secret URL, lower-case escapes",
        CREDENTIALS,
        f"GET /mcp/linear/{_escape_some(CREDENTIALS, 5, lower=True)}/sse",
    ),
    (
        "secret URL, every character percent-encoded",
        CREDENTIALS,
        "path /mcp/linear/" + "".join(f"%{ord(c):02X}" for c in CREDENTIALS),
    ),
    ("gho_", "gho_" + _alnum("gho", 36), "oauth token gho_" + _alnum("gho", 36) + " refused"),
    ("ghp_", "ghp_" + _alnum("ghp", 36), "token=ghp_" + _alnum("ghp", 36)),
    ("ghu_", "ghu_" + _alnum("ghu", 36), "user token ghu_" + _alnum("ghu", 36)),
    ("ghs_", "ghs_" + _alnum("ghs", 36), "installation ghs_" + _alnum("ghs", 36) + "."),
    ("ghr_", "ghr_" + _alnum("ghr", 36), "refresh (ghr_" + _alnum("ghr", 36) + ")"),
    (
        "github_pat_",
        "github_pat_" + _alnum("pat1", 22) + "_" + _alnum("pat2", 59),
        "fine-grained github_pat_" + _alnum("pat1", 22) + "_" + _alnum("pat2", 59) + " ok",
    ),
    ("figd_", "figd_" + _alnum("figd", 40), "X-Figma-Token figd_" + _alnum("figd", 40)),
    ("glpat-", "glpat-" + _alnum("glpat", 20), "gitlab glpat-" + _alnum("glpat", 20) + " x"),
    (
        "xoxb-",
        "xoxb-1234567890-1234567890123-" + _alnum("xoxb", 24),
        "slack xoxb-1234567890-1234567890123-" + _alnum("xoxb", 24),
    ),
    (
        "xoxp-",
        "xoxp-" + _alnum("xoxp", 32),
        "slack user xoxp-" + _alnum("xoxp", 32),
    ),
    ("sk-", "sk-" + _alnum("sk", 48), "openai sk-" + _alnum("sk", 48) + " rejected"),
    (
        "sk-proj-",
        "sk-proj-" + _alnum("skproj", 40),
        "key sk-proj-" + _alnum("skproj", 40),
    ),
    ("40 hex", HEX40, f"todoist token {HEX40} is invalid"),
    ("Basic credentials", BASIC, f"upstream refused Basic {BASIC} with 401"),
    ("bndat_", "bndat_" + _b64url("at", 32), "issued bndat_" + _b64url("at", 32)),
    ("bndrt_", "bndrt_" + _b64url("rt", 32), "rotated bndrt_" + _b64url("rt", 32)),
]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


def _pieces(secret: str, size: int = 12) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def _assert_absent(secret: str, output: str) -> None:
    decoded = unquote(output)
    # The token's own prefix (`ghp_`, `sk-`, ...) may stay, so only pieces past it count.
    for piece in _pieces(secret[6:] if len(secret) > 30 else secret):
        assert piece not in output and piece not in decoded, piece


@pytest.mark.parametrize(("name", "secret", "text"), SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_shape_never_reaches_the_log(name: str, secret: str, text: str, fmt: str) -> None:
    stream = io.StringIO()
    configure_logging("info", fmt, stream)
    logging.getLogger("bindify_appliance.shapes").info("as message: %s", text)
    logging.getLogger("bindify_appliance.shapes").warning("as field", extra={"detail": text})
    logging.getLogger("tornado.general").warning("from tornado: %s", text)
    output = stream.getvalue()
    assert output.count("\n") == 3
    _assert_absent(secret, output)
    if fmt == "json":
        assert [json.loads(line)["msg"][:10] for line in output.splitlines()] == [
            "as message",
            "as field",
            "from torna",
        ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"/mcp/linear/{_escape_some(CREDENTIALS, 7)}/sse",
            f"/mcp/linear/[REDACTED:{len(_escape_some(CREDENTIALS, 7))}chars]/sse",
        ),
        # an encoded slash splits runs: the path around the credential stays readable
        (
            f"u=https%3A%2F%2Fh%2Fmcp%2Fx%2F{CREDENTIALS}%2Fsse",
            "u=https%3A%2F%2Fh%2Fmcp%2Fx%2F[REDACTED:86chars]%2Fsse",
        ),
        # short percent-encoded runs are not credentials
        ("name=J%C3%BCrgen%20M%C3%BCller", "name=J%C3%BCrgen%20M%C3%BCller"),
        ("ghp_" + _alnum("ghp", 36), "ghp_[REDACTED]"),
        ("(gho_" + _alnum("gho", 36) + ")", "(gho_[REDACTED])"),
        ("github_pat_" + _alnum("p", 82), "github_pat_[REDACTED]"),
        ("figd_" + _alnum("f", 40), "figd_[REDACTED]"),
        ("glpat-" + _alnum("g", 20), "glpat-[REDACTED]"),
        ("xoxb-123456789012-" + _alnum("x", 20), "xoxb-[REDACTED]"),
        ("sk-" + _alnum("s", 48), "sk-[REDACTED]"),
        ("bndat_" + _b64url("at", 32), "bndat_[REDACTED]"),
        ("bndrt_" + _b64url("rt", 32), "bndrt_[REDACTED]"),
        ("bndat_short", "bndat_[REDACTED]"),
        (f"id {HEX40} x", "id [REDACTED:40chars] x"),
        (f"got Basic {BASIC}", "got Basic [REDACTED]"),
        ("basic dXNlcjpwYXNz", "Basic [REDACTED]"),
        # prose is left alone
        ("sk-learn and task-runner", "sk-learn and task-runner"),
        ("Basic authentication failed", "Basic authentication failed"),
        ('WWW-Authenticate: Basic realm="x"', 'WWW-Authenticate: Basic realm="x"'),
        ("ghp_short", "ghp_short"),
        ("sha " + "a" * 39, "sha " + "a" * 39),
    ],
)
def test_scrub_shape_exactly(text: str, expected: str) -> None:
    assert scrub(text) == expected


# --- the fast path stays equivalent to the full rules ------------------------------------------

_CHARS = list("abcdefABCDEF0123456789xyzXYZ_-.:/?&=;%@'\" \n+")
_WORDS = ["ghp_", "gho_", "github_pat_", "figd_", "glpat-", "xoxb-", "sk-", "Basic ", "basic "]
_WORDS += ["bndat_", "bndrt_", "bndpat_", "bnd_", "%2D", "%41", "%2F", "%3F", "%26", "%3D"]
_WORDS += ["0123456789abcdef", "A" * 8, "dXNlcjpwYXNz", "Authorization: ", "X-Acme-Auth: "]
_WORDS += ["x-acme-auth", "acme_k=", "?acme_k=", "%3Facme_k%3D", "Acme_K", "'x-ACME-auth': "]
_PIECES = st.sampled_from(_CHARS + _WORDS)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=80).map("".join))
@example("Basic dXNlcjpwYXNz")  # shorter than a 20-run: only the `basic` fragment finds it
@example("X-Acme-Auth: v")  # a registered name: only its own fragment finds it
@example("%41" * 43)  # no plain run at all
def test_prefilter_never_skips_a_line_the_rules_would_change(text: str) -> None:
    add_secret_names(["X-Acme-Auth", "acme_k"])
    if not _may_match(text):
        assert _apply_rules(text) == text
    assert scrub(text) == _apply_rules(text)


def test_registering_names_is_idempotent_and_ignores_non_tokens() -> None:
    add_secret_names(["X-Acme-Auth"])
    rules = scrubbing._rules
    add_secret_names(["x-acme-auth", "X-ACME-AUTH", "bad name", "", "Authorization"])
    assert scrubbing._rules is rules  # nothing new: no recompilation
    assert scrub("bad name: x") == "bad name: x"
