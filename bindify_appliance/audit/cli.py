"""`bindify audit verify [--anchor SEQ:MAC]…` and `bindify audit export` (DESIGN §3, §12).

- `verify`: walks the chain with the configured master keys; prints `ok …` and the current
  anchor on stdout (exit 0), or the first broken, missing or rolled-back row on stderr (exit 1).
  `--anchor` (repeatable) takes anchors from `audit_anchor` log lines or an export's last line.
- `export`: every entry, oldest first, one JSON object per line on stdout, in the same shape as
  `GET /api/v1/audit` items; the last line is `{"anchor": "SEQ:MAC", "seq": N}` for the head.

Both only read (they apply no migration); neither prints key material.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from bindify_appliance.audit.chain import ANCHOR_HEX, entry_json
from bindify_appliance.audit.verify import Anchor, parse_anchor, verify_chain
from bindify_appliance.config import Settings
from bindify_appliance.datadir import KeySource
from bindify_appliance.errors import AuditChainError
from bindify_appliance.store import Store
from bindify_appliance.store import audit as rows

__all__ = ["add_parser", "run"]

Printer = Callable[[str], None]


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser
) -> None:
    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True
    )
    p = audit.add_parser("verify", parents=[parent], help="check the hash chain")
    p.add_argument(
        "--anchor", action="append", default=[], metavar="SEQ:MAC", help="a recorded chain head"
    )
    audit.add_parser("export", parents=[parent], help="every entry as JSON lines")


def run(args: argparse.Namespace, settings: Settings, *, out: Printer, say: Printer) -> int:
    keys = KeySource(settings)
    store = Store(settings.database_url)
    try:
        if args.audit_command == "verify":
            return _verify(store, keys, [parse_anchor(a) for a in args.anchor], out, say)
        return _export(store, out)
    finally:
        store.close()


def _verify(
    store: Store, keys: KeySource, anchors: list[Anchor], out: Printer, say: Printer
) -> int:
    result = store.call(verify_chain, keys.keyring, anchors)
    for note in result.notes:
        say(f"note: {note}")
    if result.problem is not None:
        raise AuditChainError(f"audit trail: {result.problem}")
    out(
        f"ok {result.entries} entries, seq {result.first_seq}..{result.last_seq}, "
        f"anchor {result.anchor}"
    )
    return 0


def _export(store: Store, out: Printer) -> int:
    def lines() -> int:
        last = None
        for row in rows.iter_rows():
            out(json.dumps(entry_json(row), sort_keys=True, separators=(",", ":")))
            last = row
        if last is not None:
            anchor = f"{last.seq}:{last.mac[:ANCHOR_HEX]}"
            out(json.dumps({"anchor": anchor, "seq": last.seq}, separators=(",", ":")))
        return 0

    return store.call(lines)
