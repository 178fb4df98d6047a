"""Tool policies (DESIGN §13) at the byte level, against a scripted upstream on 127.0.0.1.

The upstream answers `tools/list` in two pages (cursor "p2"), JSON or SSE-framed with every
event split across many small writes, `tools/call` with the tool's name, batches with an array,
and records every request it receives (so "never contacted" is checked, not assumed).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.web
from support.ports import free_socket
from tornado.httpserver import HTTPServer

from bindify_appliance.proxy.policy import ToolPolicy, effective, parse_policy
from bindify_appliance.proxy.target import ProxyTarget
from bindify_appliance.proxy.tool_filter import ListFilter, SSERewriter

from .conftest import ProxyHarness

PAGE1 = [
    {"name": "read_a", "annotations": {"readOnlyHint": True}},
    {"name": "delete_a", "annotations": {"readOnlyHint": False}},
]
PAGE2 = [
    {"name": "read_b", "annotations": {"readOnlyHint": True}},
    {"name": "admin_reset"},
]


class Scripted:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.sse = False
        self.list_fails = False
        self.port = 0
        self.server: HTTPServer | None = None

    def calls(self) -> list[str]:
        out = []
        for body in self.bodies:
            for m in body if isinstance(body, list) else [body]:
                if m.get("method") == "tools/call":
                    out.append(m["params"]["name"])
        return out


def _answer(message: dict[str, Any], up: Scripted) -> dict[str, Any] | None:
    if "id" not in message:
        return None
    if message["method"] == "tools/list":
        cursor = (message.get("params") or {}).get("cursor")
        result: dict[str, Any] = (
            {"tools": PAGE2} if cursor == "p2" else {"tools": PAGE1, "nextCursor": "p2"}
        )
        return {"jsonrpc": "2.0", "id": message["id"], "result": result}
    name = message["params"]["name"]
    content = [{"type": "text", "text": name}]
    return {"jsonrpc": "2.0", "id": message["id"], "result": {"content": content}}


class _Mcp(tornado.web.RequestHandler):
    def initialize(self, up: Scripted) -> None:
        self.up = up

    def check_xsrf_cookie(self) -> None:
        pass

    async def post(self) -> None:
        body = json.loads(self.request.body)
        self.up.bodies.append(body)
        messages = body if isinstance(body, list) else [body]
        if self.up.list_fails and any(m.get("method") == "tools/list" for m in messages):
            self.set_status(500)
            self.finish()
            return
        answers = [a for a in (_answer(m, self.up) for m in messages) if a is not None]
        if not answers:
            self.set_status(202)
            self.finish()
            return
        payload: Any = answers if isinstance(body, list) else answers[0]
        if not self.up.sse:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(payload))
            return
        self.set_header("Content-Type", "text/event-stream")
        events = [
            b"id: 7\r\nevent: message\r\ndata: " + json.dumps(a).encode() + b"\r\n\r\n"
            for a in answers
        ]
        if isinstance(payload, list):
            events = [b"event: message\ndata: " + json.dumps(payload).encode() + b"\n\n"]
        for event in events:
            for i in range(0, len(event), 9):  # events split across many chunks
                self.write(event[i : i + 9])
                await self.flush()
                await asyncio.sleep(0)
        self.finish()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    up = Scripted()
    sockets, up.port = free_socket()
    up.server = HTTPServer(
        tornado.web.Application([(r"/mcp", _Mcp, {"up": up})], log_function=lambda handler: None)
    )
    up.server.add_sockets(sockets)
    yield up
    up.server.stop()
    await up.server.close_all_connections()


def _add(
    proxy: ProxyHarness, up: Scripted, service: ToolPolicy | None, conn: ToolPolicy | None
) -> tuple[str, ProxyTarget]:
    policy = effective(service, conn)
    creds, target = proxy.resolver.add("acme", f"http://127.0.0.1:{up.port}/mcp", policy=policy)
    return proxy.path_url("acme", creds), target


async def _post(http: Any, url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    send = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    async with http.post(url, data=json.dumps(body), headers={**send, **(headers or {})}) as r:
        raw = await r.read()
        return r.status, r.headers.get("Content-Type", ""), raw


def _messages(content_type: str, raw: bytes) -> list[Any]:
    if content_type.startswith("application/json"):
        return [json.loads(raw)]
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [ln[6:] for ln in block.split(b"\n") if ln.startswith(b"data: ")]
        if data:
            out.append(json.loads(b"\n".join(data)))
    return out


def _call(rid: Any, name: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name}}


LIST1 = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
LIST2 = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": "p2"}}


@pytest.mark.parametrize("sse", [False, True])
async def test_paginated_list_is_filtered_and_keeps_its_cursor(
    proxy: ProxyHarness, scripted: Scripted, http: Any, sse: bool
) -> None:
    scripted.sse = sse
    url, _ = _add(proxy, scripted, ToolPolicy(deny=("delete_*",)), ToolPolicy(read_only=False))
    status, ctype, raw = await _post(http, url, LIST1)
    assert status == 200
    (page1,) = _messages(ctype, raw)
    assert [t["name"] for t in page1["result"]["tools"]] == ["read_a"]
    assert page1["result"]["nextCursor"] == "p2"
    if sse:
        assert b"id: 7\r\nevent: message\r\n" in raw  # the event's other lines are kept
    status, ctype, raw = await _post(http, url, LIST2)
    (page2,) = _messages(ctype, raw)
    assert [t["name"] for t in page2["result"]["tools"]] == ["read_b", "admin_reset"]


@pytest.mark.parametrize("sse", [False, True])
async def test_hidden_tool_call_is_refused_without_reaching_the_upstream(
    proxy: ProxyHarness, scripted: Scripted, http: Any, sse: bool
) -> None:
    scripted.sse = sse
    url, target = _add(proxy, scripted, ToolPolicy(allow=("read_*", "delete_*")), None)
    status, ctype, raw = await _post(http, url, _call("x-1", "admin_reset"))
    assert (status, ctype) == (200, "application/json")
    assert json.loads(raw) == {
        "jsonrpc": "2.0",
        "id": "x-1",
        "error": {"code": -31005, "message": "tool not allowed by policy"},
    }
    assert scripted.bodies == []
    assert proxy.resolver.denials == [(target.connection_id, "admin_reset")]
    # One denial counted by service for /metrics (DESIGN §12); the tool name is no label.
    denials = proxy.ctx.metrics.registry.get_sample_value(
        "bindify_policy_denials_total", {"service": "acme"}
    )
    assert denials == 1
    status, ctype, raw = await _post(http, url, _call(5, "read_a"))
    assert _messages(ctype, raw)[0]["result"]["content"][0]["text"] == "read_a"


async def test_member_cannot_widen_the_admin_policy(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    """The member allows everything and denies nothing: the admin's allow list still holds."""
    url, _ = _add(
        proxy, scripted, ToolPolicy(allow=("read_*",)), ToolPolicy(allow=("*",), read_only=False)
    )
    _, _, raw = await _post(http, url, _call(1, "delete_a"))
    assert json.loads(raw)["error"]["code"] == -31005
    # …while narrowing works: deny lists add up.
    url, _ = _add(proxy, scripted, ToolPolicy(allow=("read_*",)), ToolPolicy(deny=("read_b",)))
    _, _, raw = await _post(http, url, _call(2, "read_b"))
    assert json.loads(raw)["error"]["code"] == -31005
    assert scripted.calls() == []


