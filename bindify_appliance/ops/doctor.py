"""`bindify doctor`: one line per check of an instance's configuration and storage (DESIGN §12).

Checks, in order: configuration (done by the caller: loading it is the check), the data
directory's permissions, the master keys (and stored data sealed with a key nobody holds), the
secret key, the database, migrations, the KV store (with Redis, `maxmemory-policy` must be
`noeviction`), the base URL, and for each service in use (it has connections, or an OAuth app
is configured for it) the upstream's reachability and its OAuth app.

Invariants:
- Read-only: doctor creates, tightens, migrates and generates nothing; a missing data directory,
  database or key file is a failing line, not a reason to make one.
- Every line is `ok|warn|FAIL  name: detail`; details name files, hosts and counts, never a key,
  a secret, a URL's path or query, or a stored value.
- The exit status is 1 when any line is FAIL; warnings alone leave it 0.
- Outbound probes follow the one outbound policy (`OutboundClient`), with a 5 s bound each.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from yarl import URL

from bindify_appliance.clock import SystemClock
from bindify_appliance.config import Settings
from bindify_appliance.datadir import (
    BACKUPS_DIR,
    MASTER_KEYS_FILE,
    PRIVATE_FILES,
    SECRET_KEY_FILE,
    KeySource,
)
from bindify_appliance.errors import BindifyError, OutboundError, UnsafeDestinationError
from bindify_appliance.outbound_policy import safe_host

__all__ = ["Check", "doctor_command", "format_line", "run_checks"]

Status = Literal["ok", "warn", "FAIL"]
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def format_line(check: Check) -> str:
    return f"{check.status:<4}  {check.name}: {check.detail}"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_data_dir(settings: Settings) -> Check:
    path = settings.data_path
    if not path.is_dir():
        return Check("data directory", "FAIL", f"{path} does not exist (bindify serve makes it)")
    problems = []
    if _mode(path) & 0o077:
        problems.append(f"{path} is mode {_mode(path):04o}, not 0700")
    if path.stat().st_uid != os.geteuid():
        problems.append(f"{path} belongs to another user")
    for name in PRIVATE_FILES:
        file = path / name
        if file.exists() and _mode(file) & 0o077:
            problems.append(f"{name} is mode {_mode(file):04o}, not 0600")
    backups = path / BACKUPS_DIR
    if backups.is_dir():
        if _mode(backups) & 0o077:
            problems.append(f"{BACKUPS_DIR}/ is mode {_mode(backups):04o}, not 0700")
        open_files = [p.name for p in backups.iterdir() if p.is_file() and _mode(p) & 0o077]
        if open_files:
            problems.append(f"{len(open_files)} backup(s) readable by others: chmod 600 them")
    if problems:
        return Check("data directory", "FAIL", "; ".join(problems))
    return Check("data directory", "ok", f"{path} is private to its user")


def check_keys(settings: Settings) -> tuple[Check, KeySource | None]:
    try:
        keys = KeySource(settings, create=False)
    except BindifyError as exc:
        return Check("master keys", "FAIL", str(exc)), None
    where = "BINDIFY_MASTER_KEYS" if keys.from_env else MASTER_KEYS_FILE
    ring = keys.keyring
    detail = f"{len(ring)} key(s) from {where}, active {ring.active.fingerprint}"
    return Check("master keys", "ok", detail), keys


def check_secret_key(settings: Settings) -> Check:
    if settings.secret_key:
        return Check("secret key", "ok", "from BINDIFY_SECRET_KEY")
    path = settings.data_path / SECRET_KEY_FILE
    try:
        length = len(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        return Check("secret key", "FAIL", f"{SECRET_KEY_FILE} is missing (serve generates it)")
    except OSError as exc:
        return Check("secret key", "FAIL", f"{SECRET_KEY_FILE}: {exc.strerror}")
    if length < 32:
        return Check("secret key", "FAIL", f"{SECRET_KEY_FILE} is too short")
    return Check("secret key", "ok", f"from {SECRET_KEY_FILE}")


def check_base_url(settings: Settings) -> Check:
    url = URL(settings.base_url)
    if url.scheme == "https":
        return Check("base URL", "ok", f"{settings.base_url} (https)")
    if url.host in ("127.0.0.1", "localhost", "::1"):
        return Check("base URL", "ok", f"{settings.base_url} (this machine only)")
    return Check(
        "base URL",
        "warn",
        f"{settings.base_url} is plain http on a non-loopback host: put HTTPS in front and set "
        "BINDIFY_BASE_URL to the https:// address",
    )


async def _probe(client: object, url: str) -> Check | str:
    from bindify_appliance.outbound import OutboundClient

    assert isinstance(client, OutboundClient)
    try:
        answer = await client.request(
            "GET", url, follow_redirects=False, timeout=PROBE_TIMEOUT, max_body=64 * 1024
        )
    except UnsafeDestinationError:
        return f"{safe_host(url)} is refused by the outbound policy"
    except OutboundError as exc:
        return f"{safe_host(url)} could not be reached ({exc.reason})"
    return f"{safe_host(url)} answers (HTTP {answer.status})"


async def check_services(settings: Settings, store: object) -> list[Check]:
    from bindify_appliance.outbound import OutboundClient
    from bindify_appliance.services.registry import ServiceRegistry
    from bindify_appliance.store import Store
    from bindify_appliance.store.inspection import connections_per_service

    assert isinstance(store, Store)
    counts = await store.run(connections_per_service)
    registry = ServiceRegistry(settings, store, SystemClock())
    services = await registry.list()
    in_use = [
        s for s in services if counts.get(s.id) or (s.oauth is not None and s.oauth.client_id)
    ]
    if not in_use:
        return [Check("services", "ok", "no service has connections or an OAuth app yet")]
    client = OutboundClient(allow_private=settings.allow_private_upstreams)
    checks: list[Check] = []
    try:
        probes = await asyncio.gather(*(_probe(client, s.mcp_url) for s in in_use))
    finally:
        await client.close()
    for service, probe in zip(in_use, probes, strict=True):
        name = f"service {service.id}"
        uses = f"{counts.get(service.id, 0)} connection(s)"
        assert isinstance(probe, str)
        reachable = "answers" in probe
        checks.append(Check(f"{name} upstream", "ok" if reachable else "FAIL", probe))
        if service.oauth is None:
            continue
        oauth = service.oauth
        if oauth.client_id:
            checks.append(Check(f"{name} OAuth app", "ok", f"client id configured; {uses}"))
        elif oauth.dcr or oauth.discover:
            checks.append(Check(f"{name} OAuth app", "ok", f"registers itself (dynamic); {uses}"))
        else:
            env = f"BINDIFY_{service.id.upper().replace('-', '_')}_CLIENT_ID"
            checks.append(
                Check(
                    f"{name} OAuth app",
                    "FAIL",
                    f"no OAuth app: set {env} or configure it on the admin page; {uses}",
                )
            )
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    """Every check after configuration, in order (see the module docstring)."""
    from bindify_appliance.keymgmt import orphan_fingerprints
    from bindify_appliance.kv import open_kv
    from bindify_appliance.kv.redis import eviction_policy_warning
    from bindify_appliance.store import Store, migrator, sqlite_path

    checks = [check_data_dir(settings)]
    key_check, keys = check_keys(settings)
    checks += [key_check, check_secret_key(settings)]

    store: Store | None = None
    db_path = sqlite_path(settings.database_url)
    if db_path is not None and not db_path.is_file():
        checks.append(Check("database", "FAIL", f"no database at {db_path} yet"))
    else:
        try:
            store = Store(settings.database_url)
            store.ping()
            detail = f"{store.kind} answers"
            if store.kind == "sqlite":
                quick = store.call(_quick_check)
                if quick != "ok":
                    checks.append(Check("database", "FAIL", "PRAGMA quick_check reports damage"))
                    detail = ""
            if detail:
                checks.append(Check("database", "ok", detail))
        except BindifyError as exc:
            checks.append(Check("database", "FAIL", str(exc)))
            if store is not None:
                store.close()
            store = None

    if store is not None:
        try:
            report = migrator.status(store)
            if report.unknown:
                checks.append(
                    Check(
                        "migrations",
                        "FAIL",
                        f"{len(report.unknown)} applied migration(s) unknown to this version: "
                        "the database was upgraded by a newer Bindify",
                    )
                )
            elif report.pending:
                checks.append(
                    Check(
                        "migrations",
                        "warn",
                        f"{len(report.pending)} pending (bindify serve or migrate applies them)",
                    )
                )
            else:
                checks.append(Check("migrations", "ok", f"{len(report.migrations)} applied"))
            if keys is not None and not report.pending and not report.unknown:
                orphans = await store.run(orphan_fingerprints, keys.keyring)
                if orphans:
                    count = sum(orphans.values())
                    checks.append(
                        Check(
                            "sealed data",
                            "FAIL",
                            f"{count} stored secret(s) sealed with key(s) "
                            f"{', '.join(sorted(orphans))} that no configured key matches",
                        )
                    )
                else:
                    checks.append(Check("sealed data", "ok", "every stored secret has its key"))
        except BindifyError as exc:
            checks.append(Check("migrations", "FAIL", str(exc)))

    kv = open_kv(settings.kv_url, SystemClock(), settings.kv_anonymous_records)
    try:
        await kv.ping()
        warning = await eviction_policy_warning(kv)
        kind = "memory (in-process)" if settings.kv_url.startswith("memory") else "redis"
        checks.append(Check("kv", "warn" if warning else "ok", warning or f"{kind} answers"))
    except BindifyError as exc:
        checks.append(Check("kv", "FAIL", str(exc)))
    finally:
        await kv.close()

    checks.append(check_base_url(settings))
    if store is not None:
        try:
            if not any(c.name == "migrations" and c.status != "ok" for c in checks):
                checks += await check_services(settings, store)
        finally:
            store.close()
    return checks


def _quick_check() -> str:
    from bindify_appliance.store.db import run_sql
    from bindify_appliance.store.models import Connection

    return str(run_sql(Connection._meta.database, "PRAGMA quick_check").fetchone()[0])


def doctor_command(settings: Settings, *, out: Callable[[str], None]) -> int:
    """Print one line per check; 0 when none failed, else 1."""
    out(format_line(Check("configuration", "ok", _describe(settings))))
    checks = asyncio.run(run_checks(settings))
    for check in checks:
        out(format_line(check))
    return 1 if any(c.status == "FAIL" for c in checks) else 0


def _describe(settings: Settings) -> str:
    database = "SQLite" if settings.is_sqlite else "PostgreSQL"
    kv = "Redis" if settings.uses_redis else "in-process KV"
    from_env = sum(1 for s in settings.sources.values() if s == "env")
    from_file = sum(1 for s in settings.sources.values() if s == "file")
    return (
        f"{database}, {kv}; {from_env} option(s) from the environment, {from_file} from config.toml"
    )
