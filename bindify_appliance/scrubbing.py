"""The secret-scrubbing rules every log line passes (`logs.SecretScrubFilter`), and their fast path.

`scrub(text)` redacts credentials from free text. The rules are the hosted worker's three
(reference/hosted-bindify.md §4, ASCII semantics, same order) plus our own (DESIGN §9): the
appliance's own `bndpat_`/`bndat_`/`bndrt_` tokens, `Basic` credentials, common provider token
prefixes (`gh*_`, `github_pat_`, `figd_`, `glpat-`, `xox*-`, `sk-`), long base64url runs even
when partly or wholly percent-encoded, 40-hex tokens, URL passwords, credential headers, our
cookies, `password=`-like pairs and secret query parameters, raw and percent-encoded. Services
add the header and query names they inject secrets under (`add_secret_names`), which get the
same treatment as `Authorization` and `?key=`.

Invariants:
- `scrub(text) == _apply_rules(text)` for every text: `_may_match` answers False only for text
  no rule can change. Every rule's match contains a run of 20 token characters or one of the
  trigger fragments (compared lower-case; a registered name is a fragment too). A rule added
  without a fragment that every one of its matches contains breaks this; a property test
  (tests/test_logs.py, tests/test_scrub_shapes.py) checks it on generated text.
- Registered names only ever add rules for the life of the process (a service deleted a moment
  ago may still have requests in flight that log); re-registering known names costs a set test.
- Rules and fragments are swapped as whole tuples, so a record scrubbed while a name is being
  added sees the old rules or the new ones, never half of each. A cache of verdicts keys
  itself to `rules_token()` (new identity with every change) and starts afresh when it moves.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable

__all__ = ["SCRUBBED_COOKIE_NAMES", "SENSITIVE_NAME", "add_secret_names", "scrub"]

#: Cookies whose `name=value` pairs are redacted wherever they appear (the UI session and
#: Tornado's CSRF cookie). The web layer must use these names.
SCRUBBED_COOKIE_NAMES: frozenset[str] = frozenset({"bindify_session", "bindify_oidc", "_xsrf"})

_Replacement = str | Callable[[re.Match[str]], str]
_A = re.ASCII
_AI = re.ASCII | re.IGNORECASE

# A quoted string value (JSON or Python repr), honouring backslash escapes.
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
#: Names whose `name=value` pairs hold secrets: password, db_password, client_secret,
#: access_token, csrf_token, x-api-key, ... (a name must END with the word, so `max_tokens`
#: and `password_hash` are left alone).
SENSITIVE_NAME = r"[A-Za-z0-9_-]*(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key)"
_QUERY_NAMES = r"(?:access_token|refresh_token|client_secret|password|token|claim|code|state|key)"
_HEADER_NAMES = (
    r"(?:Set-Cookie|Cookie|Proxy-Authorization|Authorization|X-Api-Key|X-XSRFToken|X-CSRFToken)"
)
_COOKIE_NAMES = "|".join(re.escape(n) for n in sorted(SCRUBBED_COOKIE_NAMES, key=len, reverse=True))
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_LONG_RUN = 43  # a 32-byte secret in base64url; secret-URL credentials are 86


def _long_run(match: re.Match[str]) -> str:
    return f"[REDACTED:{len(match.group(0))}chars]"


def _keep_quotes(prefix_group: int, value_group: int) -> Callable[[re.Match[str]], str]:
    """Replace the value but keep the text before it and its quote style, if it was quoted."""

    def replace(match: re.Match[str]) -> str:
        value = match.group(value_group)
        quote = value[0] if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0] else ""
        return f"{match.group(prefix_group)}{quote}[REDACTED]{quote}"

    return replace


def _basic(match: re.Match[str]) -> str:
    # base64 of `user:password` practically always holds a digit, `+`, `/`, `=` or a capital
    # after its first character; a lower-case word ("Basic authentication") does not.
    value = match.group(1)
    if any(c.isdigit() or c in "+/=" for c in value) or any(c.isupper() for c in value[1:]):
        return "Basic [REDACTED]"
    return match.group(0)


_PERCENT_UNIT = re.compile(r"%([0-9A-Fa-f]{2})|[A-Za-z0-9_-]", _A)


def _decoded(unit: re.Match[str]) -> str:
    escaped = unit.group(1)
    return chr(int(escaped, 16)) if escaped else unit.group(0)


def _percent_runs(match: re.Match[str]) -> str:
    """Redact base64url runs of 43+ characters counted after percent-decoding.

    A client may escape any character of a secret URL (`%2D` for `-`, or all of them), which
    splits the plain run the long-run rule looks for. The match is a stretch of token
    characters and `%XX` escapes; it is cut where a unit decodes to something outside
    base64url (`%2F`, `%3D`, ...), so a whole encoded URL keeps its readable parts.
    """
    text = match.group(0)
    if "%" not in text:
        return text  # plain: the long-run rule's business, with its word boundaries
    units = [
        (unit.start(), unit.end(), _decoded(unit) in _B64URL)
        for unit in _PERCENT_UNIT.finditer(text)
    ]
    out: list[str] = []
    for is_b64, group in itertools.groupby(units, key=lambda u: u[2]):
        members = list(group)
        start, end = members[0][0], members[-1][1]
        if is_b64 and len(members) >= _LONG_RUN:
            out.append(f"[REDACTED:{end - start}chars]")
        else:
            out.append(text[start:end])
    return "".join(out)


_STATIC_RULES: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    # 1-3: the hosted worker's rules in its order, with the appliance's own `bndpat_`
    # (personal), `bndat_`/`bndrt_` (OAuth access/refresh) tokens ahead of `bnd_`, whose word
    # boundary would not fire inside them.
    (re.compile(r"\b(bndpat|bndat|bndrt)_[A-Za-z0-9_-]+", _A), r"\1_[REDACTED]"),
    (re.compile(r"\bbnd_[A-Za-z0-9_-]+", _A), "bnd_[REDACTED]"),
    (re.compile(r"Bearer\s+[A-Za-z0-9._-]{20,}", _AI), "Bearer [REDACTED]"),
    # Ours, ahead of the long-run rule so the marker keeps the token's kind. `Basic` + base64
    # wherever it appears (an upstream's error text, a header dump of another shape).
    (re.compile(r"\bBasic[ \t]+([A-Za-z0-9+/]{8,}=*)", _AI), _basic),
    # Provider tokens by prefix: GitHub (gho_ ghp_ ghu_ ghs_ ghr_ github_pat_), Figma, GitLab,
    # Slack, OpenAI-style sk-. The whole token must be 20+ token characters, which every real
    # one is, so `sk-learn` stays and the fast path's 20-character run test covers the rule.
    (
        re.compile(
            r"\b(?=[A-Za-z0-9_-]{20})(gh[opusr]_|github_pat_|figd_|glpat-|xox[a-z]-|sk-)"
            r"[A-Za-z0-9_-]*",
            _A,
        ),
        r"\1[REDACTED]",
    ),
    # Long base64url runs with percent escapes in them (see `_percent_runs`).
    (re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-Fa-f]{2}){43,}", _A), _percent_runs),
    # 4: any long base64url run: secret-URL credentials (86), their halves (43), hashes, keys.
    (re.compile(r"\b[A-Za-z0-9_-]{43,}\b", _A), _long_run),
    # 40-hex tokens (GitHub's classic OAuth tokens, Todoist's, many API keys); longer hex runs
    # are gone already. Random hex has a digit and a letter (all-letter or all-digit 40 is
    # below 1e-8), which keeps runs like `AAAA…` or long numbers readable.
    (
        re.compile(r"\b(?=[0-9A-Fa-f]*[0-9])(?=[0-9A-Fa-f]*[A-Fa-f])[0-9A-Fa-f]{40,}\b", _A),
        _long_run,
    ),
    # URL userinfo: keep the user (useful when debugging a DSN), drop the password; the
    # greedy password part ends at the last `@` before the host.
    (re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):[^\s/?#]*@", _A), r"\1:[REDACTED]@"),
    # Credential headers, as `Name: value` lines or quoted dict/JSON entries: the whole value.
    (
        re.compile(
            rf"((?<![A-Za-z0-9_-]){_HEADER_NAMES}[\"']?[ \t]*:[ \t]*)({_QUOTED}|[^\s][^\r\n]*)",
            _AI,
        ),
        _keep_quotes(1, 2),
    ),
    # Our cookies wherever they appear (`__Host-` prefixes included: `-` is not a name char).
    (re.compile(rf"(?<![A-Za-z0-9_])({_COOKIE_NAMES})=[^;\s\"',&]+", _A), r"\1=[REDACTED]"),
    # "password": "x" / 'client_secret': 'x' (JSON, Python reprs).
    (
        re.compile(rf"([\"']{SENSITIVE_NAME}[\"'][ \t]*:[ \t]*)({_QUOTED})", _AI),
        _keep_quotes(1, 2),
    ),
    # password=x, db_password='x y', client_secret=x, access_token=x ...
    (
        re.compile(rf"((?<![A-Za-z0-9_.-]){SENSITIVE_NAME}=)({_QUOTED}|[^\s&;,'\"<>)}}]+)", _AI),
        r"\1[REDACTED]",
    ),
    # Query parameters that carry secrets: one-time tokens, claims, OAuth codes and states,
    # API keys. Only after `?`, `&` or `;`, so prose like "exit code=1" is left alone.
    (re.compile(rf"([?&;]{_QUERY_NAMES}=)[^&#\s\"'<>]+", _AI), r"\1[REDACTED]"),
    # The same inside a percent-encoded URL (a redirect_uri carried in another URL's query).
    (
        re.compile(rf"((?:%3F|%26){_QUERY_NAMES}%3D)(?:(?!%26|%23)[^&#\s\"'<>])+", _AI),
        r"\1[REDACTED]",
    ),
)


def _name_rules(names: Iterable[str]) -> tuple[tuple[re.Pattern[str], _Replacement], ...]:
    """The header and query rules above, for services' own names (any case, like headers)."""
    alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    if not alternation:
        return ()
    names_re = f"(?:{alternation})"
    return (
        (
            re.compile(
                rf"((?<![A-Za-z0-9_-]){names_re}[\"']?[ \t]*:[ \t]*)({_QUOTED}|[^\s][^\r\n]*)",
                _AI,
            ),
            _keep_quotes(1, 2),
        ),
        (re.compile(rf"([?&;]{names_re}=)[^&#\s\"'<>]+", _AI), r"\1[REDACTED]"),
        (
            re.compile(rf"((?:%3F|%26){names_re}%3D)(?:(?!%26|%23)[^&#\s\"'<>])+", _AI),
            r"\1[REDACTED]",
        ),
    )


