"""Where option values come from before parsing: the environment (with `*_FILE` secrets) and
the data directory's `config.toml`. Text only: `config.load_settings` parses and validates."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bindify_appliance.errors import ConfigError

__all__ = ["from_environ", "read_config_file", "read_secret_file", "toml_value_as_text"]


def read_secret_file(env: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{env}_FILE: cannot read the file ({exc.strerror})") from None


def from_environ(environ: Mapping[str, str], env: str, secret: bool) -> str | None:
    if env in environ:
        if secret and f"{env}_FILE" in environ:
            raise ConfigError(f"{env} and {env}_FILE are both set; set only one")
        return environ[env]
    if secret and f"{env}_FILE" in environ:
        return read_secret_file(env, environ[f"{env}_FILE"])
    return None


def read_config_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "config.toml"
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config.toml: cannot be read ({exc})") from None
    return raw


def toml_value_as_text(name: str, value: Any) -> str:
    """Turn a TOML value into the text form the option parsers read."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise ConfigError(f"config.toml: {name} has an unsupported value type")
