"""Running the shipped Caddyfile in front of an appliance (or any HTTP origin).

`packaging/caddy/Caddyfile` is the file operators install. `render_caddyfile()` makes it run
here, unprivileged: the site address becomes plain HTTP on a loopback port, the reverse proxy
points at the given origin, the access log file moves into a scratch directory, and the global
options block also turns the admin endpoint off (several tests, and other users of this
machine, may run Caddy at once). Everything else — the log formats and their filters, the
streaming options — is the operator's file verbatim, except that Debian's Caddy (2.6) does not
know `stream_close_delay` (Caddy 2.7): with an older Caddy that one line is left out.

This module installs nothing: `.ci/run` installs Debian's `caddy`. Without it, `caddy_binary()`
skips the test locally and fails it in CI (`CI` set).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .appliance import ROOT, free_port

__all__ = ["CADDYFILE", "CaddyFront", "caddy_binary", "caddy_in_front", "render_caddyfile"]

CADDYFILE = ROOT / "packaging" / "caddy" / "Caddyfile"
_SHIPPED_ACCESS_LOG = "/var/log/caddy/bindify.access.log"


def caddy_binary() -> str:
    found = shutil.which("caddy")
    if found:
        return found
    message = "caddy is not installed (.ci/run installs Debian's caddy)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def caddy_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"v?(\d+)\.(\d+)", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


def _one(pattern: str, replacement: str, text: str, what: str, *, optional: bool = False) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count > 1 or (count == 0 and not optional):
        raise ValueError(f"{CADDYFILE.name}: expected one {what}")
    return new


def render_caddyfile(
    upstream: str, port: int, scratch: Path, version: tuple[int, int] = (2, 7)
) -> str:
    origin = urlsplit(upstream)
    if origin.scheme != "http" or not origin.hostname or not origin.port:
        raise ValueError("upstream must be http://host:port")
    text = CADDYFILE.read_text(encoding="utf-8")
    text = _one(r"^bindify\.example\.com \{", f"http://127.0.0.1:{port} {{", text, "site block")
    text = _one(
        r"(\breverse_proxy )127\.0\.0\.1:8787\b",
        rf"\g<1>{origin.hostname}:{origin.port}",
        text,
        "reverse_proxy to 127.0.0.1:8787",
    )
    text = _one(
        rf"(\boutput file ){re.escape(_SHIPPED_ACCESS_LOG)}$",
        rf"\g<1>{scratch / 'access.log'}",
        text,
        "access log file",
        optional=True,  # none: Caddy writes no access log (the test then fails on that)
    )
    if version < (2, 7):
        text = _one(r"^[ \t]*stream_close_delay [^\n]*\n", "", text, "stream_close_delay line")
    # Into the shipped global options block: several Caddies may run here at once.
    if re.search(r"^\{$", text, flags=re.MULTILINE) is None:
        text = "{\n}\n" + text
    return _one(r"^\{$", "{\n\tadmin off", text, "global options block")


@dataclass
class CaddyFront:
    url: str
    scratch: Path
    proc: subprocess.Popen[bytes]

    def access_log(self) -> str:
        path = self.scratch / "access.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def process_log(self) -> str:
        """Caddy's own log (stderr): start-up, and errors such as a failed upstream dial."""
        path = self.scratch / "caddy.stderr"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@contextmanager
def caddy_in_front(upstream: str, scratch: Path) -> Iterator[CaddyFront]:
    binary = caddy_binary()
    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = scratch / "Caddyfile"
    conf.write_text(
        render_caddyfile(upstream, port, scratch, caddy_version(binary)), encoding="utf-8"
    )
    # Caddy keeps state under $HOME/XDG folders: keep them in the scratch folder.
    env = {
        **os.environ,
        "HOME": str(scratch),
        "XDG_DATA_HOME": str(scratch / "data"),
        "XDG_CONFIG_HOME": str(scratch / "config"),
    }
    check = subprocess.run(
        [binary, "validate", "--adapter", "caddyfile", "--config", str(conf)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if check.returncode != 0:
        raise AssertionError(f"caddy validate rejected the rendered Caddyfile: {check.stderr}")
    with (scratch / "caddy.stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            [binary, "run", "--adapter", "caddyfile", "--config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            start_new_session=True,
        )
        front = CaddyFront(url=f"http://127.0.0.1:{port}", scratch=scratch, proc=proc)
        try:
            _wait_listening(port, front)
            yield front
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _wait_listening(port: int, front: CaddyFront) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if front.proc.poll() is not None:
            raise AssertionError(
                f"caddy exited with {front.proc.returncode}: {front.process_log()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("caddy did not start listening within 15 s")
