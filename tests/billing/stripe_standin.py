"""A local stand-in of the Stripe API on 127.0.0.1, for `BINDIFY_STRIPE_API_BASE`.

Answers what the appliance's gateway calls, the way Stripe does (form-encoded requests, JSON
objects): `POST /v1/customers`, `POST /v1/checkout/sessions`, `POST /v1/billing_portal/sessions`,
`GET /v1/subscriptions/{id}`, `POST /v1/subscriptions/{id}` (items' quantity). Every request is
recorded (method, path, form fields flattened as Stripe encodes them, Authorization) so tests
assert parameters; subscriptions are seeded by the test (`subscriptions[id] = {...}`).
Also: `sign()` and `event()`, a webhook signed exactly as Stripe signs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import tornado.web
from support.ports import free_socket
from tornado.httpserver import HTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    form: dict[str, str]
    authorization: str | None


@dataclass
class StripeStandIn:
    requests: list[Recorded] = field(default_factory=list)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: bool = False
    url: str = ""
    _server: HTTPServer | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> StripeStandIn:
        sockets, port = free_socket()
        app = tornado.web.Application(
            [
                (r"/v1/customers", _Customers, {"standin": self}),
                (r"/v1/checkout/sessions", _Checkout, {"standin": self}),
                (r"/v1/billing_portal/sessions", _Portal, {"standin": self}),
                (r"/v1/subscriptions/([A-Za-z0-9_]+)", _Subscription, {"standin": self}),
                (r"/(?:pay|portal)/[A-Za-z0-9_]+", _HostedPage, {"standin": self}),
            ]
        )
        self._server = HTTPServer(app)
        self._server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()


class _Base(tornado.web.RequestHandler):
    def initialize(self, standin: StripeStandIn) -> None:
        self.standin = standin

    def check_xsrf_cookie(self) -> None:
        return

    def prepare(self) -> None:
        body = (self.request.body or b"").decode()
        form = dict(parse_qsl(body, keep_blank_values=True))
        self.standin.requests.append(
            Recorded(
                self.request.method or "",
                self.request.path,
                form,
                self.request.headers.get("Authorization"),
            )
        )
        if self.standin.fail:
            # A 4xx (Stripe's own refusals; tornado logs a 5xx as an ERROR).
            self.set_status(400)
            self.finish({"error": {"type": "invalid_request_error", "message": "refused"}})

    @property
    def form(self) -> dict[str, str]:
        return self.standin.requests[-1].form

    def answer(self, obj: dict[str, Any]) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Request-Id", "req_standin")
        self.finish(json.dumps(obj))

    def missing(self) -> None:
        self.set_status(404)
        self.answer({"error": {"type": "invalid_request_error", "message": "No such object"}})


class _Customers(_Base):
    def post(self) -> None:
        self.answer(
            {
                "id": self.standin.next_id("cus"),
                "object": "customer",
                "email": self.form.get("email"),
                "metadata": {"bindify_user_id": self.form.get("metadata[bindify_user_id]")},
            }
        )


class _Checkout(_Base):
    def post(self) -> None:
        sid = self.standin.next_id("cs")
        self.answer(
            {
                "id": sid,
                "object": "checkout.session",
                "mode": self.form.get("mode"),
                "customer": self.form.get("customer"),
                "client_reference_id": self.form.get("client_reference_id"),
                "url": f"{self.standin.url}/pay/{sid}",
            }
        )


class _Portal(_Base):
    def post(self) -> None:
        sid = self.standin.next_id("bps")
        self.answer(
            {
                "id": sid,
                "object": "billing_portal.session",
                "customer": self.form.get("customer"),
                "url": f"{self.standin.url}/portal/{sid}",
            }
        )


class _Subscription(_Base):
    def get(self, sub_id: str) -> None:
        sub = self.standin.subscriptions.get(sub_id)
        if sub is None:
            self.missing()
            return
        self.answer(sub)

    def post(self, sub_id: str) -> None:
        sub = self.standin.subscriptions.get(sub_id)
        if sub is None:
            self.missing()
            return
        item_id = self.form.get("items[0][id]")
        for item in sub["items"]["data"]:
            if item["id"] == item_id and "items[0][quantity]" in self.form:
                item["quantity"] = int(self.form["items[0][quantity]"])
        self.answer(sub)


class _HostedPage(tornado.web.RequestHandler):
    """Where Checkout and the portal would send a browser: a page that says where it is."""

    def initialize(self, standin: StripeStandIn) -> None:
        self.standin = standin

    def get(self) -> None:
        self.finish(
            "<!doctype html><title>Stripe stand-in</title>"
            '<link rel="icon" href="data:,"><h1>Stripe stand-in</h1>'
        )


def subscription(
    sub_id: str,
    customer: str,
    *,
    status: str = "active",
    quantity: int = 3,
    period_end: int,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    """A subscription object shaped as Stripe's current API returns it."""
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "cancel_at": period_end if cancel_at_period_end else None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id}",
                    "object": "subscription_item",
                    "quantity": quantity,
                    "current_period_end": period_end,
                    "price": {"id": "price_test"},
                }
            ],
        },
    }


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header exactly as Stripe computes it."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(event_id: str, kind: str, obj: dict[str, Any], created: int) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "created": created,
            "livemode": False,
            "data": {"object": obj},
        }
    ).encode()


@contextmanager
def standin_thread() -> Iterator[StripeStandIn]:
    """The stand-in on an event loop of its own thread, for synchronous tests (the appliance
    then runs as a process)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, StripeStandIn] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["s"] = loop.run_until_complete(StripeStandIn().start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the Stripe stand-in did not start"
    try:
        yield holder["s"]
    finally:
        asyncio.run_coroutine_threadsafe(holder["s"].stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
