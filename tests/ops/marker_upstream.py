"""A small MCP-shaped upstream on 127.0.0.1 that puts a marker in everything it answers.

Stdlib server, its own thread. Every POST is answered with JSON carrying the marker and the
request echoed back, except:
- `tools/call` of the tool named `stream`: an event stream whose first event (with the marker)
  goes out at once; the final event follows only when the test sets `release` — so the test can
  scrape while the stream is open;
- `tools/call` of the tool named `fail`: a JSON-RPC error whose message is the marker.
Each answer also sets a response header carrying the marker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class MarkerUpstream:
    url: str
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def marker_upstream(marker: str) -> Iterator[MarkerUpstream]:
    state: dict[str, MarkerUpstream] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            rid = request.get("id")
            params: dict[str, Any] = request.get("params") or {}
            if request.get("method") == "tools/call" and params.get("name") == "stream":
                self._stream(rid)
                return
            if request.get("method") == "tools/call" and params.get("name") == "fail":
                answer: dict[str, Any] = {"code": -32000, "message": marker}
                self._json({"jsonrpc": "2.0", "id": rid, "error": answer})
                return
            self._json({"jsonrpc": "2.0", "id": rid, "result": {"marker": marker, "echo": request}})

        def _json(self, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Upstream-Marker", marker)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, rid: Any) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("X-Upstream-Marker", marker)
            self.end_headers()
            note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"m": marker}}
            self.wfile.write(f"event: message\ndata: {json.dumps(note)}\n\n".encode())
            self.wfile.flush()
            state["u"].release.wait(20)
            final = {"jsonrpc": "2.0", "id": rid, "result": {"marker": marker}}
            self.wfile.write(f"event: message\ndata: {json.dumps(final)}\n\n".encode())
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["u"] = MarkerUpstream(f"http://127.0.0.1:{server.server_address[1]}/mcp")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["u"]
    finally:
        state["u"].release.set()
        server.shutdown()
        server.server_close()
