"""The first hour from a fresh clone: start-up errors, flags, the data directory (DESIGN §3).

Through the real CLI process, the way an operator meets each of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.appliance import Appliance, run_cli
from support.ports import free_socket

PASSWORD = "a long enough password\n"


def _plain_lines(stderr: str) -> list[str]:
    """stderr without the JSON log records: what a person reads as the error."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("{")]


@pytest.mark.parametrize("workers", [1, 2])
def test_port_in_use_is_one_line_naming_port_and_option(
    tmp_path: Path, workers: int, redis_url: str
) -> None:
    env = {"BINDIFY_WORKERS": str(workers)}
    if workers > 1:  # the supervisor checks the port before it starts any worker
        env["BINDIFY_KV_URL"] = redis_url
    holders, port = free_socket()  # listening: the port is taken
    try:
        done = run_cli(["serve"], tmp_path / "data", env={**env, "BINDIFY_PORT": str(port)})
    finally:
        for holder in holders:
            holder.close()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = _plain_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bindify: ")
    assert f"127.0.0.1:{port}" in lines[0]
    assert "--port" in lines[0] and "BINDIFY_PORT" in lines[0]


def test_boolean_flags_need_no_value(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # A boolean flag alone means true, even right before a positional argument.
    made = run_cli(
        ["admin", "create-user", "--allow-private-upstreams", "a@example.com"],
        data,
        stdin=PASSWORD,
    )
    assert made.returncode == 0, made.stderr
    assert "a@example.com" in made.stderr
    status = run_cli(["migrate", "--status", "--single-instance"], data)
    assert status.returncode == 0, status.stderr


def test_boolean_flags_keep_explicit_values(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (
        ["--single-instance", "true"],
        ["--single-instance", "false"],
        ["--single-instance=false"],
        ["--single-instance=yes"],
    ):
        done = run_cli(["migrate", "--status", *args], data)
        assert done.returncode == 0, (args, done.stderr)
    bad = run_cli(["migrate", "--status", "--single-instance=maybe"], data)
    assert bad.returncode == 1
    assert _plain_lines(bad.stderr)[-1] == "bindify: --single-instance: must be true or false"


def test_cli_names_the_data_directory_and_says_when_it_creates_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run_cli(["admin", "create-user", "ops@example.com", "--admin"], data, stdin=PASSWORD)
    assert first.returncode == 0, first.stderr
    assert f"created a new data directory {data}" in first.stderr
    assert first.stdout == ""  # stdout stays for values scripts read
    again = run_cli(["admin", "create-token", "ops@example.com"], data)
    assert again.returncode == 0, again.stderr
    assert f"bindify: data directory {data}" in again.stderr
    assert "created" not in again.stderr
    assert again.stdout.startswith("bndpat_") and len(again.stdout.splitlines()) == 1


def test_a_relative_data_directory_is_named_as_an_absolute_path(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cli(
        ["admin", "create-user", "ops@example.com", "--admin"],
        Path("bindify-data"),
        stdin=PASSWORD,
        cwd=elsewhere,
    )
    assert done.returncode == 0, done.stderr
    assert f"created a new data directory {elsewhere / 'bindify-data'}" in done.stderr


def test_listening_line_names_the_open_file_limit(tmp_path: Path) -> None:
    app = Appliance(tmp_path / "data").start()
    assert app.stop() == 0
    (listening,) = [r for r in app.log_records() if r.get("event") == "listening"]
    assert isinstance(listening["open_files_limit"], int) and listening["open_files_limit"] > 0
    assert "count" not in listening


def test_serve_logs_its_data_directory_and_whether_it_is_new(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for expected in ("data_dir_created", "data_dir"):
        app = Appliance(data).start()
        assert app.stop() == 0
        (line,) = [r for r in app.log_records() if str(r.get("event")).startswith("data_dir")]
        assert line["event"] == expected
        assert str(data) in line["msg"]
        app.stderr_path.unlink()


def test_preflight_masks_a_password_in_the_urls_it_prints() -> None:
    from preflight import shown

    assert shown("postgresql://u:s3cret@db:5432/postgres") == "postgresql://u:***@db:5432/postgres"
    assert shown("redis://127.0.0.1:6379/6") == "redis://127.0.0.1:6379/6"
