"""A Python peer for the dev room: a scripted user with a microphone and a camera.

Used by the tests and by latency benchmarks. It speaks the same HTTP
signalling as the page in ``bot/static/`` (``POST /api/offer``, no trickle:
aiortc puts every candidate in its offer), creates the transceivers in the
order pipecat's SmallWebRTC expects (audio, then camera video), opens the
``"chat"`` data channel with the keep-alive pings pipecat uses to tell a live
peer from a gone one, and answers the bot's renegotiation requests.

Example::

    async with DevRoomClient("http://127.0.0.1:7860") as client:
        await client.connect()
        playback = await client.play_wav("question.wav")      # real-time pace
        heard_at = await client.wait_for_audio(after=playback.ended_at)
        print(f"first audible reply {heard_at - playback.ended_at:.3f} s after speech")
        audio, rate = client.received_audio()
        utterances = [m.data for m in client.messages
                      if m.data.get("event_type") == "conversation.utterance"]

All timestamps are ``time.monotonic()`` seconds in this process.
"""

import asyncio
import contextlib
import dataclasses
import fractions
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import soundfile
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from loguru import logger

from bot.devroom import allow_loopback_ice_candidates
from bot.jitter_buffers import release_video_frames_when_whole, shorten_audio_jitter_buffers

MIC_SAMPLE_RATE = 48000
MIC_FRAME_MS = 20
CAMERA_FRAMERATE = 10
DATA_CHANNEL_LABEL = "chat"
PING_INTERVAL_S = 1.0
SIGNALLING_TYPE = "signalling"


@dataclass(frozen=True)
class Playback:
    """When a played file went out: the first and the last sample handed to the encoder."""

    started_at: float
    ended_at: float
    duration_s: float


@dataclass(frozen=True)
class ReceivedAudioFrame:
    """One decoded audio frame from the bot, mono int16, with its arrival time."""

    arrived_at: float
    samples: np.ndarray
    sample_rate: int

    @property
    def rms_dbfs(self) -> float:
        """Loudness of the frame in dB relative to full scale (-inf for silence)."""
        if self.samples.size == 0:
            return -math.inf
        rms = float(np.sqrt(np.mean(np.square(self.samples.astype(np.float64)))))
        return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


@dataclass(frozen=True)
class ReceivedVideoFrame:
    """One decoded video frame from the bot; ``image`` is RGB (H, W, 3) when kept."""

    arrived_at: float
    width: int
    height: int
    image: np.ndarray | None
    #: What ``video_probe`` returned for this frame (None without a probe).
    probe: Any = None


@dataclass(frozen=True)
class ReceivedMessage:
    """One app message from the bot's data channel (signalling messages excluded)."""

    arrived_at: float
    data: Any


def load_wav_mono(path: str | Path, sample_rate: int = MIC_SAMPLE_RATE) -> np.ndarray:
    """Read an audio file (any rate, any channels) as mono int16 at ``sample_rate``."""
    data, file_rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    channels = data.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    if channels > 2:
        data = data.mean(axis=1, keepdims=True).astype(np.int16)
        layout = "mono"
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data).reshape(1, -1), format="s16", layout=layout
    )
    frame.sample_rate = file_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


class MicrophoneTrack(MediaStreamTrack):
    """An audio track that plays queued clips at real-time pace, silence otherwise."""

    kind = "audio"

    def __init__(self, sample_rate: int = MIC_SAMPLE_RATE, frame_ms: int = MIC_FRAME_MS):
        super().__init__()
        self._sample_rate = sample_rate
        self._samples_per_frame = sample_rate * frame_ms // 1000
        self._clips: deque[tuple[np.ndarray, asyncio.Future[Playback]]] = deque()
        self._offset = 0
        self._clip_started_at: float | None = None
        self._pts = 0
        self._start: float | None = None

    def queue_clip(self, samples: np.ndarray) -> asyncio.Future[Playback]:
        """Queue mono int16 samples; the future resolves once the last one is sent."""
        done: asyncio.Future[Playback] = asyncio.get_running_loop().create_future()
        self._clips.append((samples, done))
        return done

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / self._sample_rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

        out = np.zeros(self._samples_per_frame, dtype=np.int16)
        filled = 0
        while filled < self._samples_per_frame and self._clips:
            clip, done = self._clips[0]
            if self._offset == 0:
                self._clip_started_at = time.monotonic()
            take = min(self._samples_per_frame - filled, clip.size - self._offset)
            out[filled : filled + take] = clip[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset >= clip.size:
                self._clips.popleft()
                self._offset = 0
                now = time.monotonic()
                started = self._clip_started_at if self._clip_started_at is not None else now
                if not done.done():
                    done.set_result(
                        Playback(
                            started_at=started,
                            ended_at=now,
                            duration_s=clip.size / self._sample_rate,
                        )
                    )

        frame = av.AudioFrame.from_ndarray(out.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._sample_rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self._sample_rate)
        self._pts += self._samples_per_frame
        return frame

    def stop(self) -> None:
        while self._clips:
            _, done = self._clips.popleft()
            if not done.done():
                done.cancel()
        super().stop()


class StillCameraTrack(MediaStreamTrack):
    """A video track that sends one still RGB image over and over."""

    kind = "video"

    def __init__(self, image: np.ndarray, framerate: int = CAMERA_FRAMERATE):
        super().__init__()
        height, width = image.shape[:2]
        # Encoders want even dimensions.
        self._image = np.ascontiguousarray(image[: height - height % 2, : width - width % 2, :3])
        self._framerate = framerate
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / 90000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = av.VideoFrame.from_ndarray(self._image, format="rgb24")
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 90000)
        self._pts += 90000 // self._framerate
        return frame


