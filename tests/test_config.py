"""Configuration: precedence, validation, secrets from files, refusals, README in sync."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from bindify_appliance.cli import build_parser
from bindify_appliance.config import load_settings, options
from bindify_appliance.config_docs import docs_table
from bindify_appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults(tmp_path: Path) -> None:
    s = load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path)}, stderr_is_tty=False)
    assert s.host == "127.0.0.1" and s.port == 8787
    assert s.base_url == "http://127.0.0.1:8787"
    assert s.database_url == f"sqlite:///{tmp_path}/bindify.db"
    assert s.kv_url == "memory://"
    assert s.log_format == "json"
    assert s.shutdown_timeout == 10.0
    assert s.sources["port"] == "default"


def test_tty_gets_text_logs(tmp_path: Path) -> None:
    s = load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path)}, stderr_is_tty=True)
    assert s.log_format == "text"


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('port = 9001\nlog_level = "debug"\nhost = "0.0.0.0"\n')
    env = {"BINDIFY_DATA_DIR": str(tmp_path), "BINDIFY_PORT": "9002", "BINDIFY_HOST": "::1"}
    s = load_settings({"port": "9003"}, env)
    assert s.port == 9003 and s.sources["port"] == "flag"
    assert s.host == "::1" and s.sources["host"] == "env"
    assert s.log_level == "debug" and s.sources["log_level"] == "file"
    assert s.base_url == "http://[::1]:9003"
    s = load_settings({}, env)
    assert s.port == 9002
    s = load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path)})
    assert s.port == 9001
    assert s.base_url == "http://127.0.0.1:9001"  # 0.0.0.0 is not a URL a browser can use


def test_flag_data_dir_decides_config_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.toml").write_text("port = 1111\n")
    s = load_settings({"data_dir": str(tmp_path / "a")}, {"BINDIFY_DATA_DIR": str(tmp_path)})
    assert s.port == 1111


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "sk"
    secret.write_text("e0727a74a0b39b28b758bcede09e7f3f8b7af1a2efaf0611ce7bfdba2f23f63d" + "\n")
    s = load_settings(
        {}, {"BINDIFY_DATA_DIR": str(tmp_path), "BINDIFY_SECRET_KEY_FILE": str(secret)}
    )
    assert s.secret_key == "e0727a74a0b39b28b758bcede09e7f3f8b7af1a2efaf0611ce7bfdba2f23f63d"


def test_secret_both_forms_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BINDIFY_SECRET_KEY and BINDIFY_SECRET_KEY_FILE"):
        load_settings(
            {},
            {
                "BINDIFY_SECRET_KEY": "a",
                "BINDIFY_SECRET_KEY_FILE": "/x",
                "BINDIFY_DATA_DIR": str(tmp_path),
            },
        )


def test_missing_secret_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BINDIFY_SECRET_KEY_FILE"):
        load_settings(
            {},
            {"BINDIFY_SECRET_KEY_FILE": str(tmp_path / "nope"), "BINDIFY_DATA_DIR": str(tmp_path)},
        )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"BINDIFY_PORT": "http"}, "BINDIFY_PORT"),
        ({"BINDIFY_PORT": "70000"}, "BINDIFY_PORT"),
        ({"BINDIFY_LOG_LEVEL": "loud"}, "BINDIFY_LOG_LEVEL"),
        ({"BINDIFY_BASE_URL": "ftp://x"}, "BINDIFY_BASE_URL"),
        ({"BINDIFY_BASE_URL": "https://u:p@x"}, "BINDIFY_BASE_URL"),
        ({"BINDIFY_TRUSTED_PROXIES": "10.0.0.0/8,nonsense"}, "BINDIFY_TRUSTED_PROXIES"),
        ({"BINDIFY_SINGLE_INSTANCE": "maybe"}, "BINDIFY_SINGLE_INSTANCE"),
        ({"BINDIFY_SHUTDOWN_TIMEOUT": "-1"}, "BINDIFY_SHUTDOWN_TIMEOUT"),
        ({"BINDIFY_DATABASE_URL": "mysql://x/y"}, "BINDIFY_DATABASE_URL"),
        ({"BINDIFY_KV_URL": "memcached://x"}, "BINDIFY_KV_URL"),
        ({"BINDIFY_ALLOWED_ORIGINS": "https://a.example/path"}, "BINDIFY_ALLOWED_ORIGINS"),
        ({"BINDIFY_LINEAR_TOKEN_URL": "not a url"}, "BINDIFY_LINEAR_TOKEN_URL"),
    ],
)
def test_invalid_values_name_the_option(tmp_path: Path, env: dict[str, str], named: str) -> None:
    env = {**env, "BINDIFY_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError) as info:
        load_settings({}, env)
    message = str(info.value)
    assert message.startswith(named + ":")
    assert "\n" not in message


def test_invalid_flag_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--port:"):
        load_settings({"port": "x"}, {"BINDIFY_DATA_DIR": str(tmp_path)})


def test_secret_value_never_in_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {},
            {
                "BINDIFY_DATA_DIR": str(tmp_path),
                "BINDIFY_DATABASE_URL": "mysql://root:hunter2secret@db/x",
            },
        )
    assert "hunter2secret" not in str(info.value)


def test_config_file_errors(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("nonsense = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'nonsense'"):
        load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path)})
    (tmp_path / "config.toml").write_text("port = [\n")
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path)})
    (tmp_path / "config.toml").write_text('port = "abc"\n')
    with pytest.raises(ConfigError, match="config.toml: port"):
        load_settings({}, {"BINDIFY_DATA_DIR": str(tmp_path)})


def test_lists_from_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('allowed_origins = ["https://A.example"]\n')
    s = load_settings(
        {}, {"BINDIFY_DATA_DIR": str(tmp_path), "BINDIFY_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}
    )
    assert s.trusted_proxies == ("10.0.0.0/8", "127.0.0.1/32")
    assert s.allowed_origins == ("https://a.example",)


def test_service_overrides(tmp_path: Path) -> None:
    secret = tmp_path / "cs"
    secret.write_text("topsecret\n")
    s = load_settings(
        {},
        {
            "BINDIFY_DATA_DIR": str(tmp_path),
            "BINDIFY_LINEAR_TOKEN_URL": "http://127.0.0.1:9/token/",
            "BINDIFY_GITHUB_CLIENT_SECRET_FILE": str(secret),
        },
    )
    assert s.service_setting("linear", "token_url") == "http://127.0.0.1:9/token"
    assert s.service_setting("github", "client_secret") == "topsecret"
    assert s.service_setting("notion", "client_id") is None


def test_postgres_without_redis_refused(tmp_path: Path) -> None:
    env = {
        "BINDIFY_DATA_DIR": str(tmp_path),
        "BINDIFY_DATABASE_URL": "postgresql://x/y",
        "BINDIFY_MASTER_KEYS": '[{"key": "k"}]',
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
    }
    with pytest.raises(ConfigError, match="^BINDIFY_KV_URL:"):
        load_settings({}, env)
    assert load_settings({}, {**env, "BINDIFY_SINGLE_INSTANCE": "true"}).single_instance
    assert load_settings({}, {**env, "BINDIFY_KV_URL": "redis://127.0.0.1:6379/0"}).uses_redis


@pytest.mark.parametrize("missing", ["BINDIFY_MASTER_KEYS", "BINDIFY_SECRET_KEY"])
def test_scale_out_needs_explicit_keys(tmp_path: Path, missing: str) -> None:
    env = {
        "BINDIFY_DATA_DIR": str(tmp_path),
        "BINDIFY_KV_URL": "redis://127.0.0.1:6379/0",
        "BINDIFY_MASTER_KEYS": '[{"key": "k"}]',
        "BINDIFY_SECRET_KEY": secrets.token_hex(32),
    }
    del env[missing]
    with pytest.raises(ConfigError, match=f"^{missing}:"):
        load_settings({}, env)


def test_secrets_have_no_flags() -> None:
    parser = build_parser()
    flags = {a for action in parser._actions for a in action.option_strings}
    for name, opt, _ in options():
        flag = "--" + name.replace("_", "-")
        assert (flag in flags) == (opt.flag and not opt.secret), name


def test_readme_table_in_sync() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- config-table:start -->\n(.*?)\n<!-- config-table:end -->", readme, re.S
    )
    assert match, "README.md lacks the configuration table markers"
    assert match.group(1).strip() == docs_table().strip(), (
        "README configuration table is out of date; regenerate it with "
        "`python -c 'from bindify_appliance.config_docs import docs_table; print(docs_table())'`"
    )
