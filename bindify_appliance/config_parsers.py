"""Value parsers of configuration options: text in, a checked value out, or `ValueError`.

Each option of the registry (`config.py`) names one of these as its `Opt.parse`. They are pure
functions of the text (no environment, no files, no network), so the flag, the environment, a
`NAME_FILE` and `config.toml` are all checked by the same rule.

Invariants:
- A bad value raises `ValueError` with a short message saying what is expected; the message
  never repeats the value (the loader adds the option's name, and secrets must not be echoed).
- `parse_bool` is the one parser of true/false options (`Opt.boolean` relies on its identity)
  and `BOOLEAN_WORDS` lists every word it accepts (the CLI uses it for standalone flags).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from bindify_appliance.crypto.keyring import WEAK_KEY_RULE, is_strong_key

__all__ = [
    "BOOLEAN_WORDS",
    "parse_base_url",
    "parse_bool",
    "parse_choice",
    "parse_cidrs",
    "parse_csv",
    "parse_database_url",
    "parse_duration",
    "parse_int_range",
    "parse_kv_url",
    "parse_mail_from",
    "parse_nonempty",
    "parse_origin",
    "parse_origins",
    "parse_role",
    "parse_seconds",
    "parse_secret_key",
    "parse_smtp_url",
    "parse_str",
    "parse_workers",
]


def parse_str(text: str) -> str:
    return text.strip()


def parse_secret_key(text: str) -> str:
    """A cookie/CSRF signing key: 32 random bytes or more, encoded (never shown in errors)."""
    value = text.strip()
    if value and not is_strong_key(value):
        raise ValueError(f"{WEAK_KEY_RULE}; make one with `openssl rand -hex 32`")
    return value


def parse_nonempty(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def parse_int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def parse_seconds(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("must be a number of seconds") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError("must be a non-negative number of seconds")
    return value


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`30s`, `15m`, `24h`, `7d` or a bare number of seconds; `0` means off."""
    value = text.strip().lower()
    unit = _DURATION_UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit is not None else value
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError("must be a duration such as 30s, 15m or 24h (0 = off)") from None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError("must be a duration such as 30s, 15m or 24h (0 = off)")
    if 0 < seconds < 1:
        raise ValueError("must be at least 1s (or 0 = off)")
    return seconds


BOOLEAN_WORDS = frozenset({"1", "true", "yes", "on", "0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return value

    return parse


def parse_csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_base_url(text: str) -> str:
    value = text.strip().rstrip("/")
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not contain credentials, a query or a fragment")
    return value


def parse_origin(text: str) -> str:
    value = text.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
        raise ValueError("must list origins such as https://app.example.com")
    return value.lower()


def parse_origins(text: str) -> tuple[str, ...]:
    return tuple(parse_origin(item) for item in parse_csv(text))


def parse_cidrs(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in parse_csv(text):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError("must be a comma-separated list of IP networks (CIDR)") from None
    return tuple(out)


def parse_database_url(text: str) -> str:
    value = text.strip()
    if not value:
        return ""
    scheme = urlsplit(value).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("must start with sqlite:/// or postgresql://")
    return value


def parse_kv_url(text: str) -> str:
    value = text.strip()
    scheme = urlsplit(value).scheme
    if scheme not in ("memory", "redis", "rediss", "unix"):
        raise ValueError("must be memory:// or redis://host:port/db")
    return value


def parse_workers(text: str) -> str:
    value = text.strip().lower()
    if value == "auto":
        return value
    return str(parse_int_range(1, 256)(value))


def parse_role(text: str) -> str:
    return parse_choice("member", "admin")(text)


def parse_smtp_url(text: str) -> str:
    """An `smtp://` or `smtps://` URL; checked here so a bad one stops the start (one line)."""
    # Imported here: the mail package is only needed when e-mail is configured.
    from bindify_appliance.mail.transport import parse_smtp_url

    value = text.strip()
    if value:
        parse_smtp_url(value)  # ValueError messages never include the URL (it holds a password)
    return value


def parse_mail_from(text: str) -> str:
    from bindify_appliance.mail.messages import check_sender

    value = text.strip()
    if value:
        check_sender(value)
    return value
