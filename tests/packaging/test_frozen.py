"""Signals as operators send them, to `bindify serve` from a checkout and from the executable.

The one-file executable runs as a launcher (PyInstaller's bootloader) plus the Python process,
so two things differ from a checkout unless packaging/entry.py corrects them: Ctrl-C in a
terminal (SIGINT to the whole process group) used to reach the server twice, which it takes as
"exit now, skip draining"; and killing the launcher outright used to leave the server running
as an orphan that holds the port and the data directory. With `BINDIFY_TEST_BINARY` set (the
packaging job) these run against the executable; from a checkout they pin the behaviour to match.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support.appliance import Appliance, http


def _closed(port: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.binary
def test_ctrl_c_to_the_whole_process_group_drains_once_and_exits_0(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    assert app.proc is not None
    # Appliance starts the command in a new session, so its group id is the launcher's pid.
    os.killpg(app.proc.pid, signal.SIGINT)
    # Signal 0 sends nothing: just wait for the exit the SIGINT started.
    assert app.stop(0, timeout=30) == 0
    events = [r.get("event") for r in app.log_records()]
    assert events.count("shutdown") == 1
    assert "stopped" in events
    assert "forced_exit" not in events


@pytest.mark.binary
def test_killing_the_launcher_stops_the_server_too(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = Appliance(data).start()
    assert app.stop(signal.SIGKILL) == -signal.SIGKILL
    assert _closed(app.port), "the server outlived its launcher"
    # The data directory lock was released: a new instance starts on the same directory.
    again = Appliance(data, port=app.port).start()
    try:
        status, _, _ = http("GET", again.url + "/healthz")
        assert status == 200
    finally:
        assert again.stop() == 0
