"""`POST /billing/webhook`: Stripe's events (DESIGN §11). The only route exempt from CSRF.

Order: body size (≤ 1 MiB, else 413) → signature, checked by the stripe library against the
raw body with a 300 s tolerance (bad or stale → 400, nothing read further, nothing changes) →
parse → record-and-apply in one transaction (`events.record_event`: each event id once, on
every instance) → 200. A processing failure answers 500 so Stripe retries (the transaction,
event id included, was rolled back). Unhandled types are recorded as `ignored`, 200.

Invariant: logs name the event id and type only, never the payload or the signature.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bindify_appliance import audit
from bindify_appliance.billing.events import (
    HANDLED,
    Duplicate,
    apply_invoice_unit,
    apply_subscription_unit,
    link_checkout_unit,
    record_event,
    then_sync,
)
from bindify_appliance.billing.options import SIGNATURE_TOLERANCE, WEBHOOK_MAX_BODY
from bindify_appliance.billing.service import Billing, billing_service
from bindify_appliance.errors import HTTPFacingError, InvalidRequest, PayloadTooLarge
from bindify_appliance.http.base import HttpHandler

__all__ = ["WebhookHandler"]

log = logging.getLogger(__name__)


class InvalidSignature(InvalidRequest):
    """400: the Stripe-Signature header does not verify (or is stale): nothing changed."""

    code = "invalid_signature"


class ProcessingFailed(HTTPFacingError):
    """500 so that Stripe retries the event; its id was not recorded."""

    status = 500
    code = "processing_failed"


class WebhookHandler(HttpHandler):
    def check_xsrf_cookie(self) -> None:
        # Stripe signs its requests; no browser session is involved (DESIGN §11).
        return

    @property
    def billing(self) -> Billing:
        found = billing_service(self.ctx)
        assert found is not None  # the route exists only when billing is on
        return found

    async def post(self) -> None:
        try:
            outcome = await self._receive()
        except HTTPFacingError as exc:
            self.ctx.metrics.billing_webhooks.labels(
                "failed" if exc.status >= 500 else "rejected"
            ).inc()
            raise
        self.ctx.metrics.billing_webhooks.labels(outcome).inc()
        self.write_json({"received": True, "outcome": outcome})

    async def _receive(self) -> str:
        declared = self.request.headers.get("Content-Length", "0")
        body = self.request.body or b""
        if (declared.isdigit() and int(declared) > WEBHOOK_MAX_BODY) or len(
            body
        ) > WEBHOOK_MAX_BODY:
            raise PayloadTooLarge("the body is too large")
        signature = self.request.headers.get("Stripe-Signature", "")
        secret = self.ctx.settings.stripe_webhook_secret
        if not signature or not self.billing.gateway.verify(
            body, signature, secret, SIGNATURE_TOLERANCE
        ):
            raise InvalidSignature("invalid signature")
        return await self._process(self._parse(body))

    def _parse(self, body: bytes) -> Mapping[str, Any]:
        try:
            event = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest("the body is not JSON") from None
        if not (
            isinstance(event, dict)
            and isinstance(event.get("id"), str)
            and 0 < len(event["id"]) <= 255
            and isinstance(event.get("type"), str)
            and isinstance(event.get("created"), int)
            and isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("object"), dict)
        ):
            raise InvalidRequest("not a Stripe event")
        return event

    async def _process(self, event: Mapping[str, Any]) -> str:
        billing = self.billing
        event_id, kind = str(event["id"]), str(event["type"])[:100]
        at = datetime.fromtimestamp(int(event["created"]), UTC)
        obj: Mapping[str, Any] = event["data"]["object"]
        now = self.ctx.clock.now()
        subscription: Mapping[str, Any] | None = None
        if kind == "checkout.session.completed" and isinstance(obj.get("subscription"), str):
            # Fetched before the transaction: no network call while it holds locks.
            try:
                subscription = await billing.gateway.subscription(obj["subscription"])
            except HTTPFacingError:
                raise ProcessingFailed("processing failed") from None
        sync = billing.sync_unit
        trial = billing.options.trial

        def apply() -> tuple[str, Any]:
            if kind not in HANDLED:
                return "ignored", None
            if kind == "checkout.session.completed":
                linked = link_checkout_unit(obj, at, trial)
                if linked[0] == "processed" and subscription is not None:
                    linked = apply_subscription_unit(subscription, at)
                return then_sync(linked, sync)
            if kind.startswith("customer.subscription."):
                deleted = kind.endswith(".deleted")
                return then_sync(apply_subscription_unit(obj, at, deleted=deleted), sync)
            return then_sync(apply_invoice_unit(obj, at, kind == "invoice.paid"), sync)

        try:
            outcome, member = await self.ctx.store.run(record_event, event_id, kind, at, now, apply)
        except Duplicate:
            return "duplicate"
        except Exception as exc:
            # The class only: a message could quote the payload.
            log.warning(
                "stripe event failed; Stripe will retry",
                extra={"event_id": event_id, "event_type": kind, "error": type(exc).__name__},
            )
            raise ProcessingFailed("processing failed") from None
        await billing.after_change(member)
        if member is not None and member.account is not None:
            await audit.record(
                self.ctx,
                audit.SYSTEM,
                "billing.subscription",
                audit.Target("user", member.user_id),
                detail={
                    "event_type": kind,
                    "status": member.account.subscription_status,
                    "quantity": member.account.quantity,
                },
            )
        log.info(
            "stripe event", extra={"event_id": event_id, "event_type": kind, "outcome": outcome}
        )
        return str(outcome)
