"""Real headless Chromium leaves the dev room without pressing Leave: its bot ends.

A closed tab ends its bot within 2 s (the page's pagehide beacon, the data
channel closing or the peer connection closing, whichever comes first); a
browser killed outright, which says nothing, within 10 s (the peer's pings
and microphone packets stop).
"""

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.devroom import DevRoom
from tests.bot.conftest import ToneBotSessions, wait_for
from tests.bot.test_devroom_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


def chromium_pids(profile: Path) -> list[int]:
    """The processes of the Chromium running on this profile folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if f"--user-data-dir={profile}".encode() in cmdline or any(
                arg.startswith(b"--type=") for arg in cmdline
            ) and str(profile).encode() in b" ".join(cmdline):
                pids.append(int(entry.name))
    return pids


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[tuple[object, Path]]:
    """A headless Chromium (fake microphone and camera) and its profile folder."""
    import playwright.async_api as playwright_api

    assert CHROMIUM.exists(), "Chromium missing: scripts/setup.sh installs it (apt-get install chromium)"
    profile = tmp_path / "chromium-profile"
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context, profile
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 10)


@pytest.fixture
def beacons(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pc_ids of the leave beacons the dev room received."""
    received: list[str] = []
    original = DevRoom.handle_leave

    async def spy(self, leave):
        received.append(leave.pc_id)
        return await original(self, leave)

    monkeypatch.setattr(DevRoom, "handle_leave", spy)
    return received


async def join(page, url: str) -> str:
    await page.goto(url)
    await page.click("#join")
    await page.wait_for_function("document.getElementById('status').textContent === 'connected'", timeout=20_000)
    await page.wait_for_function("document.getElementById('replica').videoWidth > 0", timeout=20_000)
    return await page.evaluate("window.devroom.pcId")


async def departure(url: str, pc_id: str) -> dict:
    async with httpx.AsyncClient(base_url=url) as http:
        peers = (await http.get("/api/peers")).json()
    assert pc_id not in [p["pc_id"] for p in peers["peers"]]
    (found,) = [d for d in peers["departures"] if d["pc_id"] == pc_id]
    return found


async def test_closing_the_tab_ends_its_bot_within_2_s(
    devroom_url: str, chromium, tone_bot_sessions: ToneBotSessions, beacons: list[str], logged_errors: list[str]
) -> None:
    context, _ = chromium
    staying, leaving = await context.new_page(), await context.new_page()
    staying_id = await join(staying, devroom_url)
    leaving_id = await join(leaving, devroom_url)

    closed_at = time.monotonic()
    await leaving.close()  # the tab's close button: no Leave
    await wait_for(lambda: leaving_id in tone_bot_sessions.finished, 2.0)
    took = time.monotonic() - closed_at
    gone = await departure(devroom_url, leaving_id)
    await wait_for(lambda: leaving_id in beacons, 2.0)
    print(f"\ntab closed to bot gone: {took:.3f} s; first sign: {gone['reason']}; beacon received")
    assert gone["bot_ended_after_s"] < 2.0

    # Only the closed tab's bot ended; the other tab's call goes on.
    assert staying_id not in tone_bot_sessions.finished
    assert await staying.text_content("#status") == "connected"
    await staying.click("#leave")
    await wait_for(lambda: sorted(tone_bot_sessions.finished) == sorted(tone_bot_sessions.started), 5)
    assert tone_bot_sessions.errors == []
    assert logged_errors == []


async def test_a_killed_browser_ends_its_bot_within_10_s(
    devroom_url: str, chromium, tone_bot_sessions: ToneBotSessions, beacons: list[str], logged_errors: list[str]
) -> None:
    context, profile = chromium
    page = context.pages[0] if context.pages else await context.new_page()
    pc_id = await join(page, devroom_url)

    pids = chromium_pids(profile)
    assert pids, "found no Chromium process to kill"
    killed_at = time.monotonic()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a crash: no pagehide, no goodbye on the wire
    await wait_for(lambda: pc_id in tone_bot_sessions.finished, 10.0)
    took = time.monotonic() - killed_at
    gone = await departure(devroom_url, pc_id)
    print(f"\nbrowser killed to bot gone: {took:.3f} s; first sign: {gone['reason']}")
    assert beacons == []
    assert gone["reason"].startswith("silent for ")
    assert tone_bot_sessions.errors == []
    assert logged_errors == []
