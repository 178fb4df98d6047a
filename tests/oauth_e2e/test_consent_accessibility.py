"""axe-core on the consent page, as first shown and with an error (a wrong pasted secret): no
"serious" or "critical" violations. The context bypasses CSP only to inject axe (as
tests/browser/test_accessibility.py does); the flow tests keep the real policy."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from browser.conftest import axe_script  # noqa: F401 - installs axe-core with npm
from support.appliance import http

from .conftest import EMAIL, PASSWORD, OAuthLive
from .member import ARGS

BAD = ("serious", "critical")
_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help}));
}"""


def _authorize_url(live: OAuthLive) -> str:
    status, _, raw = http(
        "POST",
        live.app.url + "/oauth/register",
        body=json.dumps(
            {"client_name": "Axe Client", "redirect_uris": ["http://127.0.0.1:5999/cb"]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert status == 201, raw
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": json.loads(raw)["client_id"],
        "redirect_uri": "http://127.0.0.1:5999/cb",
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        "state": "axe",
        "resource": live.resource,
    }
    return live.app.url + "/oauth/authorize?" + urlencode(query)


def _run(chromium: Path, axe: Path, url: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    failures: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=ARGS)
        try:
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(url)
            page.fill("#email", EMAIL)
            page.fill("#password", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/oauth/authorize?**")
            for name in ("consent", "consent with an error"):
                page.add_script_tag(path=str(axe))
                bad = [v for v in page.evaluate(_RUN) if v["impact"] in BAD]
                if bad:
                    failures[name] = bad
                page.get_by_label("Private tools", exact=True).check()
                page.fill("#secret", "not-a-secret")
                page.get_by_role("button", name="Allow").click()
                page.wait_for_selector(".error")
        finally:
            browser.close()
    return failures


async def test_consent_page_has_no_serious_violations(
    oauth_live: OAuthLive,
    chromium_path: Path,
    axe_script: Path,  # noqa: F811
) -> None:
    url = _authorize_url(oauth_live)
    failures = await asyncio.to_thread(_run, chromium_path, axe_script, url)
    assert failures == {}
