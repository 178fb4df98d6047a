"""`bindify serve --workers N`: one supervisor process, N worker processes, one port (DESIGN §14).

The supervisor does the first-start work once, before any worker runs: data directory and key
files, migrations and their backup, the service endpoint check, the setup token. It holds the
data directory's lock for its whole life, then starts N workers (`bindify _worker`, a fresh
interpreter each: no state is inherited through `fork`). Each worker binds the port itself with
SO_REUSEPORT, so the kernel spreads new connections over the live workers and a dead worker's
share goes to the others at once.

Invariants:
- Workers never take the lock, never migrate and never print the setup URL; the supervisor never
  serves a request and never opens the KV.
- More than one worker needs a shared KV (`BINDIFY_KV_URL=redis://…`): an explicit N > 1 without
  it is refused before anything starts; `auto` without it runs one worker (today's single
  process, no supervisor) and logs why.
- A worker that exits while the supervisor is not stopping is started again (at once the first
  time, then with a growing pause while it keeps dying young). A worker that dies before it was
  ever ready during the first start stops everything: exit 1 (a wrong port or an unreachable
  Redis would otherwise restart forever).
- Signals reach workers only through the supervisor (each worker has its own process group):
  SIGHUP is passed on; SIGTERM/SIGINT become one SIGTERM per worker, each worker drains (in-flight
  calls and streams complete) and the supervisor exits 0 when every worker did. A second signal,
  later than the duplicate window, is passed on too: the workers then exit at once.
- A worker notices its supervisor's death (the lifeline pipe reaches end-of-file: only the
  supervisor holds its write end) and shuts down the graceful way, so a killed supervisor never
  leaves orphans holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bindify_appliance.config import Settings
from bindify_appliance.errors import ConfigError
from bindify_appliance.ops.metrics import MULTIPROC_ENV
from bindify_appliance.worker_role import READY_BYTE, WorkerRole

__all__ = ["WorkerRole", "plan_workers", "run_supervisor", "self_command"]

log = logging.getLogger(__name__)

# A worker that lived at least this long had a real life: its next death restarts it at once.
HEALTHY_AFTER = 30.0
MAX_RESTART_PAUSE = 8.0  # below the 10 s a replaced worker may take
FIRST_START_TIMEOUT = 120.0
POLL_INTERVAL = 0.1
# After the drain and the jobs' stop (each up to shutdown_timeout), this much more for the rest.
STOP_MARGIN = 10.0
DUPLICATE_SIGNAL_WINDOW = 0.1
# How the supervisor tells the whole group something (only its value matters to nobody).


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_workers(settings: Settings, cpus: int | None = None) -> tuple[int, str | None]:
    """How many workers to run, and why fewer than asked when that is so.

    Raises:
        ConfigError: an explicit count above one without a shared KV.
    """
    if settings.workers == "auto":
        count = cpus if cpus is not None else cpu_count()
        if count > 1 and not settings.uses_redis:
            return 1, (
                "BINDIFY_WORKERS=auto runs one worker: several need a shared KV "
                "(set BINDIFY_KV_URL=redis://…)"
            )
        return max(count, 1), None
    count = int(settings.workers)
    if count > 1 and not settings.uses_redis:
        raise ConfigError(
            f"BINDIFY_WORKERS={count} needs a KV shared by the workers: set "
            "BINDIFY_KV_URL=redis://… (or run one worker)"
        )
    return count, None


def self_command() -> list[str]:
    """How to run this program again: the frozen executable, or this interpreter and package."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "bindify_appliance"]


