"""Running the real appliance as a separate process, the way users run it.

`bindify_command()` is `python -m bindify_appliance`, or the frozen executable when
`BINDIFY_TEST_BINARY` names one (the packaging job runs the `binary`-marked tests that way).
`serving_tools()` is such a process with an administrator and an API-key service `tools` in
front of a real MCP upstream (the client, OAuth end-to-end and serve-process tests share it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ports import free_port

__all__ = [
    "Appliance",
    "ServedTools",
    "admin_token",
    "api_post",
    "base_env",
    "bindify_command",
    "free_port",
    "http",
    "run_cli",
    "running",
    "serving_tools",
]

ROOT = Path(__file__).resolve().parents[2]


def bindify_command() -> list[str]:
    binary = os.environ.get("BINDIFY_TEST_BINARY")
    if binary:
        return [binary]
    return [sys.executable, "-m", "bindify_appliance"]


def base_env(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINDIFY_")}
    env.update(
        {"BINDIFY_DATA_DIR": str(data_dir), "BINDIFY_LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    )
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str],
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*bindify_command(), *args],
        env=base_env(data_dir, env),
        input=stdin,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


class Appliance:
    """A `bindify serve` process on a free port with its own data directory."""

    def __init__(
        self, data_dir: Path, env: Mapping[str, str] | None = None, port: int | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = base_env(data_dir, {"BINDIFY_PORT": str(self.port), **(env or {})})
        self.stderr_path = data_dir.parent / f"serve-{self.port}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Appliance:
        self._stderr = self.stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [*bindify_command(), "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}: {self.stderr()}")
            try:
                status, _, _ = http("GET", self.url + "/readyz", timeout=2)
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not ready within {timeout}s: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._stderr.close()
        return code

    def wait(self, timeout: float = 30) -> int:
        """Wait for the process to exit on its own (after a signal the test sent itself)."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        stderr = getattr(self, "_stderr", None)
        if stderr is not None:
            stderr.close()  # an unclosed log file would warn inside some later test


@contextmanager
def running(data_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[Appliance]:
    app = Appliance(data_dir, env).start()
    try:
        yield app
    finally:
        app.kill()


def admin_token(data_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """Create an administrator with the CLI (before `serve` starts) and return a personal token."""
    made = run_cli(
        ["admin", "create-user", "ops@example.com", "--admin"],
        data_dir,
        env=env,
        stdin="a long enough password\n",
    )
    assert made.returncode == 0, made.stderr
    token = run_cli(["admin", "create-token", "ops@example.com"], data_dir, env=env)
    assert token.returncode == 0, token.stderr
    return token.stdout.strip()


def api_post(app: Appliance, token: str, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST JSON to the admin API; assert 201 and return the decoded answer."""
    status, _, raw = http(
        "POST",
        app.url + "/api/v1" + path,
        body=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert status == 201, raw
    answer: dict[str, Any] = json.loads(raw)
    return answer


@dataclass(frozen=True)
class ServedTools:
    """A running `bindify serve` whose administrator added the API-key service `tools`."""

    app: Appliance
    token: str  # the administrator's personal token (API calls)

    @property
    def resource(self) -> str:
        return self.app.url + "/mcp/tools"

    def connect(self, mode: str = "managed", label: str | None = None) -> dict[str, Any]:
        """A connection to `tools` (`mode`: managed or zero_knowledge); the API's 201 answer."""
        body = {"service": "tools", "api_key": "upstream-key", "key_storage_mode": mode}
        if label is not None:
            body["label"] = label
        return api_post(self.app, self.token, "/connections", body)


@contextmanager
def serving_tools(data_dir: Path, upstream_origin: str) -> Iterator[ServedTools]:
    """`bindify serve` on `data_dir` (private upstreams allowed) with the service `tools` on the
    MCP server at `upstream_origin`; stopped with SIGTERM at the end, which must exit 0."""
    token = admin_token(data_dir)
    app = Appliance(data_dir, {"BINDIFY_ALLOW_PRIVATE_UPSTREAMS": "true"}).start()
    try:
        service = {
            "id": "tools",
            "name": "Team Tools",
            "mcp_url": upstream_origin + "/mcp",
            "auth": {"type": "api_key", "header": "X-Api-Key", "prefix": ""},
        }
        api_post(app, token, "/services", service)
        yield ServedTools(app, token)
    finally:
        code = app.stop()
    assert code == 0, app.stderr()[-2000:]
