"""The dev room page in real headless Chromium with a fake microphone and camera.

Chromium plays a real speech recording (followed by silence, looped) as its
microphone; the page joins over loopback with no STUN server and must show the
replica's video, play its audio, and show the transcript and latency the bot
sends. Set ``DEVROOM_SCREENSHOT=<path>`` to keep a screenshot of the connected
page (``docs/devroom.png`` is made that way).
"""

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.bot.conftest import ToneBotSessions, speech_wav, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

STATS_SCRIPT = """async () => {
  const pc = window.devroom.pc;
  if (!pc) return null;
  const out = {audioBytes: 0, audioEnergy: 0, videoFrames: 0, pair: null};
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.audioBytes += s.bytesReceived || 0;
      out.audioEnergy += s.totalAudioEnergy || 0;
    }
    if (s.type === "inbound-rtp" && s.kind === "video") out.videoFrames += s.framesDecoded || 0;
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") out.pair = s.id;
  });
  const video = document.getElementById("replica");
  out.videoTracks = video.srcObject ? video.srcObject.getVideoTracks().length : 0;
  out.audioTracks = video.srcObject ? video.srcObject.getAudioTracks().length : 0;
  out.videoWidth = video.videoWidth;
  return out;
}"""


async def stats_once_audible(page, timeout_s: float = 10.0) -> dict:
    """The page's WebRTC stats, once some replica audio energy has been played out."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await page.evaluate(STATS_SCRIPT)
        if stats and stats["audioEnergy"] > 0 or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.2)


@pytest.fixture
def fake_microphone_wav(tmp_path: Path) -> Path:
    """Real speech then 2 s of silence, so each loop of Chromium's fake mic is one turn."""
    speech, rate = soundfile.read(str(speech_wav()), dtype="int16")
    path = tmp_path / "fake-mic.wav"
    soundfile.write(str(path), np.concatenate([speech, np.zeros(2 * rate, np.int16)]), rate)
    return path


@pytest.fixture
async def browser_page(fake_microphone_wav: Path, tmp_path: Path) -> AsyncIterator[object]:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.skip("Chromium missing; install it with: apt-get install chromium")
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={fake_microphone_wav}"],
            viewport={"width": 1280, "height": 800},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            yield page
        finally:
            await context.close()


async def test_page_joins_hears_and_shows_the_replica(
    devroom_url: str,
    browser_page,
    tone_bot_sessions: ToneBotSessions,
    logged_errors: list[str],
    tmp_path: Path,
) -> None:
    page = browser_page
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))

    await page.goto(devroom_url)
    assert await page.text_content("#status") == "idle"
    await page.click("#join")
    await page.wait_for_function(
        "document.getElementById('status').textContent === 'connected'", timeout=20_000
    )

    # The fake mic's speech ends a turn; the bot answers with a tone and events.
    await page.wait_for_selector("#transcript li[data-role='replica']", timeout=20_000)
    await page.wait_for_function(
        "document.getElementById('latency-total').textContent !== '–'", timeout=10_000
    )
    await page.fill("#say", "hello")
    await page.click("#send")
    await page.wait_for_selector("#transcript li:has-text('you said: hello')", timeout=10_000)
    await page.wait_for_function(
        "document.getElementById('replica').videoWidth > 0", timeout=10_000
    )

    stats = await stats_once_audible(page)
    print(f"\nbrowser stats: {stats}")
    assert stats["pair"], "no nominated ICE candidate pair"
    assert stats["audioTracks"] == 1 and stats["videoTracks"] == 1
    assert stats["videoWidth"] == 320 and stats["videoFrames"] > 10
    assert stats["audioBytes"] > 0 and stats["audioEnergy"] > 0

    transcript = await page.inner_text("#transcript")
    latency = await page.inner_text("#latency")
    print(f"transcript:\n{transcript}\nlatency panel:\n{latency}")
    assert "You" in transcript and "(a tone)" in transcript
    assert "End of turn" in latency

    screenshot = Path(os.environ.get("DEVROOM_SCREENSHOT") or tmp_path / "devroom.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(screenshot))

    await page.click("#leave")
    assert (await page.text_content("#status")).startswith("disconnected")
    await wait_for(lambda: tone_bot_sessions.finished == tone_bot_sessions.started, 10)
    (bot,) = tone_bot_sessions.bots.values()
    assert bot.camera_frames, "the bot saw no frame of the browser's camera"
    assert tone_bot_sessions.errors == []
    assert logged_errors == []
    assert console_errors == [], console_errors
    assert all(url.startswith(devroom_url) for _, url in requests), requests
    assert ("PATCH", f"{devroom_url}/api/offer") in requests, "no ICE candidate was trickled"


REFUSE_CAMERA = """(() => {
  const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) =>
    constraints && constraints.video
      ? Promise.reject(new DOMException("camera refused", "NotAllowedError"))
      : real(constraints);
})();"""


async def test_page_joins_audio_only_when_the_camera_is_refused(
    devroom_url: str, browser_page, tone_bot_sessions: ToneBotSessions, logged_errors: list[str]
) -> None:
    page = browser_page
    await page.add_init_script(REFUSE_CAMERA)
    await page.goto(devroom_url)
    await page.click("#join")
    await page.wait_for_function(
        "document.getElementById('status').textContent === 'connected'", timeout=20_000
    )
    await page.wait_for_selector("#transcript li[data-role='replica']", timeout=20_000)
    note = await page.inner_text("#media-note")
    stats = await stats_once_audible(page)
    print(f"\ncamera refused: note {note!r}; stats {stats}")
    assert "audio only" in note
    assert stats["audioBytes"] > 0 and stats["audioEnergy"] > 0
    assert stats["videoTracks"] == 1  # the replica's video still arrives
    await page.click("#leave")
    await wait_for(lambda: tone_bot_sessions.finished == tone_bot_sessions.started, 10)
    assert tone_bot_sessions.errors == []
    assert logged_errors == []
