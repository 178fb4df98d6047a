"""Key and configuration files restored with loose permissions stop the start (DESIGN §4, §9).

A backup restored with `cp` or `tar` under another umask can leave `master-keys.json`,
`secret-key` or `config.toml` readable by the group or everyone. The real `bindify serve`
process then refuses to start with one line naming the file and the `chmod` that fixes it, and
starts normally once that command was run. A data directory opened up the same way is ours to
close: it is tightened to 0700 with a warning.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from support.appliance import Appliance, base_env, bindify_command, free_port


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after a first start: master-keys.json, secret-key, bindify.db."""
    data = tmp_path_factory.mktemp("template") / "data"
    app = Appliance(data).start()
    assert app.stop() == 0
    (data / "config.toml").write_text('log_level = "info"\n')
    (data / "config.toml").chmod(0o600)
    return data


def _serve_refused(data: Path) -> subprocess.CompletedProcess[str]:
    """Run `bindify serve`; fail the test if it is still running after 15 s (it started)."""
    env = base_env(data, {"BINDIFY_PORT": str(free_port())})
    proc = subprocess.Popen(
        [*bindify_command(), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("bindify serve started instead of refusing")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _copy(template: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(template, data, symlinks=True)
    return data


@pytest.mark.binary
@pytest.mark.parametrize("name", ["master-keys.json", "secret-key", "config.toml"])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_loose_key_or_config_file_refuses_the_start(
    template: Path, tmp_path: Path, name: str, mode: int
) -> None:
    data = _copy(template, tmp_path)
    target = data / name
    target.chmod(mode)
    result = _serve_refused(data)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("bindify: ")
    assert str(target) in line and f"chmod 600 {target}" in line
    assert f"{mode:04o}"[1:] in line  # the mode it found
    assert stat.S_IMODE(target.stat().st_mode) == mode  # refused, not changed

    # The fix the line names is all it takes.
    target.chmod(0o600)
    app = Appliance(data).start()
    assert app.stop() == 0


@pytest.mark.binary
def test_an_open_data_directory_is_tightened_with_a_warning(template: Path, tmp_path: Path) -> None:
    data = _copy(template, tmp_path)
    data.chmod(0o755)
    app = Appliance(data).start()
    assert app.stop() == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    warnings = [r for r in app.log_records() if r.get("event") == "data_dir_permissions"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "0755" in warnings[0]["msg"] and "0700" in warnings[0]["msg"]
