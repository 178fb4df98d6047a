"""The canary's echo upstream: a minimal MCP-shaped JSON-RPC server on 127.0.0.1 (own thread).

It answers each request with its own params, so whatever a client sends comes back in the
answer: `tools/call` (and any other method) as a result, `canary/fail` as a JSON-RPC error whose
message and data carry the params, `canary/sse` as one `text/event-stream` event, a batch as an
array, a notification (no id) with 202. It binds to loopback only and serves until closed.

`GET /bindify-canary-proof` answers the echo's random `proof`: the appliance asks for it before
it grants the canary's one-off loopback allowance (`ops/canary_allowance.py`), so the allowance
can only ever name a port where this echo answers.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from bindify_appliance.ops.canary_allowance import PROOF_PATH

__all__ = ["EchoUpstream"]


def _answer(message: Any) -> dict[str, Any] | None:
    if not isinstance(message, dict) or "id" not in message:
        return None
    params = message.get("params")
    if message.get("method") == "canary/fail":
        error = {"code": -32000, "message": f"echo: {json.dumps(params)}", "data": params}
        return {"jsonrpc": "2.0", "id": message["id"], "error": error}
    text = json.dumps(params)
    result = {"content": [{"type": "text", "text": text}], "echo": params}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            message = json.loads(self.rfile.read(length))
        except ValueError:
            self._send(400, "application/json", b"{}")
            return
        if isinstance(message, list):
            answers = [a for a in (_answer(m) for m in message) if a is not None]
            self._send(200, "application/json", json.dumps(answers).encode())
            return
        answer = _answer(message)
        if answer is None:
            self._send(202, "application/json", b"")
        elif message.get("method") == "canary/sse":
            event = f"event: message\ndata: {json.dumps(answer)}\n\n".encode()
            self._send(200, "text/event-stream", event)
        else:
            self._send(200, "application/json", json.dumps(answer).encode())

    def do_GET(self) -> None:
        if self.path == PROOF_PATH:
            proof: str = self.server.proof  # type: ignore[attr-defined]
            self._send(200, "text/plain", proof.encode())
            return
        self._send(405, "application/json", b"")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the canary's payloads must not reach any log, ours included


class EchoUpstream:
    """`with EchoUpstream() as echo:` serves at `echo.url` for the block."""

    def __init__(self) -> None:
        self.proof = secrets.token_urlsafe(32)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.proof = self.proof  # type: ignore[attr-defined]
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __enter__(self) -> EchoUpstream:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
