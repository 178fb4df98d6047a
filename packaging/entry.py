"""Entry script of the frozen executable: the same CLI as `bindify` from a checkout.

One-file builds run as two processes: PyInstaller's bootloader unpacks the bundle, starts the
Python program as its child and forwards every signal it receives to that child. Two things
follow, and this script corrects both before the CLI runs (one-folder builds are one process and
need neither):

- A signal sent to the whole process group reaches the child twice: once from the kernel or the
  sender, once forwarded by the bootloader. Ctrl-C in a terminal does exactly that, and `serve`
  takes a second signal as "exit now, skip draining". So `serve` moves itself into a process
  group of its own; signals then reach it once, through the bootloader. (Only `serve`: an
  interactive command reading the terminal must stay in the foreground group.)
- If the bootloader is killed outright (SIGKILL), the child would run on as an orphan holding the
  port and the data-directory lock. On Linux the child asks for SIGTERM when its parent dies,
  which shuts it down the graceful way.

Invariant: nothing here changes behaviour outside a one-file bundle, or when the CLI would fail
or exit early (usage errors and --help still come from the CLI itself).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from bindify_appliance.cli import main
from bindify_appliance.config import flag_names

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def is_onefile_child() -> bool:
    """True inside a one-file bundle (unpacked to a temporary `_MEI…` folder)."""
    bundle = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or not isinstance(bundle, str):
        return False
    onedir_home = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "_internal")
    return os.path.realpath(bundle) != os.path.realpath(onedir_home)


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` selects (None = the default, `serve`), without parsing errors."""
    takes_value = {"--" + name.replace("_", "-") for name, _ in flag_names()}
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in takes_value:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def runs_server(argv: Sequence[str]) -> bool:
    if any(token in ("-h", "--help", "--version") for token in argv):
        return False
    return command_of(argv) in (None, "serve")


def die_with_parent() -> None:
    """Ask Linux for SIGTERM when the bootloader exits; no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # only here: a few milliseconds the other paths need not pay

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)  # the running program's symbols, libc's among them
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def prepare(argv: Sequence[str]) -> None:
    if not is_onefile_child():
        return
    die_with_parent()
    if runs_server(argv):
        # OSError: already a group or session leader, so there is nothing to separate.
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)


if __name__ == "__main__":
    prepare(sys.argv[1:])
    raise SystemExit(main())
