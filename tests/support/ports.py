"""Free loopback ports for test servers: the one helper every harness uses.

`free_socket()` keeps the listening socket open (no other process can take the port before the
server starts on it); `free_port()` only names a port that was free a moment ago, for a
subprocess that must bind it itself.
"""

from __future__ import annotations

import socket

from tornado.netutil import bind_sockets

__all__ = ["free_port", "free_socket"]


def free_socket(address: str = "127.0.0.1") -> tuple[list[socket.socket], int]:
    """Listening sockets on `address` (loopback) and their port, for an in-process server."""
    sockets = bind_sockets(0, address)
    return sockets, int(sockets[0].getsockname()[1])


def free_port() -> int:
    """A port that was free on 127.0.0.1 when asked (a subprocess binds it itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
