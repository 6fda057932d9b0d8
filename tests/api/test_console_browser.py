"""The API's own page at ``/`` in real headless Chromium: a person lists, starts and ends conversations."""

from pathlib import Path

import httpx
import pytest

from api import create_app
from tests.api.conftest import AUTH, KEY, NoEngines, api_settings, serve_api

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")


async def test_the_console_starts_lists_and_ends_a_conversation(tmp_path):
    import playwright.async_api as playwright_api

    assert CHROMIUM.exists(), "Chromium missing: scripts/setup.sh installs it (apt-get install chromium)"
    settings = api_settings(tmp_path / "data")
    app = create_app(settings, models=NoEngines(settings))
    async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH) as api:
        existing = (await api.post("/v2/conversations", json={"persona_id": "ava", "test_mode": True})).json()
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = await browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{base}/")
                # Without a key the page says so, in the API's words.
                await page.wait_for_function("document.getElementById('error').textContent.includes('401')")
                await page.fill("#key", KEY)
                await page.click("#save-key")
                row = page.locator(f"tr[data-conversation-id='{existing['conversation_id']}']")
                await row.wait_for()
                assert "ended" in await row.inner_text()
                await page.wait_for_function("document.querySelectorAll('#persona option').length >= 2")
                await page.select_option("#persona", "max")
                await page.select_option("#replica", "ada")
                await page.fill("#name", "from the page")
                await page.click("#start-button")
                link = page.locator("#started a")
                await link.wait_for()
                url = await link.get_attribute("href")

                listed = (await api.get("/v2/conversations?status=active")).json()["data"]
                assert [(c["conversation_name"], c["persona_id"], c["replica_id"]) for c in listed] == [
                    ("from the page", "max", "ada")
                ]
                cid = listed[0]["conversation_id"]
                assert url == f"{base}/conversations/{cid}/"
                started = page.locator(f"tr[data-conversation-id='{cid}']")
                await started.wait_for()
                await started.locator("button.end").click()
                await page.wait_for_function(
                    "cid => document.querySelector(`tr[data-conversation-id='${cid}']`).textContent.includes('ended')",
                    arg=cid,
                )
                got = (await api.get(f"/v2/conversations/{cid}?verbose=true")).json()
                assert got["status"] == "ended" and got["shutdown_reason"] == "end_conversation_endpoint_hit"
                assert not errors, errors
            finally:
                await browser.close()
