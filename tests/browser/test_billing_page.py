"""The Billing page and the trial banner in headless Chromium, on a real `bindify serve`.

A member signs in, sees the trial banner, opens Billing (plan, trial, usage), and the checkout
button (a POST with the page's CSRF token) takes the browser to the Stripe stand-in's hosted
page, after the appliance asked the stand-in for a subscription-mode session.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from billing.conftest import PRICE, STRIPE_KEY, WEBHOOK_SECRET
from billing.stripe_standin import StripeStandIn, standin_thread
from support.appliance import Appliance, run_cli

from browser.conftest import shot, watch

MEMBER = "billing-member@example.com"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def threaded_standin() -> Iterator[StripeStandIn]:
    with standin_thread() as standin:
        yield standin


def test_billing_page_banner_and_checkout(
    threaded_standin: StripeStandIn, context_factory: Any
) -> None:
    env = {
        "BINDIFY_STRIPE_SECRET_KEY": STRIPE_KEY,
        "BINDIFY_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BINDIFY_STRIPE_PRICE": PRICE,
        "BINDIFY_STRIPE_API_BASE": threaded_standin.url,
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        made = run_cli(["admin", "create-user", MEMBER], data, env=env, stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
        appliance = Appliance(data, env).start()
        try:
            errors: list[str] = []
            page = watch(context_factory().new_page(), errors)
            page.goto(appliance.url + "/login")
            page.get_by_label("Email").fill(MEMBER)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(appliance.url + "/")
            banner = page.locator("#billing-banner")
            assert "Your free trial ends on" in banner.inner_text()
            page.get_by_role("link", name="Billing", exact=True).first.click()
            page.wait_for_url(appliance.url + "/billing")
            assert page.locator("#billing-status").inner_text() == "Free trial"
            assert page.locator("#billing-usage").inner_text() == "0 of 2"
            shot(page, "billing-trial")
            page.get_by_label("Connections").fill("2")
            page.get_by_role("button", name="Continue to payment").click()
            page.wait_for_url(threaded_standin.url + "/pay/**")
            assert "Stripe stand-in" in page.content()
            (session,) = threaded_standin.calls("/v1/checkout/sessions")
            assert session.form["mode"] == "subscription"
            assert session.form["line_items[0][quantity]"] == "2"
            # Without the page's CSRF token the same POST is refused.
            response = page.request.post(
                appliance.url + "/billing/checkout", form={"quantity": "1"}
            )
            assert response.status == 403
            assert len(threaded_standin.calls("/v1/checkout/sessions")) == 1
            assert errors == []
        finally:
            appliance.stop()
