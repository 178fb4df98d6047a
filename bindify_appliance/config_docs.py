"""The README's configuration table, generated from the options registry (`config.options`);
`tests/test_config.py` keeps the README equal to it."""

from __future__ import annotations

from bindify_appliance.config import BUILTIN_SERVICE_IDS, SERVICE_ENV_FIELDS, env_name, options

__all__ = ["docs_table"]


def docs_table() -> str:
    """The README's configuration table, generated from the registry (a test keeps them equal)."""
    lines = [
        "| environment | flag | `config.toml` | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, opt, default in options():
        env = f"`{env_name(name)}`"
        if opt.secret:
            env += f"<br>`{env_name(name)}_FILE`"
        flag = f"`--{name.replace('_', '-')}`" if opt.flag and not opt.secret else "—"
        if opt.default_doc is not None:
            shown = opt.default_doc
        elif isinstance(default, bool):
            shown = f"`{'true' if default else 'false'}`"
        elif default in ("", ()):
            shown = "empty"
        else:
            shown = f"`{default}`"
        lines.append(f"| {env} | {flag} | `{name}` | {shown} | {opt.help} |")
    fields = ", ".join(f"`_{f.upper()}`" for f in SERVICE_ENV_FIELDS)
    services = ", ".join(f"`{s.upper()}`" for s in BUILTIN_SERVICE_IDS)
    lines.append(
        f"| `BINDIFY_{{SERVICE}}_…` ({fields}; `_CLIENT_SECRET_FILE`) | — | "
        f"`{{service}}_client_id` … | unset | Built-in service overrides; "
        f"`{{SERVICE}}` is one of {services}. |"
    )
    return "\n".join(lines)
