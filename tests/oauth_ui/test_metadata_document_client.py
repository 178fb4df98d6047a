"""A client ID metadata document (an https `client_id`) is fetched only once the member is
signed in: an anonymous visitor's request makes the appliance contact nobody."""

from __future__ import annotations

import asyncio

from support.inprocess import Browser, Server, session_browser

from oauth_ui.flow import authorize_path, pkce


class CountingListener:
    """A TCP listener that counts connections (the document host; it never answers TLS)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def on_connect(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_document_is_fetched_only_after_sign_in(server: Server, member_id: str) -> None:
    listener = CountingListener()
    port = await listener.start()
    try:
        document = f"https://127.0.0.1:{port}/oauth/client.json"
        path = authorize_path(document, pkce().challenge, redirect_uri="https://app.example/cb")
        anonymous = await Browser(server.url).get(path)
        assert anonymous.status == 302
        assert (anonymous.location or "").startswith("/login?next=")
        await asyncio.sleep(0.2)
        assert listener.accepted == 0
        member = await session_browser(server, member_id)
        signed_in = await member.get(path)
        # The document cannot be fetched (no TLS there): an unknown client, shown as a page.
        assert signed_in.status == 400 and signed_in.location is None
        assert "not registered" in signed_in.text
        assert listener.accepted >= 1  # fetched now, for the signed-in member
    finally:
        await listener.stop()
