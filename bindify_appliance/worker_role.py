"""The worker's side of the supervisor protocol: one byte on the ready pipe once serving, and
the lifeline pipe whose end-of-file means the supervisor died.

Its own module so that `server.py` (which a worker runs) does not import `supervisor.py`
(which runs `server.py`'s entry in each worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["READY_BYTE", "WorkerRole"]

log = logging.getLogger("bindify_appliance.supervisor")

READY_BYTE: Final = b"R"


@dataclass
class WorkerRole:
    """What a worker knows of its supervisor: its index, and the two pipes to it."""

    index: int
    ready_fd: int
    lifeline_fd: int

    def notify_ready(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, READY_BYTE)
            os.close(self.ready_fd)

    def watch_supervisor(
        self, loop: asyncio.AbstractEventLoop, on_gone: Callable[[], None]
    ) -> None:
        """Call `on_gone` once when the supervisor has died (its lifeline's end-of-file)."""

        def readable() -> None:
            try:
                data = os.read(self.lifeline_fd, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.lifeline_fd)
                log.warning("the supervisor is gone: stopping", extra={"event": "orphaned"})
                on_gone()

        os.set_blocking(self.lifeline_fd, False)
        loop.add_reader(self.lifeline_fd, readable)
