"""The README's client table is `bindify_appliance.clients.docs_table()`, kept in sync."""

from __future__ import annotations

import re
from pathlib import Path

from bindify_appliance.clients import CLIENTS, client_configs, docs_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_clients_table_in_sync() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- clients-table:start -->\n(.*?)\n<!-- clients-table:end -->", readme, re.S
    )
    assert match, "README.md lacks the clients table markers"
    assert match.group(1).strip() == docs_table().strip(), (
        "README clients table is out of date; regenerate it with "
        "`python -c 'from bindify_appliance.clients import docs_table; print(docs_table())'`"
    )


def test_page_snippets_follow_the_declaration() -> None:
    url = "https://b.example/mcp/acme/" + "A" * 86
    shown = client_configs(
        "Acme (work) ✓", url, "bnd_live_" + "k" * 40, "https://b.example/mcp/acme"
    )
    assert [c["id"] for c in shown] == [c.id for c in CLIENTS]
    for cfg in shown:
        if cfg["id"] not in ("chatgpt", "generic", "mcp-remote"):  # those without a name
            assert '"acme--work"' in cfg["text"] or " acme--work " in cfg["text"], cfg["id"]
        # exactly one credential form per snippet, never both
        assert ("bnd_live_" in cfg["text"]) != (url in cfg["text"]), cfg["id"]
        assert "`" not in cfg["notes"]
