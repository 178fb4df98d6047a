"""MCP peers as subprocesses: `UpstreamProcess` serves a script from `tests/peers/` on a
listening socket this test process owns, so the port is known before the process starts and a
restart (same socket, new process) keeps it. `running_peer()` is one started for a `with` block.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .ports import free_socket

__all__ = ["PEERS", "UpstreamProcess", "running_peer"]

PEERS = Path(__file__).resolve().parents[1] / "peers"


class UpstreamProcess:
    """An MCP server subprocess on a socket this test process owns."""

    def __init__(self, python: Path | str, script: str, *args: str) -> None:
        self.python = str(python)
        self.script = str(PEERS / script)
        self.args = list(args)
        sockets, self.port = free_socket()
        self.sock = sockets[0]
        self.sock.listen(1024)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [self.python, self.script, "--fd", str(fd), *self.args],
            pass_fds=(fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"upstream {self.script} exited: {err[-2000:]}")
            try:
                urllib.request.urlopen(self.origin + "/", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # any HTTP answer means it serves
            except (urllib.error.URLError, OSError, TimeoutError):
                time.sleep(0.1)
        raise RuntimeError(f"upstream {self.script} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # No graceful shutdown: uvicorn would wait for open streams; tests need none.
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self.sock.close()


@contextmanager
def running_peer(
    script: str, *args: str, python: Path | str = sys.executable
) -> Iterator[UpstreamProcess]:
    """`script` (in `tests/peers/`) serving until the block ends."""
    peer = UpstreamProcess(python, script, *args)
    peer.start()
    try:
        yield peer
    finally:
        peer.close()
