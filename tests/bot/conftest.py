"""Fixtures for the dev room tests: a served dev room and a small stand-in bot.

``serve_devroom(on_connection)`` serves ``create_devroom_app`` with uvicorn on
127.0.0.1 (a free port) in the test's event loop and yields the base URL. The
bot is injectable: the tests pass ``tone_bot`` (below) today; the real bot
pipeline can be passed the same way.

``tone_bot`` is a real pipecat pipeline around the peer's connection:
SmallWebRTC input -> ``ToneReplyBot`` -> SmallWebRTC output. It hears speech by
loudness, and once the speaker has been quiet for ``END_OF_TURN_S`` it answers
with a short tone, speaking the interactions protocol's events on the data
channel like the real bot does. It also sends a moving test-card video.
"""

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from loguru import logger

from bot.devroom import OnConnection, camera_request, create_devroom_app
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    UserImageRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams, VideoInSourceParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

SPEECH_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
SAMPLE_RATE = 16000
VIDEO_SIZE = (320, 240)
VIDEO_FPS = 10
CAMERA_FPS = 5
SPEECH_DBFS = -38.0
END_OF_TURN_S = 0.6
MIN_SPEECH_S = 0.3
TONE_S = 0.8
TONE_HZ = 440.0


def speech_wav(name: str = "sense_and_sensibility_01_austen_64kb-0880.wav") -> Path:
    """A real human speech recording (Debian's pocketsphinx-testdata); skips when missing."""
    path = SPEECH_DIR / name
    if not path.exists():
        pytest.skip(f"{path} missing; install it with: apt-get install pocketsphinx-testdata")
    return path


def _dbfs(audio: bytes) -> float:
    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float64)
    if samples.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def _tone(seconds: float, sample_rate: int) -> bytes:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)
    return (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t) * fade).astype(np.int16).tobytes()


def _event(event_type: str, **properties: Any) -> OutputTransportMessageUrgentFrame:
    return OutputTransportMessageUrgentFrame(
        message={
            "message_type": "conversation",
            "event_type": event_type,
            "conversation_id": "devroom-test",
            "properties": properties,
        }
    )


