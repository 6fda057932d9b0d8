"""The local replica renderer: a lip-synced talking head as a pipecat processor.

Pipeline position::

    ... -> TTS service -> ReplicaRendererProcessor -> transport.output()

It passes the TTS audio on unchanged and pushes an ``OutputImageRawFrame``
every ``1 / fps`` seconds while the replica speaks, and every ``1 / idle_fps``
seconds while it listens (breathing, blinks and gaze need fewer frames than
lips, and on two cores the CPU they leave goes to the LLM writing the reply).
Speech that arrives wakes the loop at once: the first syllable is drawn at
the full rate.

Sync: the output transport plays audio in real time, chunk after chunk, so
audio handed downstream at time ``t`` is heard when the audio queued before
it has played (or at ``t`` if none is). :class:`SpeechTrack` keeps that
playback clock; each video frame shows the mouth for the audio being played
while the frame is on screen. The transport's ``BotStartedSpeakingFrame``
(it comes upstream when playback really starts) re-anchors the clock.

Transport parameters to use with it: ``video_out_enabled=True``,
``video_out_is_live=True``, ``video_out_framerate`` equal to ``fps``,
``video_out_width``/``video_out_height`` equal to ``width``/``height``.
With ``video_out_is_live=False`` the transport shows the latest frame at
its own rate, which also works but may drop or repeat frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

from loguru import logger
from pydantic import BaseModel, Field

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.frames import PhonemeTimingFrame
from processors.replica.assets import Replica
from processors.replica.face import IdleMotion
from processors.replica.speech_track import SpeechTrack
from processors.replica.video_rig import make_rig, render_rig


# After speech ends, the full rate holds this long: the lips close smoothly.
LIPS_SETTLE_S = 0.4


class ReplicaRendererParams(BaseModel):
    """Options of :class:`ReplicaRendererProcessor`.

    Parameters:
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Frames per second while the replica speaks.
        idle_fps: Frames per second while it listens (None: ``fps`` always).
        audio_latency_secs: Extra time from handing audio downstream to it
            being heard, if the transport adds buffering the video lacks.
        render_in_thread: Render each frame in a worker thread so the event
            loop stays free (OpenCV releases the GIL while it warps).
        pixel_format: ``RGB``, or ``I420`` (YUV 4:2:0, what a video encoder
            takes, drawn for less work; needs an even width and height and a
            transport that sends I420, see ``bot/webrtc_video.py``).
        seed: Seed for blink and gaze timing.
    """

    width: int = Field(default=512, ge=64, le=2048)
    height: int = Field(default=512, ge=64, le=2048)
    fps: int = Field(default=25, ge=1, le=60)
    idle_fps: int | None = Field(default=None, ge=1, le=60)
    audio_latency_secs: float = Field(default=0.0, ge=0.0, le=2.0)
    render_in_thread: bool = True
    pixel_format: Literal["RGB", "I420"] = "RGB"
    seed: int = 0


class ReplicaRendererProcessor(FrameProcessor):
    """Animates a replica's portrait in step with the TTS audio.

    Consumes ``PhonemeTimingFrame``; passes every other frame on. Pushes
    ``OutputImageRawFrame`` (``format`` RGB or I420, as ``params.pixel_format``) at ``params.fps`` from ``StartFrame``
    until ``EndFrame``/``CancelFrame``. Each image frame's ``metadata`` has
    ``replica_time`` (the clock time it shows) and ``replica_speaking``.

    Args:
        replica: The replica to animate (see ``load_replica``).
        params: Size, frame rate and sync options.
        clock: Monotonic clock in seconds; tests may pass their own.
    """

    def __init__(
        self,
        *,
        replica: Replica,
        params: ReplicaRendererParams | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._params = params or ReplicaRendererParams()
        self._replica = replica
        self._clock = clock
        self._rig = make_rig(replica, (self._params.width, self._params.height))
        self._idle = IdleMotion(seed=self._params.seed)
        self._track = SpeechTrack(latency_s=self._params.audio_latency_secs)
        self._video_task: asyncio.Task | None = None
        self._speech_arrived = asyncio.Event()
        self._origin = 0.0
        self.frames_rendered = 0

    @property
    def speech_track(self) -> SpeechTrack:
        """The playback-clock model of the queued speech."""
        return self._track

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Track speech, consume phoneme timing, start and stop the frame loop."""
        await super().process_frame(frame, direction)

        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start_video()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self.stop_video()
            await self.push_frame(frame, direction)
        elif isinstance(frame, PhonemeTimingFrame):
            self._track.add_phonemes(frame.phonemes, frame.sample_rate)
        elif isinstance(frame, TTSAudioRawFrame):
            self._track.add_audio(frame.audio, frame.sample_rate, frame.num_channels, self._clock())
            self._speech_arrived.set()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            self._track.clear()
            await self.push_frame(frame, direction)
        elif isinstance(frame, BotStartedSpeakingFrame):
            if direction == FrameDirection.UPSTREAM:
                self._track.playback_started(self._clock())
            await self.push_frame(frame, direction)
        elif isinstance(frame, (VADUserStoppedSpeakingFrame, UserStoppedSpeakingFrame)):
            # The user paused: a listener's small nod (not over its own speech).
            now = self._clock()
            if not self._speaking_around(now):
                self._idle.nod(now - self._origin)
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self):
        """Stop the frame loop at teardown, however the pipeline ended.

        pipecat's base cleanup cancels only its own input and process tasks.
        A CancelFrame that times out on its way (a starved CPU, a closed tab)
        never reaches this processor, and a loop left running renders 25
        frames a second into a queue nobody reads, for as long as the
        process lives.
        """
        await super().cleanup()
        await self.stop_video()

    def render_at(self, now: float):
        """The RGB frame (numpy, HxWx3) for clock time ``now`` and whether speech plays then."""
        shape, loudness = self._track.shape_at(now)
        pose = self._idle.pose_at(now - self._origin, shape, loudness, self._track.playback_end - now)
        return render_rig(self._rig, pose, now - self._origin), self._track.is_speaking(now)

    def _start_video(self) -> None:
        if self._video_task is None:
            self._video_task = self.create_task(self._video_loop(), name=f"{self}::video")

    async def stop_video(self) -> None:
        """Stop the frame loop (at the end of the call; safe to call twice)."""
        if self._video_task is not None:
            await self.cancel_task(self._video_task)
            self._video_task = None

    def _speaking_around(self, at: float) -> bool:
        """Whether speech plays at ``at``, is queued after it, or ended under ``LIPS_SETTLE_S`` before."""
        return self._track.playback_end > at - LIPS_SETTLE_S

    async def _video_loop(self) -> None:
        fast = 1.0 / self._params.fps
        slow = 1.0 / (self._params.idle_fps or self._params.fps)
        size = (self._params.width, self._params.height)
        i420 = self._params.pixel_format == "I420"
        self._origin = self._clock()
        last: float | None = None  # when the frame before was due
        woken = False
        while True:
            # Cleared before the rate is chosen: speech that arrives from now on wakes the wait.
            self._speech_arrived.clear()
            now = self._clock()
            if last is None:
                target, period = now, fast
            else:
                # Speech queued while the last frame was drawn counts too: its
                # first frame follows one fast period after the last, not one slow.
                period = fast if self._speaking_around(last + fast) else slow
                target = last + period
                if woken:
                    target = max(target, now)
            woken = False
            delay = target - now
            if delay > 0:
                if period > fast:
                    try:
                        await asyncio.wait_for(self._speech_arrived.wait(), delay)
                        woken = True
                        continue  # speech arrived: choose the rate again, now
                    except TimeoutError:
                        pass
                else:
                    await asyncio.sleep(delay)
            elif delay < -5 * period:
                # Far behind (the machine stalled): skip to now.
                logger.warning(f"{self}: rendering fell {-delay:.3f}s behind; skipping {int(-delay / period)} frames")
                target = self._clock()
            # A speaking frame is on screen for one period: it shows the audio at
            # its middle. (A listening one shows its own time: speech that wakes
            # the loop is then never drawn earlier than the frame before.)
            shown = target + (period / 2 if period == fast else 0.0)
            shape, loudness = self._track.shape_at(shown)
            speaking = self._track.is_speaking(shown)
            pose = self._idle.pose_at(shown - self._origin, shape, loudness, self._track.playback_end - shown)
            if self._params.render_in_thread:
                image = await asyncio.to_thread(render_rig, self._rig, pose, shown - self._origin, i420=i420)
            else:
                image = render_rig(self._rig, pose, shown - self._origin, i420=i420)
            frame = OutputImageRawFrame(image=image.tobytes(), size=size, format=self._params.pixel_format)
            frame.metadata["replica_time"] = shown
            frame.metadata["replica_speaking"] = speaking
            await self.push_frame(frame)
            self.frames_rendered += 1
            last = target
