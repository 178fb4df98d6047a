"""`/oauth/callback` error pages over real HTTP: only known OAuth error codes, in our words.

An attacker can send a signed-in member to `/oauth/callback?error=…&error_description=…` with
any text (no valid `state` needed). The page must never repeat that text: it names only the
error codes of RFC 6749 §4.1.2.1 and explains them in the appliance's own wording.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from support.inprocess import Server, session_browser

LURE = "Your account is suspended call +1 555 0100 now"


@pytest.mark.parametrize(
    "error",
    [
        "access_denied",
        "server_error",
        "invalid_request",
        "Call support at evil example now",
        "temporarily_unavailable",
    ],
)
async def test_callback_errors_never_repeat_text_from_the_query(
    server: Server, member_id: str, error: str
) -> None:
    browser = await session_browser(server, member_id)
    for state in ("", "not-a-known-state"):
        query = {"error": error, "error_description": LURE, "error_uri": "https://evil.test/x"}
        if state:
            query["state"] = state
        page = await browser.get("/oauth/callback?" + urlencode(query))
        assert page.status == 400
        assert page.headers["Content-Type"].startswith("text/html")
        for fragment in ("suspended", "555 0100", "evil", "Call support"):
            assert fragment not in page.text, (error, fragment)
        assert "Nothing was connected" in page.text or "declined" in page.text


async def test_a_known_error_code_is_named_and_explained(server: Server, member_id: str) -> None:
    browser = await session_browser(server, member_id)
    page = await browser.get(
        "/oauth/callback?" + urlencode({"error": "temporarily_unavailable", "state": "x"})
    )
    assert page.status == 400
    assert "(temporarily_unavailable)" in page.text  # the code, for a support request
    assert "is unavailable for a moment" in page.text  # our explanation of it
