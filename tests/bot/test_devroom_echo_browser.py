"""pipeline_mode="echo" in the dev room page itself: what is typed in Say is spoken back, with no LLM.

The app is the one ``run.py --persona echo`` serves (``create_dev_room``), in
real headless Chromium; the page learns the mode from ``GET /api/config``.
"""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bot.engines import EmbeddedModels
from bot.rooms import create_dev_room
from tests.bot.conftest import serve_app
from tests.bot.test_devroom_browser import STATS_SCRIPT, chromium_page, join_call

pytestmark = pytest.mark.browser

SAID = "Welcome to Lisbon, the city of seven hills."


async def test_say_box_is_spoken_back_by_an_echo_persona(settings, tmp_path: Path):
    silence = tmp_path / "silence.wav"
    soundfile.write(str(silence), np.zeros(16000 * 2, np.int16), 16000)
    models = EmbeddedModels(settings)
    app = create_dev_room(settings, persona_name="echo", models=models)
    try:
        async with serve_app(app) as url, chromium_page(tmp_path / "profile", silence) as page:
            await join_call(page, url)
            before = await page.evaluate(STATS_SCRIPT)
            await page.fill("#say", SAID)
            started = time.monotonic()
            await page.click("#send")
            deadline = time.monotonic() + 40
            while True:
                stats = await page.evaluate(STATS_SCRIPT)
                if stats["audioEnergy"] > before["audioEnergy"] + 1e-4:
                    break
                assert time.monotonic() < deadline, "the echo was never heard at the page"
                await asyncio.sleep(0.2)
            print(f"\nSay -> audible at the page: {(time.monotonic() - started) * 1000:.0f} ms")
            started_speaking = await page.evaluate(
                "window.devroom.events.filter(e => e.message.event_type === 'conversation.replica.started_speaking').length"
            )
            assert started_speaking >= 1
        with pytest.raises(RuntimeError):
            models.llm_base_url  # no LLM was started for the echo persona
    finally:
        await models.close()
