"""A property-based run over the OpenAPI document: no request finds a 5xx (schemathesis-style).

The appliance runs in a thread of its own (its own event loop), so Hypothesis drives it with
plain blocking HTTP. For every documented operation Hypothesis generates path parameters (real
ids and junk), query parameters, bodies (schema-valid ones built from the document, mutated
ones with unknown fields or wrong types, arbitrary JSON, and raw bytes) and credentials (admin,
member, none, junk). Each answer must:
- never be a 5xx;
- have a status the document lists for that operation;
- match the documented success schema, or be the `{"error", "message"}` envelope with a known
  code.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support.inprocess import Server, add_token, add_user, start_appliance

from bindify_appliance.api.openapi import ERROR_CODES
from bindify_appliance.store.models import PersonalToken

Schema = dict[str, Any]

# The Unicode category of lone surrogates (valid JSON escapes, not encodable text).
SURROGATES: Final[tuple[Literal["Cs"]]] = ("Cs",)


@dataclass(repr=False)
class Live:
    url: str
    document: dict[str, Any]
    admin_token: str
    member_token: str
    ids: list[str]

    def __repr__(self) -> str:  # keeps Hypothesis' failure report readable
        return f"Live({self.url})"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    holder: dict[str, Any] = {}
    path: Path = tmp_path_factory.mktemp("fuzz")

    async def main() -> None:
        server: Server = await start_appliance(path)
        admin = add_user(server, "admin@example.com", "admin")
        member = add_user(server, "member@example.com")
        other = add_user(server, "other@example.com")
        holder.update(
            server=server,
            admin_token=add_token(server, admin),
            member_token=add_token(server, member),
        )
        add_token(server, other)
        token_ids = server.store.call(lambda: [t.id for t in PersonalToken.select()])
        holder["ids"] = [member, other, *token_ids]  # never the admin's own id
        stop.append(asyncio.Event())
        ready.set()
        await stop[0].wait()
        await server.close()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    server = holder["server"]
    with urllib.request.urlopen(server.url + "/api/v1/openapi.json", timeout=10) as resp:
        document = json.loads(resp.read())
    yield Live(server.url, document, holder["admin_token"], holder["member_token"], holder["ids"])
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(30)
    loop.close()


# -- strategies from the document ------------------------------------------------------------


def resolve(schema: Schema, components: dict[str, Schema]) -> Schema:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(schema: Schema, components: dict[str, Schema]) -> st.SearchStrategy[Any]:
    schema = resolve(schema, components)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, components) for k in kind])
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 60)
        text = st.text(min_size=low, max_size=min(high, 60))
        # Lone surrogates: valid JSON escapes (\ud800) that are not encodable text.
        surrogates = st.text(
            st.characters(categories=SURROGATES), min_size=max(low, 1), max_size=max(low, 1) + 2
        )
        text = st.one_of(text, text, text, surrogates)
        if schema.get("format") == "email":
            return st.one_of(st.emails(), text)
        return text
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components), max_size=3)
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, components) for k, v in props.items() if k in required},
            optional={k: from_schema(v, components) for k, v in props.items() if k not in required},
        )
    return st.just(None)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def bodies(schema: Schema, components: dict[str, Schema]) -> st.SearchStrategy[bytes]:
    valid = from_schema(schema, components)
    extra = st.tuples(valid, st.text(min_size=1, max_size=10), JSON).map(
        lambda t: {**t[0], t[1]: t[2]} if isinstance(t[0], dict) else t[0]
    )
    as_json = st.one_of(valid, valid, extra, JSON).map(lambda v: json.dumps(v).encode())
    return st.one_of(as_json, st.binary(max_size=40))


# -- checking answers ------------------------------------------------------------------------


def conforms(schema: Schema, value: Any, components: dict[str, Schema]) -> bool:
    schema = resolve(schema, components)
    if "anyOf" in schema:
        return any(conforms(s, value, components) for s in schema["anyOf"])
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if kinds and not any(checks[k](value) for k in kinds):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is False and set(value) - set(props):
            return False
        if set(schema.get("required", [])) - set(value):
            return False
        return all(conforms(props[k], v, components) for k, v in value.items() if k in props)
    if isinstance(value, list) and "items" in schema:
        return all(conforms(schema["items"], v, components) for v in value)
    return True


def call(method: str, url: str, body: bytes | None, token: str | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# Text that can travel in a URL (UTF-8 encodable: no lone surrogates).
URL_TEXT = st.text(st.characters(exclude_categories=SURROGATES), min_size=1, max_size=40)


@st.composite
def requests(draw: st.DrawFn, live: Live) -> tuple[str, str, str, bytes | None, str | None]:
    paths = live.document["paths"]
    components = live.document["components"]["schemas"]
    template = draw(st.sampled_from(sorted(paths)))
    verb = draw(st.sampled_from(sorted(paths[template])))
    op = paths[template][verb]
    path = template
    query: dict[str, str] = {}
    for param in op.get("parameters", []):
        if param["in"] == "path":
            value = draw(st.one_of(st.sampled_from(live.ids), URL_TEXT))
            path = path.replace("{" + param["name"] + "}", quote(value, safe=""))
        elif draw(st.booleans()):
            query[param["name"]] = draw(st.one_of(st.integers(-5, 300).map(str), URL_TEXT))
    if query:
        path += "?" + urlencode(query)
    body = None
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        body = draw(bodies(schema, components))
    token = draw(
        st.sampled_from(
            [
                live.admin_token,
                live.admin_token,
                live.member_token,
                None,
                "bndpat_" + "A" * 43,
                "bnd_live_x",
            ]
        )
    )
    return template, verb, path, body, token


def check(live: Live, template: str, verb: str, status: int, raw: bytes) -> str | None:
    """What is wrong with one answer, or None."""
    op = live.document["paths"][template][verb]
    if status >= 500:
        return "server error"
    if str(status) not in op["responses"]:
        return "undocumented status"
    components = live.document["components"]["schemas"]
    if 200 <= status < 300:
        content = op["responses"][str(status)].get("content")
        if not content:
            return None if raw == b"" else "body on a bodiless answer"
        value = json.loads(raw)
        if not conforms(content["application/json"]["schema"], value, components):
            return "answer does not match the documented schema"
        return None
    try:
        error = json.loads(raw)
    except ValueError:
        return "error answer is not JSON"
    if not isinstance(error, dict) or not set(error) <= {"error", "message", "field"}:
        return "error answer is not the envelope"
    if error.get("error") not in ERROR_CODES or not isinstance(error.get("message"), str):
        return "unknown error code"
    return None


def test_no_request_finds_a_server_error(live: Live) -> None:
    # Failures are collected, not raised inside Hypothesis: the server's state moves on between
    # examples (users, tokens come and go), so replaying or shrinking an example is not
    # meaningful; the first failing requests are reported as they were sent.
    failures: list[tuple[str, str, Any, Any, int, bytes]] = []

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        template, verb, path, body, token = data.draw(requests(live))
        status, raw = call(verb.upper(), live.url + path, body, token)
        problem = check(live, template, verb, status, raw)
        if problem is not None:
            failures.append((problem, verb.upper(), path, body, status, raw[:300]))

    probe()
    assert not failures, failures[:5]
