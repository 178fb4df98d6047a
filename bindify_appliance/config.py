"""Configuration: one registry of options, read once at start-up into a frozen `Settings`.

Every option is a field of `Settings` whose metadata (an `Opt`) says how it is parsed, documented
and exposed. From that one registry come the CLI flags, the `BINDIFY_*` environment names, the
`NAME_FILE` variants of secrets, the `config.toml` keys and the README's configuration table.

Precedence: flags > environment > `config.toml` in the data directory > defaults. The value
parsers an option names (`parse_*`) live in `config_parsers.py`.

Invariants:
- Nothing reads `os.environ` after `load_settings` returns; callers pass the environment in.
- Secret options have no CLI flag (argv is visible to every local user) and also read `NAME_FILE`.
- An invalid value raises `ConfigError` whose one-line message names the option, never its value
  when the option is secret.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bindify_appliance.config_parsers import (
    parse_base_url,
    parse_bool,
    parse_choice,
    parse_cidrs,
    parse_csv,
    parse_database_url,
    parse_duration,
    parse_int_range,
    parse_kv_url,
    parse_mail_from,
    parse_nonempty,
    parse_origins,
    parse_role,
    parse_seconds,
    parse_secret_key,
    parse_smtp_url,
    parse_str,
    parse_workers,
)
from bindify_appliance.config_sources import (
    from_environ,
    read_config_file,
    toml_value_as_text,
)
from bindify_appliance.errors import ConfigError
from bindify_appliance.kv.base import DEFAULT_ANONYMOUS_RECORDS

__all__ = [
    "BUILTIN_SERVICE_IDS",
    "SERVICE_ENV_FIELDS",
    "Settings",
    "env_name",
    "load_settings",
    "options",
]

ENV_PREFIX = "BINDIFY_"

# Built-in service ids, fixed here because their `BINDIFY_{SERVICE}_*` overrides are read at
# start-up; the service registry holds everything else about them.
BUILTIN_SERVICE_IDS = ("linear", "github", "notion", "atlassian", "figma", "todoist", "ticktick")
# Per-service overrides (DESIGN §4); the secret ones read `_FILE` too.
SERVICE_ENV_FIELDS = (
    "client_id",
    "client_secret",
    "mcp_url",
    "authorize_url",
    "token_url",
    "register_url",
    "validate_url",
)
_SECRET_SERVICE_FIELDS = frozenset({"client_secret"})


@dataclass(frozen=True)
class Opt:
    """How one option is parsed and documented."""

    help: str
    parse: Callable[[str], Any]
    secret: bool = False
    flag: bool = True
    default_doc: str | None = None  # shown in docs when the default is computed

    @property
    def boolean(self) -> bool:
        """A true/false option: its flag may stand alone (`--single-instance` means true)."""
        return self.parse is parse_bool


def _opt(default: Any, help: str, parse: Callable[[str], Any], **kw: Any) -> Any:
    # Secrets stay out of `repr(settings)`, so a traceback or debug print never shows one.
    return field(
        default=default,
        repr=not kw.get("secret", False),
        metadata={"opt": Opt(help=help, parse=parse, **kw)},
    )


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Settings:
    """The appliance's whole configuration, immutable once loaded."""

    host: str = _opt("127.0.0.1", "Address to listen on.", parse_nonempty)
    port: int = _opt(8787, "Port to listen on.", parse_int_range(1, 65535))
    data_dir: str = _opt(
        "./bindify-data", "Data directory (database, keys, backups).", parse_nonempty
    )
    base_url: str = _opt(
        "",
        "Public URL used in secret URLs, OAuth callbacks and metadata.",
        parse_base_url,
        default_doc="`http://{host}:{port}`",
    )
    database_url: str = _opt(
        "",
        "Database URL: `sqlite:///path` or `postgresql://…`.",
        parse_database_url,
        secret=True,
        flag=False,
        default_doc="`sqlite:///{data_dir}/bindify.db`",
    )
    kv_url: str = _opt(
        "memory://",
        "Key-value store: `memory://` (in-process) or `redis://…` (several instances).",
        parse_kv_url,
        secret=True,
        flag=False,
    )
    kv_anonymous_records: int = _opt(
        DEFAULT_ANONYMOUS_RECORDS,
        "Live KV records anonymous requests may hold (SSO sign-in state, per-IP limiter "
        "windows); beyond it new anonymous writes get 429, nothing is evicted.",
        parse_int_range(1, 10**8),
    )
    master_keys: str = _opt(
        "",
        'Master keys as JSON `[{"key": "…", "active": false?}, …]`; else `master-keys.json`.',
        parse_str,
        secret=True,
        flag=False,
        default_doc="generated into the data dir",
    )
    secret_key: str = _opt(
        "",
        "Cookie and CSRF signing key: at least 32 random bytes, hex or base64.",
        parse_secret_key,
        secret=True,
        flag=False,
        default_doc="generated into the data dir",
    )
    log_level: str = _opt("info", "Log level.", parse_choice("debug", "info", "warning", "error"))
    log_format: str = _opt(
        "",
        "Log format: `json` or `text`.",
        parse_choice("json", "text"),
        default_doc="`json` when stderr is not a TTY, else `text`",
    )
    trusted_proxies: tuple[str, ...] = _opt(
        (),
        "CIDRs whose `X-Forwarded-For`/`Forwarded` headers are believed.",
        parse_cidrs,
        default_doc="empty",
    )
    workers: str = _opt(
        "1",
        "Worker processes serving the one port (`auto`: one per CPU); more than one needs a "
        "`redis://` KV and runs under a supervisor.",
        parse_workers,
    )
    single_instance: bool = _opt(
        False, "Allow PostgreSQL with the in-process KV (only one instance runs).", parse_bool
    )
    shutdown_timeout: float = _opt(10.0, "Seconds of draining on SIGTERM.", parse_seconds)
    rate_limit_per_hour: int = _opt(
        0, "Per-connection proxy requests per hour (0 = off).", parse_int_range(0, 10**9)
    )
    max_streams_per_connection: int = _opt(
        32,
        "Concurrent upstream requests and streams per connection, per instance (0 = no cap).",
        parse_int_range(0, 10**6),
    )
    audit_retention_days: int = _opt(
        365,
        "Days the audit trail keeps entries (deleted from the start, chain kept verifiable).",
        parse_int_range(1, 100_000),
    )
    key_checks_per_minute: int = _opt(
        10,
        "API-key checks against upstreams per user per minute (0 = no limit).",
        parse_int_range(0, 10**6),
    )
    allow_private_upstreams: bool = _opt(
        False,
        "Let upstream connections (the proxy, OAuth, validation) and admin-added services "
        "reach loopback or private addresses.",
        parse_bool,
    )
    allowed_origins: tuple[str, ...] = _opt(
        (), "Browser origins allowed on MCP routes (CORS).", parse_origins, default_doc="empty"
    )
    metrics_token: str = _opt(
        "",
        "Bearer token for `/metrics` (empty: loopback only).",
        parse_str,
        secret=True,
        flag=False,
        default_doc="empty",
    )
    backup_interval: float = _opt(
        86400.0,
        "How often a scheduled SQLite backup is written into `backups/` (`30s`, `15m`, `24h`; "
        "`0` = off).",
        parse_duration,
        default_doc="`24h`",
    )
    backup_keep: int = _opt(
        7, "Scheduled backups kept (older ones are deleted).", parse_int_range(1, 10_000)
    )
    oidc_issuer: str = _opt("", "OpenID Connect issuer URL for single sign-on.", parse_base_url)
    oidc_client_id: str = _opt("", "OpenID Connect client id.", parse_str)
    oidc_client_secret: str = _opt(
        "", "OpenID Connect client secret.", parse_str, secret=True, flag=False, default_doc="empty"
    )
    oidc_allowed_domains: tuple[str, ...] = _opt(
        (), "Verified email domains provisioned on first SSO login.", parse_csv, default_doc="empty"
    )
    oidc_allowed_groups: tuple[str, ...] = _opt(
        (), "Groups provisioned on first SSO login.", parse_csv, default_doc="empty"
    )
    oidc_groups_claim: str = _opt("groups", "ID-token claim holding groups.", parse_nonempty)
    oidc_default_role: str = _opt("member", "Role of users provisioned by SSO.", parse_role)
    smtp_url: str = _opt(
        "",
        "Outgoing mail server, `smtp://user:pass@host:587` (STARTTLS required except to "
        "loopback) or `smtps://…:465`; empty = no e-mail, links are shown instead.",
        parse_smtp_url,
        secret=True,
        flag=False,
        default_doc="empty",
    )
    smtp_from: str = _opt(
        "",
        "Sender of the appliance's e-mail, e.g. `Bindify <bindify@example.com>` (required "
        "with `BINDIFY_SMTP_URL`).",
        parse_mail_from,
        default_doc="empty",
    )
    oauth_server: bool = _opt(
        True,
        "Be an OAuth 2.1 authorization server for MCP clients (sign-in instead of a pasted "
        "secret URL); the base URL must then have no path.",
        parse_bool,
    )
    oauth_dcr: bool = _opt(
        True, "Let MCP clients register themselves (`POST /oauth/register`).", parse_bool
    )
    oauth_grant_days: int = _opt(
        90,
        "Days an MCP client's grant lasts at most, whatever its refreshes.",
        parse_int_range(1, 3650),
    )
    oauth_redirect_hosts: tuple[str, ...] = _opt(
        (),
        "Hosts self-registered MCP clients may redirect to over https (`.example.com` allows "
        "subdomains); empty = any. Loopback and app schemes are always allowed.",
        parse_csv,
        default_doc="empty",
    )
    # Optional billing (DESIGN §11): on only when both Stripe secrets are set.
    stripe_secret_key: str = _opt(
        "",
        "Stripe secret API key; with the webhook secret it turns billing on.",
        parse_str,
        secret=True,
        flag=False,
        default_doc="empty (billing off)",
    )
    stripe_webhook_secret: str = _opt(
        "",
        "Signing secret of the Stripe webhook endpoint `{base_url}/billing/webhook`.",
        parse_str,
        secret=True,
        flag=False,
        default_doc="empty (billing off)",
    )
    stripe_price: str = _opt(
        "", "Stripe price id billed per connection (`price_…`).", parse_str, default_doc="empty"
    )
    stripe_api_base: str = _opt(
        "",
        "Where the Stripe library sends its calls instead of `https://api.stripe.com` "
        "(a private gateway, a test stand-in).",
        parse_base_url,
        default_doc="empty (Stripe)",
    )
    billing_trial_days: int = _opt(5, "Days of a member's free trial.", parse_int_range(0, 3650))
    billing_trial_connections: int = _opt(
        2, "Connections allowed during the trial.", parse_int_range(0, 100)
    )
    billing_grace_days: int = _opt(
        3, "Days a past-due subscription keeps access (`0` allowed).", parse_int_range(0, 365)
    )
    billing_delete_suspended_days: int = _opt(
        0,
        "Days after which connections suspended by billing are deleted (`0` = never).",
        parse_int_range(0, 100_000),
        default_doc="`0` (never)",
    )
    # Filled from BINDIFY_{SERVICE}_{FIELD}; see `service_setting`.
    service_overrides: Mapping[str, str] = field(default_factory=dict)
    # Where each option's value came from ("flag", "env", "file", "default"), for the UI/doctor.
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def uses_redis(self) -> bool:
        return not self.kv_url.startswith("memory:")

    def service_setting(self, service_id: str, name: str) -> str | None:
        """An environment override for a built-in service, e.g. ("linear", "token_url")."""
        return self.service_overrides.get(f"{service_id}.{name}")


