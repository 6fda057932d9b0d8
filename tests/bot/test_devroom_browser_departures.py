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
import numpy as np
import pytest
import soundfile

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
    """A headless Chromium (fake camera; its fake microphone is silent) and its profile folder."""
    import playwright.async_api as playwright_api

    assert CHROMIUM.exists(), "Chromium missing: scripts/setup.sh installs it (apt-get install chromium)"
    profile = tmp_path / "chromium-profile"
    silence = tmp_path / "silence.wav"
    soundfile.write(str(silence), np.zeros(16000 * 120, np.int16), 16000)
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={silence}"],
        )
        try:
            yield context, profile
        finally:
            with contextlib.suppress(playwright_api.Error, TimeoutError):  # the browser may be killed
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


def process_cpu_s() -> float:
    """CPU seconds this process (where the bot runs) has used, all threads."""
    return time.process_time()


def llm_requests_open(port: int) -> int:
    """Established TCP connections from this process (the bot's) to the LLM server's port."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
            count += 1
    return count


async def llm_busy(llm_root: str) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as http:
        slots = (await http.get(f"{llm_root}/slots")).json()
    return any(slot.get("is_processing") for slot in slots)


async def test_closing_the_tab_mid_reply_stops_the_real_bot_its_renderer_and_llm_request(
    settings, embedded_models, chromium, logged_errors: list[str]
) -> None:
    """The real pipeline (persona ava): the tab closes while the LLM writes a reply."""
    from bot.rooms import dev_room_bot
    from personas import load_persona
    from tests.bot.conftest import serve_devroom

    await embedded_models.prepare(load_persona("ava"))
    llm_root = embedded_models.llm_base_url.removesuffix("/v1")
    llm_port = int(llm_root.rsplit(":", 1)[1])
    context, _ = chromium
    page = context.pages[0] if context.pages else await context.new_page()
    async with serve_devroom(dev_room_bot(settings, embedded_models, persona_name="ava")) as url:
        pc_id = await join(page, url)
        # The greeting, start to end.
        await page.wait_for_function(
            "window.devroom.events.some((e) => e.message.event_type === 'conversation.replica.stopped_speaking')",
            timeout=40_000,
        )
        await page.fill("#say", "Tell me the whole history of Lisbon, century by century.")
        await page.click("#send")
        deadline = time.monotonic() + 40
        while not (await llm_busy(llm_root) and llm_requests_open(llm_port)):
            assert time.monotonic() < deadline, "the LLM never started on the question"
            await asyncio.sleep(0.02)

        closed_at = time.monotonic()
        await page.close()  # mid-reply, no Leave
        async with httpx.AsyncClient(base_url=url) as http:
            while pc_id in [p["pc_id"] for p in (await http.get("/api/peers")).json()["peers"]]:
                assert time.monotonic() - closed_at < 2.0, "the bot still runs 2 s after its tab closed"
                await asyncio.sleep(0.02)
        bot_gone_s = time.monotonic() - closed_at
        while llm_requests_open(llm_port):
            assert time.monotonic() - closed_at < 2.0, "the LLM request is still open 2 s after the tab closed"
            await asyncio.sleep(0.02)
        request_closed_s = time.monotonic() - closed_at
        # llama-server stops writing a reply at its next token after the client hung up
        # (a prompt being read is finished first): printed, as it depends on the machine's load.
        while await llm_busy(llm_root) and time.monotonic() - closed_at < 30:
            await asyncio.sleep(0.05)
        llm_idle_s = time.monotonic() - closed_at
        gone = await departure(url, pc_id)

        # Nothing renders or encodes for the gone peer: this process is idle.
        cpu_before, wall_before = process_cpu_s(), time.monotonic()
        await asyncio.sleep(1.5)
        load = (process_cpu_s() - cpu_before) / (time.monotonic() - wall_before)
    print(f"\ntab closed mid-reply: bot gone {bot_gone_s:.3f} s ({gone['reason']}), LLM request closed "
          f"{request_closed_s:.3f} s, llama-server idle {llm_idle_s:.3f} s; this process then uses {load:.2f} of a core")
    assert load < 0.15
    assert logged_errors == []