def load_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB array (H, W, 3) with PyAV."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


@dataclass
class _Waiters:
    audio: asyncio.Event = field(default_factory=asyncio.Event)
    video: asyncio.Event = field(default_factory=asyncio.Event)
    message: asyncio.Event = field(default_factory=asyncio.Event)


class DevRoomClient:
    """A scripted peer for the dev room; use as ``async with DevRoomClient(url) as c``.

    Args:
        base_url: The dev room, e.g. ``"http://127.0.0.1:7860"``.
        camera: A still image (file path or RGB array) to send as the camera, or
            ``None`` to send no camera (its transceiver is there, with no track).
        keep_video_images: How many of the most recent received frames keep their
            pixels in ``video_frames`` (all keep their timestamps and size).
        request_timeout_s: Timeout for each signalling request.
        allow_loopback_ice: Offer 127.0.0.1 ICE candidates (see
            :func:`bot.devroom.allow_loopback_ice_candidates`); needed on a
            loopback-only machine.
        audio_jitter_prefetch: Packets buffered before received audio plays
            out; aiortc's default of 4 adds 80 ms that a browser on loopback,
            whose buffer adapts, would not (the latency benchmark sets 1).
        video_when_whole: Take each received video frame as soon as its last
            packet is in, as a browser does, rather than when the next frame
            starts arriving (aiortc's way, 40 ms later at 25 fps).
        video_probe: Called with every received frame's RGB pixels; what it
            returns is kept in ``ReceivedVideoFrame.probe`` (e.g. a small crop
            to measure over the whole call).
    """

    def __init__(
        self,
        base_url: str,
        *,
        camera: str | Path | np.ndarray | None = None,
        keep_video_images: int = 30,
        request_timeout_s: float = 20.0,
        allow_loopback_ice: bool = True,
        audio_jitter_prefetch: int | None = None,
        video_when_whole: bool = False,
        video_probe: Callable[[np.ndarray], Any] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self._audio_jitter_prefetch = audio_jitter_prefetch
        self._video_when_whole = video_when_whole
        self._video_probe = video_probe
        self._camera_image = load_image_rgb(camera) if isinstance(camera, (str, Path)) else camera
        self._keep_video_images = keep_video_images
        self._allow_loopback_ice = allow_loopback_ice
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=request_timeout_s)
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._channel_open = asyncio.Event()
        self._peer_left = asyncio.Event()
        self._mic = MicrophoneTrack()
        self._camera: StillCameraTrack | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters = _Waiters()
        self._renegotiating = False
        self._silent = False
        self.pc_id: str | None = None
        #: Every audio frame received from the bot, in arrival order.
        self.audio_frames: list[ReceivedAudioFrame] = []
        #: Every video frame received from the bot (pixels only for the latest few).
        self.video_frames: list[ReceivedVideoFrame] = []
        #: Every app message received on the data channel, in arrival order.
        self.messages: list[ReceivedMessage] = []

    async def __aenter__(self) -> "DevRoomClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connection_state(self) -> str:
        """The peer connection's state (``"new"`` before :meth:`connect`)."""
        return self._pc.connectionState if self._pc else "new"

    @property
    def peer_left(self) -> bool:
        """Whether the bot said it left (a ``peerLeft`` signalling message)."""
        return self._peer_left.is_set()

    async def connect(self, timeout_s: float = 20.0) -> None:
        """Offer, get the answer, and wait until media flows and the data channel is open."""
        if self._allow_loopback_ice:
            allow_loopback_ice_candidates()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            logger.debug(f"devroom client: connection {pc.connectionState}")
            if pc.connectionState == "connected":
                connected.set()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            reader = self._read_audio(track) if track.kind == "audio" else self._read_video(track)
            self._spawn(reader)

        pc.addTransceiver(self._mic, direction="sendrecv")
        if self._camera_image is not None:
            self._camera = StillCameraTrack(self._camera_image)
            pc.addTransceiver(self._camera, direction="sendrecv")
        else:
            # Like a browser whose camera is off: a sendrecv transceiver with no
            # track. pipecat 1.14 with camera input enabled logs an
            # AttributeError at hang-up when the camera transceiver is recvonly.
            pc.addTransceiver("video", direction="sendrecv")
        self._open_channel(pc)
        if self._audio_jitter_prefetch is not None:
            shorten_audio_jitter_buffers(pc, prefetch=self._audio_jitter_prefetch)
        if self._video_when_whole:
            release_video_frames_when_whole(pc)

        await self._negotiate()
        await asyncio.wait_for(
            asyncio.gather(connected.wait(), self._channel_open.wait()), timeout_s
        )

    def _open_channel(self, pc: RTCPeerConnection) -> None:
        channel = pc.createDataChannel(DATA_CHANNEL_LABEL, ordered=True)
        self._channel = channel

        @channel.on("open")
        def on_open() -> None:
            self._channel_open.set()
            self._spawn(self._ping())

        @channel.on("message")
        def on_message(raw: str | bytes) -> None:
            self._on_channel_message(raw)

    async def _negotiate(self) -> None:
        assert self._pc is not None
        offer = await self._pc.createOffer()
        await self._pc.setLocalDescription(offer)
        body = {
            "sdp": self._pc.localDescription.sdp,
            "type": self._pc.localDescription.type,
            "pc_id": self.pc_id,
            "restart_pc": False,
        }
        response = await self._http.post("/api/offer", json=body)
        response.raise_for_status()
        answer = response.json()
        self.pc_id = answer["pc_id"]
        await self._pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
        )

    async def _renegotiate(self) -> None:
        if self._renegotiating or self._pc is None or self._pc.connectionState == "closed":
            return
        self._renegotiating = True
        try:
            await self._negotiate()
        except (httpx.HTTPError, ValueError) as e:
            logger.warning(f"devroom client: renegotiation failed: {e}")
        finally:
            self._renegotiating = False

    def _on_channel_message(self, raw: str | bytes) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            logger.warning(f"devroom client: non-JSON data channel message {raw!r:.80}")
            return
        if isinstance(data, dict) and data.get("type") == SIGNALLING_TYPE:
            kind = (data.get("message") or {}).get("type")
            if kind == "renegotiate":
                self._spawn(self._renegotiate())
            elif kind == "peerLeft":
                self._peer_left.set()
            return
        self.messages.append(ReceivedMessage(arrived_at=time.monotonic(), data=data))
        self._waiters.message.set()

    async def _ping(self) -> None:
        while self._channel is not None and self._channel.readyState == "open" and not self._silent:
            self._channel.send(f"ping: {int(time.time() * 1000)}")
            await asyncio.sleep(PING_INTERVAL_S)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived_at = time.monotonic()
                samples = frame.to_ndarray()
                channels = len(frame.layout.channels)
                # Keep the first channel: planar is (channels, n), packed (1, n * channels).
                if frame.format.is_planar:
                    samples = samples[0]
                else:
                    samples = samples.reshape(-1, channels)[:, 0]
                self.audio_frames.append(
                    ReceivedAudioFrame(
                        arrived_at=arrived_at,
                        samples=samples.astype(np.int16, copy=False),
                        sample_rate=frame.sample_rate,
                    )
                )
                self._waiters.audio.set()

    async def _read_video(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                arrived_at = time.monotonic()
                needs_pixels = self._keep_video_images or self._video_probe is not None
                image = frame.to_ndarray(format="rgb24") if needs_pixels else None
                probe = self._video_probe(image) if self._video_probe is not None else None
                self.video_frames.append(
                    ReceivedVideoFrame(
                        arrived_at=arrived_at,
                        width=frame.width,
                        height=frame.height,
                        image=image if self._keep_video_images else None,
                        probe=probe,
                    )
                )
                # Keep pixels only for the newest frames.
                old = len(self.video_frames) - self._keep_video_images - 1
                if old >= 0 and self.video_frames[old].image is not None:
                    self.video_frames[old] = dataclasses.replace(self.video_frames[old], image=None)
                self._waiters.video.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_app_message(self, message: dict[str, Any]) -> None:
        """Send an app message to the bot (JSON on the data channel).

        pipecat 1.14's SmallWebRTC drops a message without a ``"type"`` key, so
        one is added (the ``event_type``, else ``"app-message"``) when missing.
        """
        if self._channel is None or self._channel.readyState != "open":
            raise RuntimeError("data channel is not open; call connect() first")
        if "type" not in message:
            message = {"type": message.get("event_type", "app-message"), **message}
        self._channel.send(json.dumps(message))

    async def play_wav(self, path: str | Path, *, wait: bool = True) -> Playback:
        """Speak a sound file into the microphone at real-time pace, then silence.

        Args:
            path: Any file soundfile reads; resampled to 48 kHz mono.
            wait: Return once the last sample went out; with ``False`` return at
                once (the result then tells when it *will* have ended, estimated).
        """
        samples = load_wav_mono(path)
        return await self.play_samples(samples, wait=wait)

    async def play_samples(self, samples: np.ndarray, *, wait: bool = True) -> Playback:
        """Like :meth:`play_wav` for mono int16 samples at 48 kHz."""
        done = self._mic.queue_clip(samples)
        if wait:
            return await done
        now = time.monotonic()
        return Playback(started_at=now, ended_at=now + samples.size / MIC_SAMPLE_RATE,
                        duration_s=samples.size / MIC_SAMPLE_RATE)

    def first_audible(self, *, after: float = 0.0, min_dbfs: float = -45.0) -> float | None:
        """Arrival time of the first received audio frame after ``after`` louder than ``min_dbfs``."""
        for frame in self.audio_frames:
            if frame.arrived_at >= after and frame.rms_dbfs >= min_dbfs:
                return frame.arrived_at
        return None

    async def wait_for_audio(
        self, *, after: float = 0.0, min_dbfs: float = -45.0, timeout_s: float = 10.0
    ) -> float:
        """Wait for audible audio from the bot; returns its arrival time.

        Raises:
            TimeoutError: Nothing louder than ``min_dbfs`` arrived in ``timeout_s``.
        """
        return await self._wait_until(
            lambda: self.first_audible(after=after, min_dbfs=min_dbfs),
            self._waiters.audio,
            timeout_s,
            f"no audio above {min_dbfs} dBFS within {timeout_s} s",
        )

    async def wait_for_video(self, *, count: int = 1, timeout_s: float = 10.0) -> ReceivedVideoFrame:
        """Wait until ``count`` video frames have arrived; returns the latest."""
        await self._wait_until(
            lambda: True if len(self.video_frames) >= count else None,
            self._waiters.video,
            timeout_s,
            f"fewer than {count} video frames within {timeout_s} s",
        )
        return self.video_frames[-1]

    async def wait_for_message(
        self,
        event_type: str,
        *,
        after: float = 0.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
        timeout_s: float = 10.0,
    ) -> ReceivedMessage:
        """Wait for an app message with this ``event_type`` (arrived at or after
        ``after``, and for which ``where(message)`` is true if given); returns it.

        Raises:
            TimeoutError: No such message within ``timeout_s``.
        """

        def find() -> ReceivedMessage | None:
            for m in self.messages:
                if (
                    m.arrived_at >= after
                    and isinstance(m.data, dict)
                    and m.data.get("event_type") == event_type
                    and (where is None or where(m.data))
                ):
                    return m
            return None

        return await self._wait_until(
            find, self._waiters.message, timeout_s, f"no {event_type!r} within {timeout_s} s"
        )

    async def _wait_until(self, check: Any, event: asyncio.Event, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while (found := check()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(what)
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return found

    def received_audio(self) -> tuple[np.ndarray, int]:
        """All received audio as one mono int16 array and its sample rate."""
        if not self.audio_frames:
            return np.zeros(0, dtype=np.int16), MIC_SAMPLE_RATE
        return (
            np.concatenate([f.samples for f in self.audio_frames]),
            self.audio_frames[0].sample_rate,
        )

    def vanish(self) -> None:
        """Go silent without hanging up, like a peer whose network or browser died:
        no more pings, microphone or camera packets (the connection stays open
        and still answers ICE checks, so only the silence tells)."""
        self._silent = True
        self._mic.stop()
        if self._camera is not None:
            self._camera.stop()

    async def close(self) -> None:
        """Hang up: close the peer connection, stop the readers, close HTTP."""
        self._mic.stop()
        if self._camera is not None:
            self._camera.stop()
        if self._pc is not None:
            await self._pc.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()
