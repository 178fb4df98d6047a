"""Bench upstream: a Tornado SSE server (one process, loopback only).

    GET /sse?events=N&pause_ms=P   event 0 at once, a pause, then events 1…N-1, then the end
    GET /hold                      one event, then the stream stays open until the client leaves

Usage: python bench/upstreams.py --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import resource

import tornado.web
from tornado.httpserver import HTTPServer

EVENT = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n'


class SSE(tornado.web.RequestHandler):
    async def get(self) -> None:
        events = int(self.get_query_argument("events", "1000"))
        pause = float(self.get_query_argument("pause_ms", "200")) / 1000
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.write(EVENT)
        await self.flush()
        await asyncio.sleep(pause)
        for _ in range(events - 1):
            self.write(EVENT)
            await self.flush()
        self.finish()


class Hold(tornado.web.RequestHandler):
    async def get(self) -> None:
        self._gone = asyncio.Event()
        self.set_header("Content-Type", "text/event-stream")
        self.write(EVENT)
        await self.flush()
        await self._gone.wait()

    def on_connection_close(self) -> None:
        self._gone.set()


async def main(port: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    app = tornado.web.Application([(r"/sse", SSE), (r"/hold", Hold)], log_function=lambda h: None)
    server = HTTPServer(app)
    server.listen(port, "127.0.0.1", backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
