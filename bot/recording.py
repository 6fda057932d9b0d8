"""A call's recording (``enable_recording``): the replica's video and voice and the user's voice, as one MP4.

Nothing here runs unless a conversation asks for it, and none of it sits on
the call's path: ``RecordingObserver`` only copies frames into a bounded
queue (dropping, never waiting, when it is full); a writer thread places each
piece at its time on the call's clock: the voices into WAV files, the video
into an ``ffmpeg`` process (Debian's ``ffmpeg``) that encodes it as it comes
at the lowest CPU priority. When the call is over, :meth:`CallRecording.finish`
mixes both voices and puts them with the video in ``<folder>/<name>.mp4`` (one
more ``ffmpeg`` process) and removes the parts.
"""

import asyncio
import os
import queue
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, OutputImageRawFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

# Pieces waiting for the writer (about 20 s of a call); past that, new ones are dropped.
QUEUE_PIECES = 1500
# A voice's piece that starts this close after the last one's end continues it: a late
# piece (a busy event loop) is not a pause. A longer silence is one, and is kept.
CONTIGUOUS_S = 0.35
# The encoders run at the lowest priority: the call's own work always comes first.
ENCODER_NICENESS = 19
MUX_TIMEOUT_S = 600.0


class RecordingError(RuntimeError):
    """The recording could not be made; the message says why."""


def ffmpeg_binary() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise RecordingError("ffmpeg is not installed (Debian package ffmpeg; scripts/setup.sh installs it)")
    return path


def _lowest_priority() -> None:
    os.nice(ENCODER_NICENESS)


@dataclass
class _Voice:
    path: Path
    file: soundfile.SoundFile | None = None
    rate: int = 0
    written: int = 0


