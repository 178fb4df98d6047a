"""Running the shipped nginx configuration in front of an appliance (or any HTTP origin).

`packaging/nginx/bindify.conf` is the file operators install. `render_config()` turns it into a
config that runs here, unprivileged paths and all: the "---- TLS ----" section becomes a
plain-HTTP `listen` on loopback, the "---- redirect ----" server is dropped, the upstream points
at the given origin, the shipped access and error logs (their formats and levels unchanged)
move into a scratch directory, and the server block is wrapped in a minimal main config whose
pid, logs and temp folders live there too. Everything else — buffering, timeouts, forwarded
headers, keep-alive — is the operator's file verbatim, so tests that pass through `nginx_in_front`
test what operators run. With `tls=(certificate, key)` the TLS section itself runs instead, on
the loopback port with that certificate.

The wrapper sets http-level defaults a distribution's nginx.conf may have (gzip on for every
type, proxy buffering on); the shipped block must override them for streams to pass.

This module installs nothing: `.ci/run` installs nginx. Without it, `nginx_binary()` skips the
test locally and fails it in CI (`CI` set), so CI cannot silently skip the check.

    with nginx_in_front("http://127.0.0.1:8787", tmp_path) as front:
        http("GET", front.url + "/healthz")
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

__all__ = ["NGINX_CONF", "NginxFront", "nginx_binary", "nginx_in_front", "render_config"]

NGINX_CONF = ROOT / "packaging" / "nginx" / "bindify.conf"

_SECTION = r"[ \t]*# ---- {name}\b[^\n]*\n.*?[ \t]*# ---- end {name} ----\n"
_UPSTREAM_SERVER = re.compile(r"(upstream bindify \{\s*server )\S+;")
_SHIPPED_ACCESS_LOG = "/var/log/nginx/bindify.access.log"
_SHIPPED_ERROR_LOG = "/var/log/nginx/bindify.error.log"


def nginx_binary() -> str:
    """Path of the nginx executable; skip (fail under CI) when it is not installed."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    message = "nginx is not installed (.ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _replace_section(text: str, name: str, replacement: str) -> str:
    pattern = re.compile(_SECTION.format(name=re.escape(name)), re.DOTALL)
    new, count = pattern.subn(replacement, text)
    if count != 1:
        raise ValueError(f"{NGINX_CONF.name}: expected one '---- {name} ----' section")
    return new


def _tls_section(text: str, port: int, cert: Path, key: Path) -> str:
    """The shipped TLS section itself, moved to 127.0.0.1:`port` with the given certificate."""
    pattern = re.compile(_SECTION.format(name="TLS"), re.DOTALL)
    match = pattern.search(text)
    if match is None:
        raise ValueError(f"{NGINX_CONF.name}: expected one '---- TLS ----' section")
    section = re.sub(r"[ \t]*listen \[::\]:443\b[^;]*;\n", "", match.group(0))
    section = re.sub(r"listen 443\b", f"listen 127.0.0.1:{port}", section)
    section = re.sub(r"ssl_certificate \S+;", f"ssl_certificate {cert};", section)
    section = re.sub(r"ssl_certificate_key \S+;", f"ssl_certificate_key {key};", section)
    return text[: match.start()] + section + text[match.end() :]


def render_config(
    upstream: str,
    port: int,
    scratch: Path,
    *,
    tls: tuple[Path, Path] | None = None,
    source: str | None = None,
) -> str:
    """A complete nginx.conf serving the shipped server block on 127.0.0.1:`port`.

    `upstream` is the origin's base URL (`http://host:port`). By default the TLS section becomes
    a plain-HTTP listener; with `tls=(certificate, key)` it stays, on the loopback port, serving
    that certificate. `source` defaults to the shipped file's text.
    """
    text = NGINX_CONF.read_text(encoding="utf-8") if source is None else source
    origin = urlsplit(upstream)
    if origin.scheme != "http" or not origin.hostname or not origin.port:
        raise ValueError("upstream must be http://host:port")
    text = _replace_section(text, "redirect", "")
    if tls is None:
        text = _replace_section(text, "TLS", f"    listen 127.0.0.1:{port};\n")
    else:
        text = _tls_section(text, port, *tls)
    text, count = _UPSTREAM_SERVER.subn(rf"\g<1>{origin.hostname}:{origin.port};", text)
    if count != 1:
        raise ValueError(f"{NGINX_CONF.name}: expected one 'upstream bindify' server line")
    # The shipped log files, with their shipped formats and levels, written to the scratch dir.
    for directive, path, name in (
        ("access_log", _SHIPPED_ACCESS_LOG, "access.log"),
        ("error_log", _SHIPPED_ERROR_LOG, "bindify.error.log"),
    ):
        text, count = re.subn(
            rf"\b{directive} {re.escape(path)}(?=[ ;])", f"{directive} {scratch / name}", text
        )
        if count > 1:  # none: the wrapper's own (unredacted) access log applies
            raise ValueError(f"{NGINX_CONF.name}: expected one '{directive} {path}' in the server")
    temp_paths = "\n".join(
        f"    {kind}_temp_path {scratch / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Workers run as the invoking user when it is not root; as root nginx would switch them to
    # an unprivileged user who cannot open the scratch folders, so keep root in tests only.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\n"
        "worker_processes 1;\n"
        f"pid {scratch / 'nginx.pid'};\n"
        f"error_log {scratch / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {scratch / 'access.log'};\n"
        f"{temp_paths}\n"
        # Defaults a distribution's nginx.conf may set around the included file (Debian's turns
        # gzip on); compression of buffered responses holds SSE events back, so the shipped
        # block must override these for streaming tests to pass.
        "    gzip on; gzip_types *; gzip_min_length 0; proxy_buffering on;\n"
        f"{text}\n"
        "}\n"
    )


@dataclass
class NginxFront:
    """A running nginx: `url` is what clients use instead of the origin's URL."""

    url: str
    scratch: Path
    proc: subprocess.Popen[bytes]

    def error_log(self) -> str:
        """nginx's own log and the shipped server's error log, one after the other."""
        paths = (self.scratch / "error.log", self.scratch / "bindify.error.log")
        return "".join(p.read_text(encoding="utf-8", errors="replace") for p in paths if p.exists())

    def access_log(self) -> str:
        path = self.scratch / "access.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _wait_listening(port: int, proc: subprocess.Popen[bytes], scratch: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (scratch / "error.log").read_text(errors="replace")
            raise AssertionError(f"nginx exited with {proc.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError("nginx did not start listening within 15 s")


@contextmanager
def nginx_in_front(
    upstream: str, scratch: Path, *, tls: tuple[Path, Path] | None = None
) -> Iterator[NginxFront]:
    """Run the shipped nginx config on a free loopback port in front of `upstream`.

    Plain HTTP unless `tls=(certificate, key)` is given; `NginxFront.url` has the right scheme.
    """
    binary = nginx_binary()
    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = scratch / "nginx.conf"
    conf.write_text(render_config(upstream, port, scratch, tls=tls), encoding="utf-8")
    check = subprocess.run(
        [binary, "-t", "-q", "-p", str(scratch), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise AssertionError(f"nginx -t rejected the rendered config: {check.stderr}")
    proc = subprocess.Popen(
        [binary, "-p", str(scratch), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_listening(port, proc, scratch)
        scheme = "https" if tls else "http"
        yield NginxFront(url=f"{scheme}://127.0.0.1:{port}", scratch=scratch, proc=proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # "fast shutdown": closes open streams too
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