# ----------------------------------------------------------------------------- supervisor side


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    ready_fd: int  # our read end of the worker's ready pipe
    started: float
    ready: bool = False

    def poll_ready(self) -> None:
        if self.ready:
            return
        try:
            data = os.read(self.ready_fd, 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data == READY_BYTE:
            self.ready = True
            os.close(self.ready_fd)


@dataclass
class _Supervisor:
    settings: Settings
    count: int
    worker_args: Sequence[str]
    workers: dict[int, _Worker] = field(default_factory=dict)
    deaths: dict[int, int] = field(default_factory=dict)  # young deaths in a row, per index
    stopping_at: float | None = None
    signals: list[float] = field(default_factory=list)
    metrics_dir: str | None = None  # prometheus-client's multiprocess folder, shared by workers

    def __post_init__(self) -> None:
        # The lifeline: workers get the read end; only this process holds the write end.
        self.lifeline_r, self.lifeline_w = os.pipe()

    def buried(self, worker: _Worker) -> None:
        """A worker exited: its live gauges (open streams) stop counting in the sum."""
        if self.metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.proc.pid, path=self.metrics_dir)  # type: ignore[no-untyped-call]

    def spawn(self, index: int) -> None:
        ready_r, ready_w = os.pipe()
        os.set_blocking(ready_r, False)
        argv = [
            *self_command(),
            "_worker",
            f"--worker-index={index}",
            f"--ready-fd={ready_w}",
            f"--lifeline-fd={self.lifeline_r}",
            *self.worker_args,
        ]
        try:
            # process_group=0: a terminal's Ctrl-C reaches the supervisor alone, which passes
            # one SIGTERM on; a worker never sees the same stop twice.
            proc = subprocess.Popen(argv, pass_fds=(ready_w, self.lifeline_r), process_group=0)
        finally:
            os.close(ready_w)
        self.workers[index] = _Worker(index, proc, ready_r, time.monotonic())
        log.info("worker started", extra={"event": "worker_started", "worker": index})

    def signal_all(self, signum: int) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signum)

    def on_stop_signal(self, signum: int, _frame: object) -> None:
        now = time.monotonic()
        if self.signals and now - self.signals[-1] < DUPLICATE_SIGNAL_WINDOW:
            return
        self.signals.append(now)
        if self.stopping_at is None:
            self.stopping_at = now
            log.info(
                "shutting down the workers",
                extra={"event": "shutdown", "signal": signal.Signals(signum).name},
            )
        self.signal_all(signal.SIGTERM)

    def on_hup(self, _signum: int, _frame: object) -> None:
        log.info("passing SIGHUP to the workers", extra={"event": "reload"})
        self.signal_all(signal.SIGHUP)

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.on_stop_signal)
        signal.signal(signal.SIGINT, self.on_stop_signal)
        signal.signal(signal.SIGHUP, self.on_hup)

    def first_start(self) -> bool:
        """Start every worker and wait until all are ready; False if one died first."""
        for index in range(self.count):
            self.spawn(index)
        deadline = time.monotonic() + FIRST_START_TIMEOUT
        while self.stopping_at is None:
            for worker in self.workers.values():
                worker.poll_ready()
                if not worker.ready and worker.proc.poll() is not None:
                    log.error(
                        "a worker exited before it was ready; stopping",
                        extra={"event": "worker_failed", "status": worker.proc.returncode},
                    )
                    return False
            if all(w.ready for w in self.workers.values()):
                return True
            if time.monotonic() > deadline:
                log.error("workers not ready in time; stopping", extra={"event": "worker_failed"})
                return False
            time.sleep(POLL_INTERVAL)
        return True

    def keep_running(self) -> None:
        """Restart dead workers until a stop signal."""
        pending: dict[int, float] = {}  # index -> when to start it again
        while self.stopping_at is None:
            now = time.monotonic()
            for index, worker in list(self.workers.items()):
                worker.poll_ready()
                code = worker.proc.poll()
                if code is None or index in pending:
                    continue
                lived = now - worker.started
                young = self.deaths.get(index, 0) + 1 if lived < HEALTHY_AFTER else 0
                self.deaths[index] = young
                pause = 0.0 if young <= 1 else min(0.5 * 2 ** (young - 2), MAX_RESTART_PAUSE)
                pending[index] = now + pause
                self.buried(worker)
                log.warning(
                    "a worker exited; starting it again",
                    extra={"event": "worker_exited", "status": code, "worker": index},
                )
            for index, when in list(pending.items()):
                if now >= when and self.stopping_at is None:
                    del pending[index]
                    self._close_ready(self.workers[index])
                    self.spawn(index)
            time.sleep(POLL_INTERVAL)

    def wait_stopped(self) -> int:
        """Every worker drains; SIGKILL for any still running long after; 0 if all stopped
        cleanly."""
        deadline = time.monotonic() + 2 * self.settings.shutdown_timeout + STOP_MARGIN
        codes: list[int] = []
        for worker in self.workers.values():
            try:
                code = worker.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("a worker did not stop in time", extra={"event": "forced_exit"})
                worker.proc.kill()
                code = worker.proc.wait()
            worker.poll_ready()
            # A worker still starting has nothing in flight: SIGTERM ending it is a clean stop.
            clean = code == 0 or (not worker.ready and code == -signal.SIGTERM)
            codes.append(0 if clean else code)
            self._close_ready(worker)
        return 0 if all(code == 0 for code in codes) else 1

    @staticmethod
    def _close_ready(worker: _Worker) -> None:
        if not worker.ready:
            with contextlib.suppress(OSError):
                os.close(worker.ready_fd)

    def close(self) -> None:
        for fd in (self.lifeline_r, self.lifeline_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def run_supervisor(settings: Settings, count: int, worker_args: Sequence[str]) -> int:
    """Do the first-start work, run `count` workers until SIGTERM; the exit status.

    `worker_args` are the command-line options the workers get (the supervisor's own), so that a
    worker reads exactly the supervisor's configuration (flags, environment, config.toml).
    """
    from bindify_appliance.datadir import DataDirLock, ensure_data_dir
    from bindify_appliance.logs import configure_logging
    from bindify_appliance.server import (
        bind_port,
        first_start,
        log_data_dir,
        print_setup_url,
        raise_open_file_limit,
    )

    configure_logging(settings.log_level, settings.log_format)
    existed = settings.data_path.is_dir()
    data_dir = ensure_data_dir(settings)
    lock = DataDirLock.acquire(data_dir)
    log_data_dir(settings, created=not existed)
    metrics_dir, made_here = _shared_metrics_dir()
    sup = _Supervisor(settings, count, worker_args, metrics_dir=metrics_dir)
    try:
        # A port in use is one line now, not N workers' failures later: a trial bind, closed
        # at once (the workers bind it themselves, with SO_REUSEPORT like this one).
        for sock in bind_port(settings, reuse_port=True):
            sock.close()
        raise_open_file_limit()  # inherited by the workers
        setup_url = asyncio.run(first_start(settings))
        sup.install_signals()
        log.info("starting workers", extra={"event": "workers", "count": count})
        if not sup.first_start():
            sup.signal_all(signal.SIGTERM)
            sup.wait_stopped()
            return 1
        if sup.stopping_at is None:
            log.info("all workers ready", extra={"event": "workers_ready", "count": count})
            if setup_url:
                print_setup_url(setup_url)
                log.info("setup URL printed to stderr", extra={"event": "setup_url_printed"})
            sup.keep_running()
        status = sup.wait_stopped()
        log.info("stopped", extra={"event": "stopped"})
        return status
    finally:
        sup.close()
        lock.release()
        if made_here:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _shared_metrics_dir() -> tuple[str, bool]:
    """The folder in which every worker's metrics add up (DESIGN §12: summed over workers).

    prometheus-client picks its multiprocess value class from `PROMETHEUS_MULTIPROC_DIR` at its
    first import, so the variable is set here, before any worker starts, and inherited. An
    operator's own folder is emptied (figures of an earlier run would add up too); otherwise a
    private temporary folder (0700) is made and removed at exit. Returns (folder, made here).
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.unlink(os.path.join(given, name))
        return given, False
    folder = tempfile.mkdtemp(prefix="bindify-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    return folder, True