class ToneReplyBot(FrameProcessor):
    """A stand-in bot: answers each heard turn (or ``conversation.respond``) with a tone."""

    def __init__(self, *, sample_rate: int = SAMPLE_RATE, **kwargs: Any):
        super().__init__(**kwargs)
        self._sample_rate = sample_rate
        self._speech_s = 0.0
        self._silence_s = 0.0
        self._speaking = False
        self._last_partial_s = 0.0
        self._turns = 0
        self._video_task: asyncio.Task | None = None
        self._reply_task: asyncio.Task | None = None
        self.heard_app_messages: list[Any] = []
        self.camera_frames: list[tuple[int, int]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._video_task = self.create_task(self._send_video())
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop_tasks()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InputAudioRawFrame):
            await self._hear(frame)
        elif isinstance(frame, InputTransportMessageFrame):
            await self._on_app_message(frame.message)
        elif isinstance(frame, UserImageRawFrame):
            self.camera_frames.append(frame.size)
        else:
            await self.push_frame(frame, direction)

    async def _stop_tasks(self) -> None:
        for task in (self._video_task, self._reply_task):
            if task:
                await self.cancel_task(task)
        self._video_task = self._reply_task = None

    async def _hear(self, frame: InputAudioRawFrame) -> None:
        seconds = frame.num_frames / frame.sample_rate
        if _dbfs(frame.audio) >= SPEECH_DBFS:
            self._speech_s += seconds
            self._silence_s = 0.0
            if not self._speaking and self._speech_s >= 0.06:
                self._speaking = True
                self._last_partial_s = 0.0
                await self.push_frame(_event("conversation.user.started_speaking"))
            if self._speaking and self._speech_s - self._last_partial_s >= 1.0:
                self._last_partial_s = self._speech_s
                await self._utterance("user", f"(speaking for {self._speech_s:.0f} s…)", final=False)
            return
        self._silence_s += seconds
        if self._speaking and self._silence_s >= END_OF_TURN_S:
            speech_s = self._speech_s
            self._speaking = False
            self._speech_s = 0.0
            if speech_s >= MIN_SPEECH_S:
                await self.push_frame(
                    _event("conversation.user.stopped_speaking", duration=round(speech_s, 2))
                )
                await self._utterance("user", f"({speech_s:.1f} s of speech)", final=True)
                await self._reply("(a tone)", end_of_turn_ms=self._silence_s * 1000)
        elif not self._speaking:
            self._speech_s = 0.0

    async def _on_app_message(self, message: Any) -> None:
        self.heard_app_messages.append(message)
        if not isinstance(message, dict) or message.get("message_type") != "conversation":
            return
        event_type = message.get("event_type")
        if event_type == "conversation.respond":
            text = str(message.get("properties", {}).get("text", ""))
            await self._utterance("user", text, final=True)
            await self._reply(f"you said: {text}", end_of_turn_ms=None, measure=False)
        elif event_type == "conversation.interrupt":
            if self._reply_task:
                await self.cancel_task(self._reply_task)
                self._reply_task = None
            await self.push_frame(_event("conversation.replica_interrupted"))

    async def _utterance(self, role: str, speech: str, *, final: bool) -> None:
        await self.push_frame(
            _event(
                "conversation.utterance",
                role=role,
                speech=speech,
                final=final,
                inference_id=f"turn-{self._turns}",
            )
        )

    async def _reply(self, speech: str, *, end_of_turn_ms: float | None, measure: bool = True) -> None:
        self._turns += 1
        started = time.monotonic()
        inference_id = f"turn-{self._turns}"
        tone = _tone(TONE_S, self._sample_rate)
        chunk = self._sample_rate // 50 * 2  # 20 ms
        await self.push_frame(_event("conversation.replica.started_speaking", inference_id=inference_id))
        for i in range(0, len(tone), chunk):
            await self.push_frame(
                OutputAudioRawFrame(audio=tone[i : i + chunk], sample_rate=self._sample_rate, num_channels=1)
            )
        first_audio_ms = (time.monotonic() - started) * 1000
        await self._utterance("replica", speech, final=True)
        eot = round(end_of_turn_ms) if end_of_turn_ms is not None else None
        if measure:
            await self._latency(inference_id, eot, first_audio_ms)
        if self._reply_task:
            await self.cancel_task(self._reply_task)
        self._reply_task = self.create_task(self._stopped_speaking_later(inference_id))

    async def _latency(self, inference_id: str, eot: int | None, first_audio_ms: float) -> None:
        await self.push_frame(
            _event(
                "conversation.latency",
                inference_id=inference_id,
                timings_ms={
                    "end_of_turn": eot,
                    "transcript": None,
                    "llm_first_token": None,
                    "llm_first_sentence": None,
                    "tts_first_audio": round(first_audio_ms, 1),
                    "first_frame": None,
                    "total": round((eot or 0) + first_audio_ms, 1),
                },
            )
        )

    async def _stopped_speaking_later(self, inference_id: str) -> None:
        await asyncio.sleep(TONE_S)
        await self.push_frame(
            _event("conversation.replica.stopped_speaking", inference_id=inference_id, duration=TONE_S)
        )

    async def _send_video(self) -> None:
        width, height = VIDEO_SIZE
        x = np.arange(width)[None, :, None]
        y = np.arange(height)[:, None, None]
        n = 0
        while True:
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[...] = (20, 60, 80)
            image[:, :, 1:2] = (40 + 80 * y / height).astype(np.uint8)
            bar = (n * 8) % width
            image[:, bar : bar + 12, :] = (240, 200, 80)
            inside = (x - width // 2) ** 2 + (y - height // 2) ** 2 < (height // 4) ** 2
            image[inside[..., 0]] = (230, 230, 230)
            await self.push_frame(
                OutputImageRawFrame(image=image.tobytes(), size=VIDEO_SIZE, format="RGB")
            )
            n += 1
            await asyncio.sleep(1 / VIDEO_FPS)


@dataclass
class ToneBotSessions:
    """What the stand-in bots did, one entry per peer, for the tests to check."""

    started: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    bots: dict[str, ToneReplyBot] = field(default_factory=dict)
    connections: dict[str, SmallWebRTCConnection] = field(default_factory=dict)


def make_tone_bot(sessions: ToneBotSessions, *, ask_for_camera: bool = True) -> OnConnection:
    """An ``on_connection`` running the tone bot until its peer leaves.

    It asks the page for its camera at ``CAMERA_FPS`` and ``VIDEO_SIZE``
    (``camera_request``) unless ``ask_for_camera`` is false.
    """

    async def run_tone_bot(connection: SmallWebRTCConnection) -> None:
        pc_id = connection.pc_id
        sessions.started.append(pc_id)
        if ask_for_camera:
            connection.send_app_message(
                camera_request(framerate=CAMERA_FPS, width=VIDEO_SIZE[0], height=VIDEO_SIZE[1])
            )
        transport = SmallWebRTCTransport(
            connection,
            TransportParams(
                audio_in_enabled=True,
                audio_in_sample_rate=SAMPLE_RATE,
                audio_out_enabled=True,
                audio_out_sample_rate=SAMPLE_RATE,
                video_out_enabled=True,
                video_out_width=VIDEO_SIZE[0],
                video_out_height=VIDEO_SIZE[1],
                video_in_enabled=True,
                video_in_sources={"camera": VideoInSourceParams(framerate=CAMERA_FPS)},
            ),
        )
        bot = ToneReplyBot()
        sessions.bots[pc_id] = bot
        sessions.connections[pc_id] = connection
        worker = PipelineWorker(
            Pipeline([transport.input(), bot, transport.output()]), idle_timeout_secs=None
        )

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _client: Any) -> None:
            sessions.disconnected.append(pc_id)
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        try:
            await runner.run()
        except Exception as e:
            sessions.errors.append(e)
            raise
        finally:
            sessions.finished.append(pc_id)

    return run_tone_bot


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serve_devroom(on_connection: OnConnection, **app_kwargs: Any) -> AsyncIterator[str]:
    """Serve the dev room on 127.0.0.1 in this event loop; yields its base URL."""
    async with serve_app(create_devroom_app(on_connection=on_connection, **app_kwargs)) as url:
        yield url


@contextlib.asynccontextmanager
async def serve_app(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app (lifespan on) on 127.0.0.1 in this event loop; yields its base URL."""
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    server_task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            if server_task.done():
                server_task.result()
            await asyncio.sleep(0.025)
        else:
            raise TimeoutError("dev room server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(server_task, 15)


@pytest.fixture
def tone_bot_sessions() -> ToneBotSessions:
    return ToneBotSessions()


@pytest.fixture
def devroom_on_connection(tone_bot_sessions: ToneBotSessions) -> OnConnection:
    """The bot each test peer meets; override this fixture to test another bot."""
    return make_tone_bot(tone_bot_sessions)


@pytest.fixture
async def devroom_url(devroom_on_connection: OnConnection) -> AsyncIterator[str]:
    """A running dev room's base URL."""
    async with serve_devroom(devroom_on_connection) as url:
        yield url


@pytest.fixture
def logged_errors() -> Any:
    """Loguru ERROR records logged during the test (pipecat logs, rather than raises)."""
    records: list[str] = []
    sink_id = logger.add(lambda m: records.append(str(m)), level="ERROR", format="{name}: {message}")
    yield records
    logger.remove(sink_id)


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``condition`` until true; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)
