"""pipeline_mode="echo" in the dev room page itself: what is typed in Say is spoken back, with no LLM.

The app is the one ``run.py --persona echo`` serves (``create_dev_room``), in
real headless Chromium; the page learns the mode from ``GET /api/config``.
"""

import asyncio
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import uvicorn

from bot.engines import EmbeddedModels
from bot.rooms import create_dev_room
from tests.bot.test_devroom_browser import CHROMIUM, CHROMIUM_ARGS, STATS_SCRIPT

pytestmark = pytest.mark.browser

SAID = "Welcome to Lisbon, the city of seven hills."


async def test_say_box_is_spoken_back_by_an_echo_persona(settings, tmp_path: Path):
    import playwright.async_api as playwright_api

    silence = tmp_path / "silence.wav"
    soundfile.write(str(silence), np.zeros(16000 * 2, np.int16), 16000)
    models = EmbeddedModels(settings)
    app = create_dev_room(settings, persona_name="echo", models=models)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), serving.result()
            await asyncio.sleep(0.05)
        async with playwright_api.async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                user_data_dir=str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
                args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={silence}"],
            )  # fmt: skip
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                await page.goto(f"http://127.0.0.1:{port}")
                await page.click("#join")
                await page.wait_for_function(
                    "document.getElementById('status').textContent === 'connected'", timeout=30_000
                )
                await asyncio.sleep(1.0)  # the data channel opens just after 'connected'
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
            finally:
                await context.close()
        with pytest.raises(RuntimeError):
            models.llm_base_url  # no LLM was started for the echo persona
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
        await models.close()