@pytest.mark.parametrize("sse", [False, True])
async def test_batch_refuses_only_the_hidden_entries(
    proxy: ProxyHarness, scripted: Scripted, http: Any, sse: bool
) -> None:
    scripted.sse = sse
    url, _ = _add(proxy, scripted, ToolPolicy(deny=("delete_*", "admin_*")), None)
    batch = [
        _call(1, "delete_a"),
        _call(2, "read_a"),
        {"jsonrpc": "2.0", "id": "L", "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        _call(3, "admin_reset"),
    ]
    status, ctype, raw = await _post(http, url, batch)
    assert status == 200
    answers = [a for m in _messages(ctype, raw) for a in (m if isinstance(m, list) else [m])]
    by_id = {a["id"]: a for a in answers}
    assert set(by_id) == {1, 2, 3, "L"}
    assert by_id[1]["error"]["code"] == by_id[3]["error"]["code"] == -31005
    assert by_id[2]["result"]["content"][0]["text"] == "read_a"
    assert [t["name"] for t in by_id["L"]["result"]["tools"]] == ["read_a"]
    assert scripted.calls() == ["read_a"]  # the refused entries never left the proxy
    forwarded = scripted.bodies[0]
    assert [m.get("method") for m in forwarded] == [
        "tools/call",
        "tools/list",
        "notifications/progress",
    ]


async def test_batch_of_only_hidden_calls_is_answered_by_the_proxy(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    url, _ = _add(proxy, scripted, ToolPolicy(deny=("*",)), None)
    status, _, raw = await _post(http, url, [_call(1, "a"), _call("b", "b")])
    assert status == 200
    assert [e["id"] for e in json.loads(raw)] == [1, "b"]
    assert scripted.bodies == []


async def test_batch_list_answer_is_filtered(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    url, _ = _add(proxy, scripted, ToolPolicy(deny=("delete_*",)), None)
    _, ctype, raw = await _post(http, url, [LIST1, _call(9, "read_a")])
    (answers,) = _messages(ctype, raw)
    listed = next(a for a in answers if a["id"] == 1)
    assert [t["name"] for t in listed["result"]["tools"]] == ["read_a"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Mcp-Method": "tools/call", "Mcp-Name": "read_a"},  # body calls delete_a
        {"Mcp-Method": "tools/list"},  # body is a tools/call
        {"Mcp-Name": "=?base64?" + base64.b64encode(b"read_a").decode() + "?="},
    ],
)
async def test_mirrored_headers_that_disagree_with_the_body_are_refused(
    proxy: ProxyHarness, scripted: Scripted, http: Any, headers: dict[str, str]
) -> None:
    url, _ = _add(proxy, scripted, ToolPolicy(allow=("read_*",)), None)
    status, _, raw = await _post(
        http, url, _call(4, "delete_a"), {"MCP-Protocol-Version": "2026-07-28", **headers}
    )
    assert status == 400
    assert json.loads(raw)["error"]["code"] == -32600
    assert json.loads(raw)["id"] == 4
    assert scripted.bodies == []


async def test_agreeing_headers_pass_and_the_body_decides(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    url, _ = _add(proxy, scripted, ToolPolicy(allow=("read_*",)), None)
    encoded = "=?base64?" + base64.b64encode(b"read_a").decode() + "?="
    for name in ("read_a", encoded):
        status, ctype, raw = await _post(
            http, url, _call(4, "read_a"), {"Mcp-Method": "tools/call", "Mcp-Name": name}
        )
        assert status == 200
        assert _messages(ctype, raw)[0]["result"]["content"][0]["text"] == "read_a"


async def test_ambiguous_json_is_refused_under_a_policy(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    """One parser takes the first repeated key, another the last: never forwarded."""
    url, _ = _add(proxy, scripted, ToolPolicy(allow=("read_*",)), None)
    raw_body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        b'"params":{"name":"read_a","name":"delete_a"}}'
    )
    async with http.post(url, data=raw_body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == -32600
    assert scripted.bodies == []


async def test_read_only_fetches_every_page_then_decides(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    url, _ = _add(proxy, scripted, None, ToolPolicy(read_only=True))
    _, ctype, raw = await _post(http, url, _call(1, "read_b"))  # on page 2
    assert _messages(ctype, raw)[0]["result"]["content"][0]["text"] == "read_b"
    _, _, raw = await _post(http, url, _call(2, "admin_reset"))  # no annotation: refused
    assert json.loads(raw)["error"]["code"] == -31005
    assert scripted.calls() == ["read_b"]


async def test_read_only_fails_closed_when_the_list_cannot_be_fetched(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    scripted.list_fails = True
    url, _ = _add(proxy, scripted, ToolPolicy(read_only=True), None)
    _, _, raw = await _post(http, url, _call(1, "read_a"))
    assert json.loads(raw)["error"]["code"] == -31005
    assert scripted.calls() == []


async def test_read_only_flags_expire_with_the_memo_ttl(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    url, _ = _add(proxy, scripted, ToolPolicy(read_only=True), None)
    await _post(http, url, LIST1)
    await _post(http, url, _call(1, "read_a"))
    lists = sum(1 for b in scripted.bodies if isinstance(b, dict) and b["method"] == "tools/list")
    assert lists == 1  # learnt from the listing the client made
    await asyncio.sleep(1.1)
    await _post(http, url, _call(2, "read_a"))
    lists = sum(1 for b in scripted.bodies if isinstance(b, dict) and b["method"] == "tools/list")
    assert lists == 3  # kept no longer than a second: asked again (both pages)


async def test_without_a_policy_nothing_is_inspected(
    proxy: ProxyHarness, scripted: Scripted, http: Any
) -> None:
    """No policy: even an ambiguous body and disagreeing headers pass untouched."""
    url, _ = _add(proxy, scripted, None, None)
    status, _, _ = await _post(http, url, _call(1, "delete_a"), {"Mcp-Name": "something-else"})
    assert status == 200
    assert scripted.calls() == ["delete_a"]


# -- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("x", "policy"),
        ({"tools": {"allow": "x"}}, "policy.tools.allow"),
        ({"tools": {"deny": [""]}}, "policy.tools.deny"),
        ({"tools": {"deny": ["x" * 201]}}, "policy.tools.deny"),
        ({"tools": {"allow": ["a"] * 201}}, "policy.tools.allow"),
        ({"tools": {"allow": [1]}}, "policy.tools.allow"),
        ({"read_only": "yes"}, "policy.read_only"),
        ({"tools": {"other": []}}, "policy.tools"),
        ({"extra": 1}, "policy"),
    ],
)
def test_bad_policies_are_refused_with_their_field(value: object, field: str) -> None:
    from bindify_appliance.errors import HTTPFacingError

    with pytest.raises(HTTPFacingError) as caught:
        parse_policy(value)
    assert caught.value.status == 400
    assert caught.value.field == field


def test_merge_rules() -> None:
    admin = ToolPolicy(allow=("git_*", "read_*"), deny=("git_push",))
    member = ToolPolicy(allow=("git_*",), deny=("git_reset",), read_only=True)
    merged = effective(admin, member)
    assert merged is not None and merged.read_only
    assert merged.permits("git_log")
    assert not merged.permits("read_file")  # the member's allow list narrows
    assert not merged.permits("git_push") and not merged.permits("git_reset")
    assert effective(None, None) is None
    assert effective(admin, None) is effective(admin, None)  # built once per pair


async def test_sse_rewriter_handles_events_split_anywhere() -> None:
    policy = effective(ToolPolicy(deny=("b",)), None)
    assert policy is not None
    learnt: list[tuple[str, bool]] = []
    rewriter = SSERewriter(ListFilter(policy, learnt.extend, None), 1 << 20)
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "a"}, {"name": "b"}]}}
    stream = (
        b": comment\n\nevent: message\ndata: "
        + json.dumps(answer).encode()
        + b'\n\ndata: {"jsonrpc":"2.0","method":"x"}\n\n'
    )
    out = b"".join([await rewriter(stream[i : i + 5]) for i in range(0, len(stream), 5)])
    assert out.startswith(b": comment\n\n")
    assert b'"name":"b"' not in out and b'"name":"a"' in out
    assert out.endswith(b'data: {"jsonrpc":"2.0","method":"x"}\n\n')
    assert learnt == [("a", False), ("b", False)]