# Every static rule needs, in its match, a run of 20 token characters or one of these
# fragments (compared lower-case), so text without any of them is returned untouched instead
# of going through every substitution (most log lines, the access log's included). Plain
# substring tests are several times cheaper than one regex alternation over the text. `%`
# covers the percent-encoded rules, `basic` the Basic rule (its 8-character value can be
# shorter than a 20-run).
_STATIC_FRAGMENTS: tuple[str, ...] = (
    "=",
    "://",
    "bnd",
    "bearer",
    "basic",
    "token",
    "secret",
    "pass",
    "pwd",
    "cookie",
    "authorization",
    "xsrf",
    "csrf",
    "%",
    "apikey",
    "api_key",
    "api-key",
)
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_-]{20}", _A)

# Every OAuth service injects `Authorization`, which the header rule covers already; adding it
# would only lengthen the name rules and the fast path's fragment list.
_STATIC_NAMES = frozenset({"authorization"})
_NAME_RE = re.compile(r"[A-Za-z0-9!#$&'*+.^_`|~-]{1,100}", _A)

_registered: frozenset[str] = frozenset()
_rules = _STATIC_RULES
_fragments = _STATIC_FRAGMENTS


def add_secret_names(names: Iterable[str]) -> None:
    """Treat these header or query names like `Authorization` and `?key=` from now on.

    Called by the service registry with every name a service injects a secret under. Names
    that are not header/query tokens are ignored (they could not carry an injected secret).
    """
    global _registered, _rules, _fragments
    wanted = {n.lower() for n in names if _NAME_RE.fullmatch(n)} - _STATIC_NAMES
    if wanted <= _registered:
        return
    registered = _registered | wanted
    # Fragments first: a record scrubbed in between goes through the full rules, never skips
    # a rule it needs.
    _fragments = _STATIC_FRAGMENTS + tuple(sorted(registered))
    _rules = _STATIC_RULES + _name_rules(registered)
    _registered = frozenset(registered)


