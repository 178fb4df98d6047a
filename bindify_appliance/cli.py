"""The `bindify` command line (DESIGN §3).

Every subcommand reads the same configuration as `serve` (flags, `BINDIFY_*`, `config.toml`).
Output meant for scripts (a token, a key, a URL, a path) is printed alone on stdout;
explanations go to stderr. Exit codes: 0 success, 1 error or refusal, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from bindify_appliance.config import Settings, flag_names, load_settings
from bindify_appliance.config_parsers import BOOLEAN_WORDS
from bindify_appliance.errors import BindifyError, ConfigError
from bindify_appliance.logs import configure_logging
from bindify_appliance.ops.doctor_cli import add_doctor_parser, run_doctor

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def say(text: str) -> None:
    """An explanation for the human: stderr, so stdout stays clean for scripts."""
    sys.stderr.write(text + "\n")


def out(text: str) -> None:
    """A value for scripts: stdout, alone."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- parser


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("configuration (also BINDIFY_* and config.toml)")
    for name, opt in flag_names():
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar="true|false" if opt.boolean else "VALUE",
            help=opt.help,
        )
    return parent


def expand_boolean_flags(argv: Sequence[str]) -> list[str]:
    """`--single-instance` alone means `--single-instance=true`; given values are kept.

    Done on the words before argparse sees them: an optional value (`nargs="?"`) would swallow
    the next positional word (`admin create-user --allow-private-upstreams a@example.com`).
    A boolean flag keeps the next word as its value only when that word is true/false/yes/no/
    on/off/1/0; anything after `--` is left alone.
    """
    flags = {"--" + name.replace("_", "-") for name, opt in flag_names() if opt.boolean}
    words = list(argv)
    expanded: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            expanded.extend(words[i:])
            break
        if word in flags:
            following = words[i + 1] if i + 1 < len(words) else None
            if following is not None and following.strip().lower() in BOOLEAN_WORDS:
                expanded.append(f"{word}={following}")
                i += 2
                continue
            expanded.append(f"{word}=true")
        else:
            expanded.append(word)
        i += 1
    return expanded


def build_parser() -> argparse.ArgumentParser:
    parent = _config_parent()
    parser = argparse.ArgumentParser(
        prog="bindify",
        description="Bindify Appliance: a self-hosted MCP authentication proxy.",
        parents=[parent],
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("serve", parents=[parent], help="run the appliance (the default)")
    # One of `serve --workers N`'s processes, started by the supervisor only (no help: hidden).
    p = sub.add_parser("_worker", parents=[parent])
    p.add_argument("--worker-index", type=int, required=True)
    p.add_argument("--ready-fd", type=int, required=True)
    p.add_argument("--lifeline-fd", type=int, required=True)

    p = sub.add_parser("migrate", parents=[parent], help="apply or list database migrations")
    p.add_argument("--status", action="store_true", help="list migrations instead of applying")
    p.add_argument("--json", action="store_true", help="machine-readable --status")

    p = sub.add_parser("backup", parents=[parent], help="consistent online backup (SQLite)")
    p.add_argument("--out", metavar="PATH", help="destination file (default: data dir backups/)")

    p = sub.add_parser("restore", parents=[parent], help="restore a SQLite backup")
    p.add_argument("path", metavar="PATH")

    keys = sub.add_parser("keys", help="master key management").add_subparsers(
        dest="keys_command", metavar="ACTION", required=True
    )
    keys.add_parser("generate", parents=[parent], help="print a new master key")
    p = keys.add_parser("list", parents=[parent], help="fingerprints and usage")
    p.add_argument("--json", action="store_true")
    p = keys.add_parser("rotate", parents=[parent], help="activate the new key, re-encrypt")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = keys.add_parser("remove", parents=[parent], help="remove an unused key")
    p.add_argument("fingerprint", metavar="FINGERPRINT")

    admin = sub.add_parser("admin", help="users and first-run setup").add_subparsers(
        dest="admin_command", metavar="ACTION", required=True
    )
    p = admin.add_parser("create-user", parents=[parent], help="create a user")
    p.add_argument("email")
    p.add_argument("--admin", action="store_true", help="make the user an administrator")
    p = admin.add_parser("create-token", parents=[parent], help="print a personal API token")
    p.add_argument("email")
    p.add_argument("--name", default="cli", help="a name to recognise the token by")
    p = admin.add_parser("reset-password", parents=[parent], help="set a new password")
    p.add_argument("email")
    admin.add_parser("reset-setup", parents=[parent], help="print a new one-time setup URL")
    p = admin.add_parser("remove-user", parents=[parent], help="delete a user (offboarding)")
    p.add_argument("email")
    p.add_argument("--revoke", action="store_true", help="revoke their grants at the providers")
    p.add_argument("--confirm", action="store_true", help="delete even if a revocation failed")

    from bindify_appliance.audit.cli import add_parser as add_audit_parser

    add_audit_parser(sub, parent)
    add_doctor_parser(sub, parent)

    p = sub.add_parser("healthcheck", parents=[parent], help="exit 0 if /readyz answers 200")
    p.add_argument("url", nargs="?", help="default: http://127.0.0.1:{port}/readyz")

    p = sub.add_parser("version", parents=[parent], help="version, commit, Python, SQLite")
    p.add_argument("--json", action="store_true")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name, _ in flag_names()}
    return load_settings(flags)


# ----------------------------------------------------------------------------- commands


def _flag_args(args: argparse.Namespace) -> list[str]:
    """The configuration flags given on this command line, to hand on to the workers."""
    given = ((name, getattr(args, name, None)) for name, _ in flag_names())
    return [f"--{name.replace('_', '-')}={value}" for name, value in given if value is not None]


