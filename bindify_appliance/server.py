"""Running the appliance: start-up order, signals and graceful shutdown.

Start-up: logging → data directory and its lock → open-file limit → keys, store, KV → listen
(not ready; the service registry serves nothing yet) → migrations (after an automatic SQLite
backup) → service endpoint check (a changed `BINDIFY_{SERVICE}_*` override flags its
connections) → instance record → first-run setup URL → ready.

Shutdown on SIGTERM/SIGINT: not ready → stop accepting → drain in-flight requests for up to
`shutdown_timeout` → close remaining connections (streams included) → stop jobs → checkpoint
SQLite → exit 0. A second signal exits at once with status 1.

Under `serve --workers N` (`supervisor.py`) the supervisor does the first-start work once
(`first_start`: data directory, keys, migrations, endpoint check, setup token) and holds the
lock; each worker runs `run_server(..., worker=…)`, which skips all of that, binds the port with
SO_REUSEPORT, tells the supervisor when it is ready and stops when the supervisor is gone.

Invariant: the setup URL goes straight to stderr, never through logging (the scrubber would
redact it and log shippers would keep it).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from bindify_appliance import __version__, audit
from bindify_appliance.accounts.setup import issue_setup_token_if_needed
from bindify_appliance.app import build_application, build_context
from bindify_appliance.config import Settings
from bindify_appliance.context import AppContext
from bindify_appliance.crypto.keyring import check_key_strength
from bindify_appliance.datadir import (
    BACKUPS_DIR,
    MASTER_KEYS_FILE,
    DataDirLock,
    data_dir_line,
    ensure_data_dir,
)
from bindify_appliance.errors import ConfigError
from bindify_appliance.jobs import standard_jobs
from bindify_appliance.keymgmt import key_usage
from bindify_appliance.logs import configure_logging
from bindify_appliance.proxy.upstream import warm_up
from bindify_appliance.scheduler import Scheduler
from bindify_appliance.services.connect import ConnectServices
from bindify_appliance.store import migrator
from bindify_appliance.store.instances import register_instance, unregister_instance
from bindify_appliance.worker_role import WorkerRole

__all__ = [
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "first_start",
    "http_server",
    "raise_open_file_limit",
    "run_server",
]

log = logging.getLogger(__name__)

# Signals closer together than this are one request to stop, delivered twice.
DUPLICATE_SIGNAL_WINDOW = 0.1

# Bodies of MCP requests are small JSON-RPC messages; anything larger is refused early.
MAX_BODY_BYTES = 16 * 1024 * 1024
# DESIGN §9: a request's headers, and then its body, must arrive within these (a client that
# sends half a request holds a connection no longer). Tornado uses the header limit for idle
# keep-alive connections too; responses (streams) have no limit at all.
HEADER_TIMEOUT = 60.0
BODY_TIMEOUT = 60.0


def http_server(
    app: tornado.web.Application,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
) -> HTTPServer:
    """The HTTP server `serve` runs `app` in (not yet listening)."""
    return HTTPServer(
        app,
        max_body_size=MAX_BODY_BYTES,
        idle_connection_timeout=header_timeout,
        body_timeout=body_timeout,
    )


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (thousands of streams need sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit", extra={"open_files_limit": soft})
    return soft


def bind_port(settings: Settings, *, reuse_port: bool) -> list[socket.socket]:
    """The listening sockets for `host:port`; an address that cannot be had is one line.

    Raises:
        ConfigError: the port is in use or may not be bound; the message names the address and
            the option that changes it (start-up errors are one line, DESIGN §3).
    """
    try:
        return bind_sockets(settings.port, settings.host, reuse_port=reuse_port)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        if exc.errno == errno.EADDRINUSE:
            reason = "is already in use (another bindify or program listens there)"
        else:
            reason = f"cannot be listened on ({exc.strerror or exc})"
        raise ConfigError(
            f"{where} {reason}; choose another port with --port or BINDIFY_PORT"
            " (or another address with --host or BINDIFY_HOST)"
        ) from None


def log_data_dir(settings: Settings, *, created: bool) -> None:
    """`serve`'s line naming its data directory (a log line: serve's stderr is its log)."""
    log.info(
        data_dir_line(settings, created=created),
        extra={"event": "data_dir_created" if created else "data_dir"},
    )


def print_setup_url(url: str) -> None:
    sys.stderr.write(
        "\n  No administrator exists yet. Open this one-time URL (valid 30 minutes)"
        " to create one:\n"
        f"\n    {url}\n\n"
    )
    sys.stderr.flush()


async def _warn_about_redis_eviction(ctx: AppContext) -> None:
    """One warning line when Redis may evict one-time records (DESIGN §9)."""
    from bindify_appliance.kv.redis import eviction_policy_warning  # redis-py only when used

    warning = await eviction_policy_warning(ctx.kv)
    if warning is not None:
        log.warning(warning, extra={"event": "kv_eviction_policy"})


async def run_server(
    settings: Settings,
    *,
    on_ready: Callable[[AppContext], Awaitable[None]] | None = None,
    worker: WorkerRole | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit status.

    With `worker`, this process is one of a supervisor's workers: the supervisor already did
    the first-start work and holds the lock.
    """
    configure_logging(settings.log_level, settings.log_format)
    if worker is not None:
        return await _serve(settings, on_ready, worker)
    existed = settings.data_path.is_dir()
    data_dir = ensure_data_dir(settings)
    lock = DataDirLock.acquire(data_dir)
    try:
        log_data_dir(settings, created=not existed)
        return await _serve(settings, on_ready, None)
    finally:
        lock.release()