def scrub(text: str) -> str:
    """Redact credentials from free text; the same rules the log filter applies.

    In order: `bndpat_…`/`bndat_…`/`bndrt_…` → `bndpat_[REDACTED]` (and so on); `bnd_…` →
    `bnd_[REDACTED]`; `Bearer` + ≥20 token characters → `Bearer [REDACTED]`; `Basic` + base64
    → `Basic [REDACTED]`; provider tokens → `ghp_[REDACTED]` (the prefix stays); any run of
    ≥43 base64url characters, percent-decoded or word-bounded, and 40-hex runs →
    `[REDACTED:<n>chars]`; then URL passwords, credential header values, our cookies,
    `password=`-like pairs, secret query parameters and services' own names → `[REDACTED]`.
    Character classes and word boundaries are ASCII (`re.ASCII`), as in the hosted worker, so a
    non-ASCII letter next to a run counts as a boundary.
    """
    if not _may_match(text):
        return text
    return _apply_rules(text)


def _apply_rules(text: str) -> str:
    for pattern, replacement in _rules:
        text = pattern.sub(replacement, text)
    return text


def _may_match(text: str) -> bool:
    if _TOKEN_RUN.search(text) is not None:
        return True
    lowered = text.lower()
    # A plain loop: any() over a generator costs twice as much on this per-record path.
    for fragment in _fragments:  # noqa: SIM110
        if fragment in lowered:
            return True
    return False


def inert(text: str) -> bool:
    """True when no rule can change `text` (`scrub` returns it as it is, by its fast path)."""
    return not _may_match(text)


def rules_token() -> object:
    """An object whose identity changes whenever the rules do (`add_secret_names`): what a
    cache of scrubbing verdicts keys itself to (`accesslog.AccessHeads`)."""
    return _fragments


def numeric_fragment() -> str | None:
    """A trigger fragment made only of digits, `.`, `m` and `s` (a registered name could be),
    which could make a duration like `12.5ms` trip the fast path; None when there is none."""
    for fragment in _fragments:
        if not fragment.strip("0123456789.ms"):
            return fragment
    return None
