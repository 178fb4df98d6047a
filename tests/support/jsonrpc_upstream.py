"""A tiny JSON-RPC upstream on 127.0.0.1 for process-level tests (stdlib server, own thread).

It answers every POST with `{"jsonrpc": "2.0", "id": <request id>, "result": result}` after
`delay` seconds, or 401 when `require_authorization` is set and the request's `Authorization`
header differs from it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def jsonrpc_upstream(
    result: Any, *, delay: float = 0.0, require_authorization: str | None = None
) -> Iterator[str]:
    """Serve for the block; yields the MCP endpoint URL (`…/mcp`)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length))
            if (
                require_authorization is not None
                and self.headers.get("Authorization") != require_authorization
            ):
                self.send_response(401)
                self.end_headers()
                return
            time.sleep(delay)
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    finally:
        server.shutdown()
        server.server_close()