class CallRecording:
    """One conversation's recording, written while the call runs and finished after it.

    Args:
        folder: Where the MP4 goes (its parts are kept in a subfolder until it is made).
        name: The file's name, without ``.mp4`` (the conversation id).
        fps: The replica video's frame rate.
    """

    def __init__(self, *, folder: Path, name: str, fps: int):
        self.path = Path(folder) / f"{name}.mp4"
        self._parts = Path(folder) / f".{name}.parts"
        self._fps = fps
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_PIECES)
        self._t0: float | None = None
        self._voices = {"user": _Voice(self._parts / "user.wav"), "replica": _Voice(self._parts / "replica.wav")}
        self._video: subprocess.Popen | None = None
        self._video_size: tuple[int, int] | None = None
        self._video_format: str | None = None
        self._frames_written = 0
        self._last_frame: bytes | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0

    # During the call (event loop side) -------------------------------------

    def add(
        self, kind: str, data: bytes, *, sample_rate: int = 0, size: tuple[int, int] | None = None,
        at: float | None = None, pixel_format: str = "RGB",
    ) -> None:
        """Queue one piece (``user``/``replica`` audio, or ``video`` in ``pixel_format``, RGB or I420)
        that happened at ``at`` (``time.monotonic()`` seconds; None: now); never blocks."""
        if self._closed:
            return
        now = time.monotonic() if at is None else at
        if self._t0 is None:
            self._t0 = now
            self._parts.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._write, name=f"recording-{self.path.stem}", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((kind, max(0.0, now - self._t0), data, sample_rate, (size, pixel_format)))
        except queue.Full:
            self.dropped += 1

    # The writer thread ------------------------------------------------------

    def _write(self) -> None:
        while True:
            piece = self._queue.get()
            if piece is None:
                return
            kind, at, data, sample_rate, (size, pixel_format) = piece
            try:
                if kind == "video":
                    self._write_video(at, data, size, pixel_format)
                else:
                    self._write_voice(self._voices[kind], at, data, sample_rate)
            except (OSError, ValueError, RuntimeError) as e:
                logger.error(f"recording {self.path.stem}: {kind} not written: {e}")

    def _write_voice(self, voice: _Voice, at: float, pcm: bytes, sample_rate: int) -> None:
        if voice.file is None:
            voice.rate = sample_rate
            voice.file = soundfile.SoundFile(voice.path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16")
        samples = np.frombuffer(pcm, dtype=np.int16)
        if sample_rate != voice.rate:
            import soxr

            samples = soxr.resample(samples, sample_rate, voice.rate).astype(np.int16)
        # A piece is seen as it ends (the replica's once played): it started its length earlier.
        start = round(at * voice.rate) - len(samples)
        gap = start - voice.written
        if gap > CONTIGUOUS_S * voice.rate:
            voice.file.write(np.zeros(gap, dtype=np.int16))
            voice.written += gap
        voice.file.write(samples)
        voice.written += len(samples)

    def _write_video(self, at: float, image: bytes, size: tuple[int, int], pixel_format: str) -> None:
        if self._video is None:
            self._video_size, self._video_format = size, pixel_format
            width, height = size
            i420 = pixel_format == "I420"
            self._video = subprocess.Popen(
                [
                    ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "rawvideo", "-pix_fmt", "yuv420p" if i420 else "rgb24", "-s", f"{width}x{height}",
                    "-r", str(self._fps), "-i", "-",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "26", "-pix_fmt", "yuv420p",
                    str(self._parts / "video.mkv"),
                ],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=_lowest_priority,
            )
            # The face shows from its first frame: the time before it is black.
            if i420:
                luma = width * height
                self._last_frame = bytes([16]) * luma + bytes([128]) * (luma // 2)
            else:
                self._last_frame = bytes(width * height * 3)
        if size != self._video_size or pixel_format != self._video_format:
            return  # a change of size or format mid-call (not made by our renderer) is left out
        assert self._video.stdin is not None
        target = round(at * self._fps)
        while self._frames_written < target:  # frames the renderer skipped: the last one holds
            self._video.stdin.write(self._last_frame)
            self._frames_written += 1
        if self._frames_written == target:
            self._video.stdin.write(image)
            self._frames_written += 1
        self._last_frame = image

    # After the call ---------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """How long the recording is, in seconds."""
        lengths = [v.written / v.rate for v in self._voices.values() if v.rate]
        if self._fps:
            lengths.append(self._frames_written / self._fps)
        return round(max(lengths, default=0.0), 2)

    @property
    def started(self) -> bool:
        """Whether anything was recorded."""
        return self._t0 is not None

    def _close_writers(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        for voice in self._voices.values():
            if voice.file is not None:
                voice.file.close()
        if self._video is not None:
            assert self._video.stdin is not None
            self._video.stdin.close()
            if self._video.wait() != 0:
                raise RecordingError(f"the video encoder failed: {self._video.stderr.read().decode()[-300:]}")

    async def finish(self) -> Path | None:
        """Close the parts and make the MP4 (in another process); None when nothing was recorded.

        Raises:
            RecordingError: ffmpeg failed; the message has its last words.
        """
        await asyncio.to_thread(self._close_writers)
        if not self.started:
            return None
        inputs: list[str] = []
        video = self._parts / "video.mkv"
        if self._video is not None:
            inputs += ["-i", str(video)]
        voices = [v for v in self._voices.values() if v.file is not None]
        for voice in voices:
            inputs += ["-i", str(voice.path)]
        first_audio = 1 if self._video is not None else 0
        maps = ["-map", "0:v"] if self._video is not None else []
        mix: list[str] = []
        if len(voices) == 2:
            mix = ["-filter_complex", f"[{first_audio}:a][{first_audio + 1}:a]amix=inputs=2:duration=longest:normalize=0[a]"]
            maps += ["-map", "[a]"]
        elif voices:
            maps += ["-map", f"{first_audio}:a"]
        codecs = (["-c:v", "copy"] if self._video is not None else []) + (["-c:a", "aac", "-b:a", "96k"] if voices else [])
        proc = await asyncio.create_subprocess_exec(
            ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *inputs, *mix, *maps, *codecs,
            "-movflags", "+faststart", str(self.path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, preexec_fn=_lowest_priority,
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), MUX_TIMEOUT_S)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RecordingError(f"ffmpeg could not make {self.path.name}: {stderr.decode()[-300:]}")
        shutil.rmtree(self._parts, ignore_errors=True)
        if self.dropped:
            logger.warning(f"recording {self.path.stem}: {self.dropped} pieces dropped (the writer fell behind)")
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the parts (the server is going down without finishing it)."""
        self._closed = True
        if self._video is not None and self._video.poll() is None:
            self._video.kill()
        shutil.rmtree(self._parts, ignore_errors=True)


class RecordingObserver(BaseObserver):
    """Copies what the call sounds and looks like into a ``CallRecording``.

    The user's voice as the transport hears it; the replica's voice as the
    output transport plays it (pushed on once written); the replica's video
    as it is handed to the output.
    """

    def __init__(self, recording: CallRecording):
        super().__init__()
        self._recording = recording
        self._clock_offset: float | None = None

    def _at(self, data: FramePushed) -> float:
        """When the frame was pushed, on ``time.monotonic()``'s scale.

        Observers run from a queue, late by however busy the loop is; the
        push's own time (the pipeline clock) is exact. Its offset to
        ``time.monotonic()`` is the smallest gap seen (the least delayed observation).
        """
        pushed = data.timestamp / 1e9
        offset = time.monotonic() - pushed
        if self._clock_offset is None or offset < self._clock_offset:
            self._clock_offset = offset
        return self._clock_offset + pushed

    async def on_push_frame(self, data: FramePushed) -> None:
        if data.direction != FrameDirection.DOWNSTREAM:
            return
        frame = data.frame
        if isinstance(frame, InputAudioRawFrame):
            if data.first_push:
                self._recording.add("user", frame.audio, sample_rate=frame.sample_rate, at=self._at(data))
        elif isinstance(frame, OutputAudioRawFrame):
            if isinstance(data.source, BaseOutputTransport):
                self._recording.add("replica", frame.audio, sample_rate=frame.sample_rate, at=self._at(data))
        elif isinstance(frame, OutputImageRawFrame):
            if data.first_push and frame.format in (None, "RGB", "I420"):
                self._recording.add(
                    "video", frame.image, size=tuple(frame.size), at=self._at(data), pixel_format=frame.format or "RGB"
                )
