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


def test_the_sign_in_route_is_offered_only_while_the_oauth_server_is_on() -> None:
    url = "https://b.example/mcp/acme/" + "A" * 86
    service_url = "https://b.example/mcp/acme"
    args = ("Acme", url, "bnd_live_" + "k" * 40, service_url)
    off = {c["id"]: c for c in client_configs(*args)}
    on = {c["id"]: c for c in client_configs(*args, sign_in=True)}
    offered = {c.id for c in CLIENTS if c.sign_in}
    assert offered == {"chatgpt", "claude-desktop"}
    for cid, cfg in on.items():
        assert cfg["text"] == off[cid]["text"]  # the snippet itself never changes
        if cid in offered:
            assert f"sign in instead: paste {service_url}," in cfg["notes"] or (
                f"paste {service_url} with no client ID" in cfg["notes"]
            )
            assert "sign in" not in off[cid]["notes"] and service_url not in off[cid]["notes"]
        else:
            assert cfg["notes"] == off[cid]["notes"]
    assert 'choose "OAuth"' in on["chatgpt"]["notes"]