def _open_context(settings: Settings) -> AppContext:
    if settings.master_keys and (settings.data_path / MASTER_KEYS_FILE).exists():
        log.warning("BINDIFY_MASTER_KEYS is set; ignoring master-keys.json in the data directory")
    ctx = build_context(settings)
    if ctx.keys.generated:
        log.warning(
            "generated a new master key; back up this file together with the database: "
            "without it managed connections cannot be decrypted",
            extra={"event": "master_key_generated", "file": str(ctx.keys.path)},
        )
    return ctx


async def _migrate(ctx: AppContext) -> None:
    settings = ctx.settings
    backup_dir = settings.data_path / BACKUPS_DIR if settings.is_sqlite else None
    applied = await ctx.store.run(
        functools.partial(migrator.apply, ctx.store, backup_dir=backup_dir, clock=ctx.clock)
    )
    if applied:
        log.info("migrations applied", extra={"event": "migrated", "count": len(applied)})


async def first_start(settings: Settings) -> str | None:
    """The supervisor's once-only start-up work; returns the setup URL to print, if any.

    Keys and secret key (generated when missing), the Redis eviction check, migrations after
    their backup, the service endpoint check (so no two workers flag the same connections),
    and the setup token. The data directory must exist and be locked by the caller.
    """
    ctx = _open_context(settings)
    try:
        if settings.uses_redis:
            await _warn_about_redis_eviction(ctx)
        await _migrate(ctx)
        connect = ConnectServices.build(ctx)
        try:
            await connect.registry.check_endpoints()
        finally:
            await connect.close()
        url: str | None = await ctx.store.run(issue_setup_token_if_needed, settings, ctx.clock)
        return url
    finally:
        await ctx.kv.close()
        await ctx.store.run(ctx.store.checkpoint)
        ctx.store.close()


