"""enable_closed_captions in real headless Chromium: the conversation page shows the replica's words over the video."""

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from api import create_app
from bot.engines import EmbeddedModels
from tests.api.conftest import AUTH, api_settings, serve_api
from tests.bot.test_devroom_browser import chromium_page, join_call

pytestmark = pytest.mark.browser

SAID = "Welcome to Lisbon, the city of seven hills."


async def test_captions_show_what_the_replica_says_only_when_enabled(tmp_path: Path):
    silence = tmp_path / "silence.wav"
    soundfile.write(str(silence), np.zeros(16000 * 2, np.int16), 16000)
    settings = api_settings(tmp_path / "data")
    models = EmbeddedModels(settings)
    app = create_app(settings, models=models)
    try:
        async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as api:
            urls = {}
            for captions in (True, False):
                response = await api.post(
                    "/v2/conversations",
                    json={"persona_id": "echo", "properties": {"enable_closed_captions": captions}},
                )
                assert response.status_code == 200, response.text
                assert response.json()["properties"]["enable_closed_captions"] is captions
                urls[captions] = response.json()["conversation_url"]
            async with chromium_page(tmp_path / "profile", silence) as page:
                for captions in (True, False):
                    await join_call(page, urls[captions])
                    assert await page.evaluate("document.body.dataset.captions") == str(captions).lower()
                    await page.fill("#say", SAID)
                    await page.click("#send")
                    await page.wait_for_function(
                        "window.devroom.events.some(e => e.message.event_type === 'conversation.replica.started_speaking')",
                        timeout=40_000,
                    )
                    if captions:
                        # Over the video, while the replica speaks.
                        await page.wait_for_function("!document.getElementById('captions').hidden", timeout=20_000)
                        caption = await page.evaluate(
                            "(() => { const c = document.getElementById('captions');"
                            " return {role: c.dataset.role, text: c.querySelector('.text').textContent}; })()"
                        )
                        assert caption["role"] == "replica"
                        assert "Lisbon" in caption["text"] and "seven hills" in caption["text"]
                        box = await page.locator("#captions").bounding_box()
                        frame = await page.locator(".video-frame").bounding_box()
                        assert frame["y"] < box["y"] < frame["y"] + frame["height"], "captions sit over the video"
                    else:
                        await page.wait_for_function(
                            "window.devroom.events.some(e => e.message.event_type === 'conversation.replica.stopped_speaking')",
                            timeout=40_000,
                        )
                        assert await page.locator("#captions").is_hidden()
                        interim = await page.evaluate(
                            "window.devroom.events.filter(e => e.message.event_type === 'conversation.utterance'"
                            " && e.message.properties.role === 'replica' && !e.message.properties.final).length"
                        )
                        assert interim == 0, "no caption lines are sent when captions are off"
                    await page.click("#leave")
    finally:
        await models.close()