def cmd_serve(args: argparse.Namespace) -> int:
    from bindify_appliance.supervisor import plan_workers, run_supervisor

    settings = _settings(args)
    count, fewer = plan_workers(settings)
    if count > 1:
        return run_supervisor(settings, count, _flag_args(args))
    from bindify_appliance.server import run_server

    if fewer:
        configure_logging(settings.log_level, settings.log_format)
        logging.getLogger("bindify_appliance.supervisor").warning(
            fewer, extra={"event": "workers", "count": 1}
        )
    # One worker is today's single process: no supervisor.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(run_server(settings))


def cmd_worker(args: argparse.Namespace) -> int:
    from bindify_appliance.server import run_server
    from bindify_appliance.supervisor import WorkerRole

    role = WorkerRole(args.worker_index, args.ready_fd, args.lifeline_fd)
    settings = _settings(args)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(run_server(settings, worker=role))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: measured +24-27% requests/s through the proxy on 2 cores."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def cmd_version(args: argparse.Namespace) -> int:
    from bindify_appliance.version import version_info

    info = version_info()
    if getattr(args, "json", False):
        out(json.dumps(info))
    else:
        out(
            f"bindify {info['version']} (commit {info['commit']}, Python {info['python']}, "
            f"SQLite {info['sqlite']})"
        )
    return EXIT_OK


def cmd_healthcheck(args: argparse.Namespace) -> int:
    url = args.url
    if not url:
        url = f"http://127.0.0.1:{_settings(args).port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - operator URL
            ok = response.status == 200
    except urllib.error.HTTPError as exc:
        say(f"bindify: not ready ({exc.code})")
        return EXIT_ERROR
    except (urllib.error.URLError, OSError, ValueError) as exc:
        say(f"bindify: no answer from {url} ({getattr(exc, 'reason', exc)})")
        return EXIT_ERROR
    return EXIT_OK if ok else EXIT_ERROR


def cmd_migrate(args: argparse.Namespace) -> int:
    from bindify_appliance.commands.database import migrate_command

    return migrate_command(_settings(args), status=args.status, as_json=args.json, out=out, say=say)


def cmd_backup(args: argparse.Namespace) -> int:
    from bindify_appliance.commands.database import backup_command

    return backup_command(_settings(args), Path(args.out) if args.out else None, out=out, say=say)


def cmd_restore(args: argparse.Namespace) -> int:
    from bindify_appliance.commands.database import restore_command

    return restore_command(_settings(args), Path(args.path), say=say)


def cmd_keys(args: argparse.Namespace) -> int:
    from bindify_appliance.commands import keys as keys_commands

    return keys_commands.run(args.keys_command, args, _settings, out=out, say=say)


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        second = getpass.getpass("Repeat it: ")
        if first != second:
            raise ConfigError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_admin(args: argparse.Namespace) -> int:
    from bindify_appliance.commands import admin as admin_cli

    settings = _settings(args)
    action = args.admin_command
    if action == "create-user":
        password = _read_password("Password: ")
        admin_cli.create_user(settings, args.email, password, admin=args.admin, say=say)
    elif action == "create-token":
        out(admin_cli.create_token(settings, args.email, args.name, say=say))
    elif action == "reset-password":
        password = _read_password("New password: ")
        admin_cli.reset_password(settings, args.email, password, say=say)
    elif action == "reset-setup":
        out(admin_cli.reset_setup(settings, say=say))
    elif action == "remove-user":
        return admin_cli.remove_user(
            settings, args.email, revoke=args.revoke, confirm=args.confirm, say=say
        )
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from bindify_appliance.audit import cli as audit_cli

    return audit_cli.run(args, _settings(args), out=out, say=say)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "_worker": cmd_worker,
    "migrate": cmd_migrate,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "keys": cmd_keys,
    "admin": cmd_admin,
    "audit": cmd_audit,
    "doctor": lambda args: run_doctor(args, _settings, out=out, say=say),
    "healthcheck": cmd_healthcheck,
    "version": cmd_version,
}


# Commands that open no data directory; `serve` names its own in its log (its stderr is the log).
_NO_DATA_DIR = frozenset({"serve", "_worker", "healthcheck", "version"})


def _uses_data_dir(args: argparse.Namespace) -> bool:
    """Whether the command opens the data directory, and so names it on stderr (DESIGN §15)."""
    if (args.command or "serve") in _NO_DATA_DIR:
        return False
    return not (args.command == "keys" and args.keys_command == "generate")


def _run_naming_data_dir(
    command: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """Run `command`, naming its data directory on stderr (DESIGN §15).

    Before the command when the directory exists; after it when the command created it, so a
    command run from another folder shows at once that it made a second directory.
    """
    if not _uses_data_dir(args):
        return command(args)
    from bindify_appliance.datadir import data_dir_line

    try:
        settings = _settings(args)
    except ConfigError:  # each command reports its configuration its own way (doctor: a line)
        return command(args)
    existed = settings.data_path.is_dir()
    if existed:
        say("bindify: " + data_dir_line(settings, created=False))
    try:
        return command(args)
    finally:
        if not existed and settings.data_path.is_dir():
            say("bindify: " + data_dir_line(settings, created=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(expand_boolean_flags(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help exits 0, usage errors 2
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.version:
        return cmd_version(args)
    # Every file the appliance creates (database, WAL, backups, keys) is private to its user.
    os.umask(0o077)
    command = COMMANDS[args.command or "serve"]
    try:
        return _run_naming_data_dir(command, args)
    except BindifyError as exc:
        say(f"bindify: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        say("bindify: interrupted")
        return EXIT_ERROR
