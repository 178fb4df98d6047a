"""The `bindify doctor` subcommand: its arguments and its body, kept out of cli.py.

`doctor` alone runs the checks (`ops/doctor.py`); `doctor --canary URL --log-file F` runs the
payload canary against a running instance (`ops/canary.py`). A configuration that cannot be
loaded is itself the first failing line, not a bare error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bindify_appliance.config import Settings
from bindify_appliance.errors import ConfigError

__all__ = ["add_doctor_parser", "run_doctor"]


def add_doctor_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "doctor", parents=[parent], help="check configuration and storage, one line per check"
    )
    p.add_argument(
        "--canary",
        metavar="URL",
        help="prove on the running instance at URL that no payload is stored or logged",
    )
    p.add_argument("--log-file", metavar="F", help="the running instance's log (with --canary)")
    p.add_argument(
        "--accept-unscanned",
        metavar="PLACE",
        action="append",
        default=[],
        help="a place the canary may leave unscanned without failing (repeatable)",
    )


def run_doctor(
    args: argparse.Namespace,
    load: Callable[[argparse.Namespace], Settings],
    *,
    out: Callable[[str], None],
    say: Callable[[str], None],
) -> int:
    from bindify_appliance.ops.doctor import Check, doctor_command, format_line

    if args.canary is None and (args.log_file or args.accept_unscanned):
        say("bindify: --log-file and --accept-unscanned go with --canary URL")
        return 2
    try:
        settings = load(args)
    except ConfigError as exc:
        out(format_line(Check("configuration", "FAIL", str(exc))))
        return 1
    if args.canary is None:
        return doctor_command(settings, out=out)
    if not args.log_file:
        say("bindify: --canary needs --log-file F (the running instance's log)")
        return 2
    from bindify_appliance.ops.canary import canary_command

    return canary_command(
        settings,
        args.canary,
        args.log_file,
        accept_unscanned=tuple(args.accept_unscanned),
        out=out,
        say=say,
    )
