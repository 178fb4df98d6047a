"""The README's table of audit actions is `audit.actions.ACTIONS`, row for row."""

from __future__ import annotations

import re

from support.appliance import ROOT

from bindify_appliance.audit.actions import ACTIONS


def test_the_readme_lists_every_declared_action() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Audit trail", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.+) \|$", section, flags=re.M)
    assert [action for action, _ in rows] == list(ACTIONS)
    assert dict(rows) == ACTIONS
