"""The systemd unit: checked by systemd itself (offline) and against the appliance's own defaults.

`packaging/systemd/verify.sh` runs `systemd-analyze verify` (any warning fails) and the offline
security score; systemd need not be running, only installed (`.ci/run` installs it if absent).
The rest reads the unit: the hardening the issue asks for, and a stop timeout that leaves the
appliance time to drain (it can take up to twice BINDIFY_SHUTDOWN_TIMEOUT: draining, then
waiting for a running job).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from support.appliance import ROOT

from bindify_appliance.config import Settings

UNIT = ROOT / "packaging" / "systemd" / "bindify.service"
VERIFY = ROOT / "packaging" / "systemd" / "verify.sh"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        key, _, value = line.partition("=")
        sections[current][key.strip()].append(value.strip())
    return sections


def _systemd_analyze() -> None:
    if shutil.which("systemd-analyze"):
        return
    message = "systemd-analyze is not installed (.ci/run installs the systemd package)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _stub_executable(tmp_path: Path) -> Path:
    binary = os.environ.get("BINDIFY_TEST_BINARY")
    if binary:
        return Path(binary)
    stub = tmp_path / "bindify"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return stub


def run_verify(tmp_path: Path, unit: Path = UNIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VERIFY), str(_stub_executable(tmp_path)), str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.binary
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    _systemd_analyze()
    result = run_verify(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "verify clean" in result.stdout
    assert "Overall exposure level" in result.stdout


def test_verify_fails_on_a_misspelt_directive_and_on_weak_sandboxing(tmp_path: Path) -> None:
    _systemd_analyze()
    text = UNIT.read_text()
    misspelt = tmp_path / "misspelt" / "bindify.service"
    misspelt.parent.mkdir()
    misspelt.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    result = run_verify(tmp_path, misspelt)
    assert result.returncode == 1
    assert "ProtectSystm" in result.stderr

    weak = tmp_path / "weak" / "bindify.service"
    weak.parent.mkdir()
    kept = [
        line
        for line in text.splitlines()
        if not line.startswith(("Protect", "Restrict", "SystemCall", "Private", "Capability"))
    ]
    weak.write_text("\n".join(kept) + "\n")
    result = run_verify(tmp_path, weak)
    assert result.returncode == 1
    assert "exposure above" in result.stderr


def test_unit_runs_as_a_dedicated_user_with_the_requested_hardening() -> None:
    service = parse_unit(UNIT.read_text())["Service"]

    def one(key: str) -> str:
        values = service.get(key, [])
        assert len(values) == 1, f"{key}: {values}"
        return values[0]

    assert one("User") == "bindify" and one("Group") == "bindify"
    assert one("StateDirectory") == "bindify"
    assert one("StateDirectoryMode") == "0700"
    assert "BINDIFY_DATA_DIR=/var/lib/bindify" in service["Environment"]
    assert one("ExecStart") == "/usr/local/bin/bindify serve"
    assert "BINDIFY_WORKERS=auto" in service["Environment"]  # every core (with Redis)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "LimitNOFILE": "65536",
        "Restart": "on-failure",
        # SIGTERM to the main process only: the one-file bootloader forwards it once.
        "KillMode": "mixed",
        "KillSignal": "SIGTERM",
    }.items():
        assert one(key) == value, key
    assert one("CapabilityBoundingSet") == ""


def test_stop_timeout_leaves_room_for_draining_and_the_last_job() -> None:
    service = parse_unit(UNIT.read_text())["Service"]
    (timeout,) = service["TimeoutStopSec"]
    shutdown_default = Settings().shutdown_timeout
    assert int(timeout) > 2 * shutdown_default, (timeout, shutdown_default)


def _bytes(value: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


def test_unit_caps_memory_and_tasks() -> None:
    # A leak or a flood of streams ends in a restart of this unit, not the host's OOM killer
    # picking a victim; a runaway thread or fork count stops at a bound.
    service = parse_unit(UNIT.read_text())["Service"]
    (memory_max,) = service["MemoryMax"]
    (memory_high,) = service["MemoryHigh"]
    (tasks_max,) = service["TasksMax"]
    # ~40 MiB at rest and ~30 KiB per open stream (reference figures): room for 10 000
    # streams with a worker or two, and throttling (MemoryHigh) before the hard stop.
    assert 512 << 20 <= _bytes(memory_high) < _bytes(memory_max) <= 4 << 30
    assert 128 <= int(tasks_max) <= 4096