def options() -> list[tuple[str, Opt, Any]]:
    """(name, Opt, default) for every registry option, in declaration order."""
    out = []
    for f in dataclasses.fields(Settings):
        opt = f.metadata.get("opt")
        if opt is not None:
            out.append((f.name, opt, f.default))
    return out


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper()


def service_env_name(service_id: str, name: str) -> str:
    return f"{ENV_PREFIX}{service_id.upper().replace('-', '_')}_{name.upper()}"


# ----------------------------------------------------------------------------- loading


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    stderr_is_tty: bool | None = None,
) -> Settings:
    """Build Settings from flags > environment > config.toml > defaults.

    `flags` maps option names to the CLI's text values (None means "not given").

    Raises:
        ConfigError: a value is invalid or the combination is refused; the message names it.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = dict(os.environ if environ is None else environ)
    registry = {name: (opt, default) for name, opt, default in options()}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def parse(name: str, text: str, where: str) -> Any:
        opt = registry[name][0]
        try:
            return opt.parse(text)
        except ValueError as exc:
            labels = {"flag": "--" + name.replace("_", "-"), "config.toml": f"config.toml: {name}"}
            label = labels.get(where, env_name(name))
            raise ConfigError(f"{label}: {exc}") from None

    # The data directory decides where config.toml is, so it is resolved first.
    if "data_dir" in flags:
        data_dir = Path(parse("data_dir", str(flags["data_dir"]), "flag"))
    else:
        env_dir = from_environ(environ, env_name("data_dir"), False)
        data_dir = Path(parse("data_dir", env_dir, "env") if env_dir else registry["data_dir"][1])
    file_values = read_config_file(data_dir)

    service_keys = {
        f"{sid.replace('-', '_')}_{fname}": (sid, fname)
        for sid in BUILTIN_SERVICE_IDS
        for fname in SERVICE_ENV_FIELDS
    }
    unknown = sorted(set(file_values) - set(registry) - set(service_keys) - {"sources"})
    if unknown:
        raise ConfigError(f"config.toml: unknown option {unknown[0]!r}")

    for name, (opt, default) in registry.items():
        env = env_name(name)
        if name in flags:
            values[name] = parse(name, str(flags[name]), "flag")
            sources[name] = "flag"
            continue
        from_env = from_environ(environ, env, opt.secret)
        if from_env is not None:
            values[name] = parse(name, from_env, "env")
            sources[name] = "env"
        elif name in file_values:
            values[name] = parse(name, toml_value_as_text(name, file_values[name]), "config.toml")
            sources[name] = "file"
        else:
            values[name] = default
            sources[name] = "default"

    overrides: dict[str, str] = {}
    for key, (sid, fname) in service_keys.items():
        env = service_env_name(sid, fname)
        text = from_environ(environ, env, fname in _SECRET_SERVICE_FIELDS)
        if text is None and key in file_values:
            text = toml_value_as_text(key, file_values[key])
        if text is not None and text.strip():
            if fname.endswith("_url"):
                try:
                    text = parse_base_url(text)
                except ValueError as exc:
                    raise ConfigError(f"{env}: {exc}") from None
            overrides[f"{sid}.{fname}"] = text.strip()

    values["data_dir"] = str(Path(values["data_dir"]).expanduser().absolute())
    if not values["base_url"]:
        shown_host = values["host"]
        if shown_host in ("0.0.0.0", "::"):  # noqa: S104 - describing, not binding
            shown_host = "127.0.0.1"
        if ":" in shown_host:
            shown_host = f"[{shown_host}]"
        values["base_url"] = f"http://{shown_host}:{values['port']}"
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{values['data_dir']}/bindify.db"
    if not values["log_format"]:
        tty = sys.stderr.isatty() if stderr_is_tty is None else stderr_is_tty
        values["log_format"] = "text" if tty else "json"

    settings = Settings(**values, service_overrides=overrides, sources=sources)
    _check_combination(settings)
    return settings


def _check_combination(settings: Settings) -> None:
    """Refuse combinations that would silently break several instances (DESIGN §1, §4)."""
    postgres = not settings.is_sqlite
    if postgres and not settings.uses_redis and not settings.single_instance:
        raise ConfigError(
            "BINDIFY_KV_URL: PostgreSQL needs a shared redis:// KV store for several instances; "
            "set BINDIFY_SINGLE_INSTANCE=true if only one instance runs"
        )
    if bool(settings.stripe_secret_key) != bool(settings.stripe_webhook_secret):
        raise ConfigError(
            "BINDIFY_STRIPE_SECRET_KEY and BINDIFY_STRIPE_WEBHOOK_SECRET: set both to turn "
            "billing on, or neither"
        )
    if settings.stripe_secret_key and not settings.stripe_price:
        raise ConfigError("BINDIFY_STRIPE_PRICE: must be set when billing is on")
    if settings.smtp_url and not settings.smtp_from:
        raise ConfigError("BINDIFY_SMTP_FROM: must be set when BINDIFY_SMTP_URL is set")
    # The workers of one `serve --workers N` share the data directory's key files (DESIGN §14):
    # Redis then means "several workers", not "several hosts". PostgreSQL still may be shared
    # by other hosts, so it always needs explicit keys.
    if postgres or (settings.uses_redis and settings.workers == "1"):
        for name in ("master_keys", "secret_key"):
            if settings.sources.get(name) == "default":
                raise ConfigError(
                    f"{env_name(name)}: must be set explicitly with PostgreSQL or Redis, so that "
                    "every instance shares it"
                )


def flag_names() -> Sequence[tuple[str, Opt]]:
    """Options that have a CLI flag (secrets never do)."""
    return [(name, opt) for name, opt, _ in options() if opt.flag and not opt.secret]