async def _serve(
    settings: Settings,
    on_ready: Callable[[AppContext], Awaitable[None]] | None,
    worker: WorkerRole | None,
) -> int:
    nofile = raise_open_file_limit()
    # The port first: an address in use stops the start before anything is opened or generated.
    # Workers share the port: the kernel spreads new connections over every live one.
    sockets = bind_port(settings, reuse_port=worker is not None)
    ctx = _open_context(settings)
    if settings.uses_redis and worker is None:
        await _warn_about_redis_eviction(ctx)
    app = build_application(ctx)
    registry = app.settings["runtime"].connect.registry
    # Nothing is proxied before the endpoint check below has flagged the connections of a
    # service whose override changed since the last start (DESIGN §9).
    registry.hold_until_checked()
    server = http_server(app)
    server.add_sockets(sockets)
    extra: dict[str, object] = {
        "event": "listening",
        "host": settings.host,
        "port": settings.port,
        "version": __version__,
        "open_files_limit": nofile,
    }
    if worker is not None:
        extra["worker"] = worker.index
    log.info("listening", extra=extra)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The upstream HTTP client's import (~0.3 s) is kept off the start-up path; a worker thread
    # does it now, while the server already answers, so no request waits for it.
    warming = loop.run_in_executor(None, warm_up)
    scheduler = Scheduler(
        ctx.store, ctx.kv, ctx.clock, ctx.instance_id, observe=ctx.metrics.job_run
    )

    first_signal_at: list[float] = []

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # One Ctrl-C under `make run` arrives twice within milliseconds (the terminal
            # signals the whole process group, and make passes it on): that is not a second
            # request. A signal that comes later is, and forces the exit.
            if time.monotonic() - first_signal_at[0] < DUPLICATE_SIGNAL_WINDOW:
                return
            log.warning("second signal: exiting now", extra={"event": "forced_exit"})
            os._exit(1)
        first_signal_at.append(time.monotonic())
        log.info(
            "shutting down", extra={"event": "shutdown", "signal": signal.Signals(signum).name}
        )
        stop.set()

    def on_hup() -> None:
        try:
            changed = ctx.keys.reload()
        except Exception as exc:  # a bad key file keeps the keys we have
            log.error("master key file could not be re-read: %s", exc)
            return
        log.info("master keys re-read", extra={"event": "keys_reloaded", "count": int(changed)})

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if worker is not None:
        worker.watch_supervisor(loop, stop.set)

    try:
        if worker is None:
            await _migrate(ctx)
        # A worker's check finds what the supervisor recorded: it only opens the registry.
        await registry.check_endpoints()
        # A weak new master key stops the start; a weak one already protecting data warns.
        usage = await ctx.store.run(key_usage, ctx.keys.keyring)
        protected = {entry.fingerprint: entry.total for entry in usage.keys}
        for message in check_key_strength(ctx.keys.keyring, protected, ctx.keys.description):
            log.warning(message, extra={"event": "weak_master_key"})
        await ctx.store.run(
            register_instance,
            ctx.instance_id,
            __version__,
            list(ctx.keys.keyring.fingerprints),
            ctx.clock.now(),
        )
        if worker is None:
            setup_url = await ctx.store.run(issue_setup_token_if_needed, settings, ctx.clock)
            if setup_url:
                print_setup_url(setup_url)
                log.info("setup URL printed to stderr", extra={"event": "setup_url_printed"})
        runtime = app.settings["runtime"]
        for job in standard_jobs(ctx, runtime.refresher, runtime.connect.registry):
            scheduler.add(job)
        scheduler.start()
        await warming  # ready means a proxied request is served without waiting for it
        ctx.lifecycle.ready = True
        if worker is not None:
            worker.notify_ready()
        if on_ready is not None:
            await on_ready(ctx)
        await stop.wait()
    finally:
        await _shutdown(ctx, server, scheduler)
        await app.settings["runtime"].close()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    return 0


async def _anchor_audit(ctx: AppContext) -> None:
    """At shutdown: write the pending sign-in failure counts, then log the chain head."""
    try:
        await audit.flush_anonymous(ctx, final=True)
        await audit.log_anchor(ctx)
    except Exception:
        log.warning("could not anchor the audit trail", exc_info=True)


async def _shutdown(ctx: AppContext, server: HTTPServer, scheduler: Scheduler) -> None:
    lifecycle = ctx.lifecycle
    lifecycle.ready = False
    lifecycle.draining = True
    server.stop()
    drained = await lifecycle.wait_idle(ctx.settings.shutdown_timeout)
    if not drained:
        log.warning(
            "closing connections still open after the drain timeout",
            extra={"event": "drain_timeout", "count": lifecycle.inflight},
        )
    await server.close_all_connections()
    await scheduler.stop(timeout=ctx.settings.shutdown_timeout)
    await _anchor_audit(ctx)
    try:
        await ctx.store.run(unregister_instance, ctx.instance_id)
    except Exception:
        log.warning("could not remove the instance record", exc_info=True)
    await ctx.kv.close()
    await ctx.store.run(ctx.store.checkpoint)
    ctx.store.close()
    log.info("stopped", extra={"event": "stopped"})
