"""The camera costs nothing unless a layer looks at it (real headless Chromium).

With perception off (Max, the maths tutor) the page sends no camera and the
bot decodes not one camera frame; a bot that asks for the camera gets it at
the rate and size it asked for. Decoded frames are counted inside aiortc, in
this process, where the bot runs.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiortc.rtcrtpreceiver
from bot.pipeline import camera_in_framerate, transport_media_params
from personas import load_persona
from pipecat.frames.frames import Frame, UserImageRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner
from tests.bot.conftest import CAMERA_FPS, VIDEO_SIZE, ToneBotSessions, serve_devroom, wait_for
from tests.bot.test_devroom_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

CAMERA_STATS = """async () => {
  const out = {bytesSent: 0, framesEncoded: 0, frameWidth: 0, frameHeight: 0};
  (await window.devroom.pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "video") {
      out.bytesSent += s.bytesSent || 0;
      out.framesEncoded += s.framesEncoded || 0;
      out.frameWidth = s.frameWidth || out.frameWidth;
      out.frameHeight = s.frameHeight || out.frameHeight;
    }
  });
  return out;
}"""


class CountingDecoder:
    """Wraps an aiortc decoder and counts the video frames it decodes."""

    def __init__(self, decoder: Any, counts: dict[str, int]):
        self._decoder = decoder
        self._counts = counts

    def decode(self, encoded_frame: Any) -> list:
        frames = self._decoder.decode(encoded_frame)
        self._counts["video"] += len(frames)
        return frames


@pytest.fixture
def decoded_video_frames(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many video frames aiortc decoded in this process (the bot's side)."""
    counts = {"video": 0}
    real_get_decoder = aiortc.rtcrtpreceiver.get_decoder

    def get_decoder(codec: Any) -> Any:
        decoder = real_get_decoder(codec)
        return CountingDecoder(decoder, counts) if codec.mimeType.lower().startswith("video/") else decoder

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", get_decoder)
    return counts


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    import playwright.async_api as playwright_api

    assert CHROMIUM.exists(), "Chromium missing: scripts/setup.sh installs it (apt-get install chromium)"
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


class CameraFrames(FrameProcessor):
    """Counts the camera frames that reach the pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, UserImageRawFrame):
            self.frames += 1
        await self.push_frame(frame, direction)


async def join(page: Any, url: str) -> None:
    await page.goto(url)
    await page.click("#join")
    await page.wait_for_function("document.getElementById('status').textContent === 'connected'", timeout=20_000)


async def test_with_perception_off_no_camera_is_sent_or_decoded(
    page: Any, decoded_video_frames: dict[str, int], logged_errors: list[str]
) -> None:
    persona = load_persona("max")
    assert persona.layers.perception.perception_model == "off"
    assert camera_in_framerate(persona) is None
    assert not transport_media_params(persona).get("video_in_enabled")
    seen = CameraFrames()
    finished: list[str] = []

    async def media_only_bot(connection) -> None:
        """The dev room bot's transport, as ``transport_media_params`` sets it for the persona."""
        transport = SmallWebRTCTransport(connection, TransportParams(**transport_media_params(persona)))
        worker = PipelineWorker(Pipeline([transport.input(), seen, transport.output()]), idle_timeout_secs=None)

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _client: Any) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        try:
            await runner.run()
        finally:
            finished.append(connection.pc_id)

    async with serve_devroom(media_only_bot) as url:
        await join(page, url)
        await asyncio.sleep(4.0)  # a few seconds of a call
        stats = await page.evaluate(CAMERA_STATS)
        self_view = await page.get_attribute("#self-view", "data-live")
        sending = await page.evaluate("window.devroom.cameraSending")
        print(f"\nperception off: page camera {stats}, self view live {self_view}, "
              f"bot decoded {decoded_video_frames['video']} video frames")
        await page.click("#leave")
        await wait_for(lambda: len(finished) == 1, 5)

    assert self_view == "true"  # the user still sees themselves
    assert sending is False
    assert stats["framesEncoded"] == 0 and stats["bytesSent"] == 0
    assert decoded_video_frames["video"] == 0
    assert seen.frames == 0
    assert logged_errors == []


async def test_the_camera_comes_at_the_rate_and_size_the_bot_asks_for(
    page: Any,
    devroom_url: str,
    tone_bot_sessions: ToneBotSessions,
    decoded_video_frames: dict[str, int],
    logged_errors: list[str],
) -> None:
    await join(page, devroom_url)
    await page.wait_for_function("window.devroom.cameraSending", timeout=10_000)
    await asyncio.sleep(2.0)  # let the encoder settle at the asked rate
    before = await page.evaluate(CAMERA_STATS)
    decoded_before = decoded_video_frames["video"]
    await asyncio.sleep(4.0)
    after = await page.evaluate(CAMERA_STATS)
    decoded = decoded_video_frames["video"] - decoded_before
    asked = await page.evaluate("window.devroom.cameraAsked")
    sent_fps = (after["framesEncoded"] - before["framesEncoded"]) / 4.0
    print(f"\nasked {asked}; page sent {after['frameWidth']}x{after['frameHeight']} at {sent_fps:.1f} fps; "
          f"bot decoded {decoded / 4.0:.1f} fps")
    await page.click("#leave")
    await wait_for(lambda: tone_bot_sessions.finished == tone_bot_sessions.started, 5)

    assert asked == {"type": "devroom.camera", "send": True, "framerate": CAMERA_FPS,
                     "width": VIDEO_SIZE[0], "height": VIDEO_SIZE[1]}
    assert (after["frameWidth"], after["frameHeight"]) == VIDEO_SIZE
    assert 0.5 * CAMERA_FPS <= sent_fps <= 1.3 * CAMERA_FPS
    assert decoded <= 1.3 * CAMERA_FPS * 4.0
    (bot,) = tone_bot_sessions.bots.values()
    assert bot.camera_frames and set(bot.camera_frames) == {VIDEO_SIZE}
    assert tone_bot_sessions.errors == []
    assert logged_errors == []
