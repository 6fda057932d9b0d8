"""Offline rendering: a talking replica to an MP4 file (H.264 + AAC)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from processors.replica.assets import Replica
from processors.replica.face import IdleMotion
from processors.replica.speech_track import SpeechTrack
from processors.replica.video_rig import make_rig, render_rig

_TAIL_S = 0.4  # the face stays on screen a little after the voice ends


def render_talking_frames(
    replica: Replica,
    audio_int16: np.ndarray,
    sample_rate: int,
    phonemes: list[tuple[str, int]] | None,
    *,
    fps: int = 25,
    size: tuple[int, int] = (512, 512),
    seed: int = 0,
):
    """Yield ``(time_s, rgb_frame)`` for each video frame of the speech.

    Frame ``i`` is shown from ``i / fps`` for one frame period and shows
    the mouth for the audio at the middle of that period.
    """
    audio = np.ascontiguousarray(np.asarray(audio_int16, dtype=np.int16).reshape(-1))
    track = SpeechTrack()
    if phonemes:
        track.add_phonemes(phonemes, sample_rate)
    track.add_audio(audio.tobytes(), sample_rate, 1, now=0.0)
    rig = make_rig(replica, size)
    idle = IdleMotion(seed=seed)
    duration = len(audio) / sample_rate
    count = int(math.ceil((duration + _TAIL_S) * fps))
    for i in range(count):
        t = i / fps
        shown = t + 0.5 / fps
        shape, loudness = track.shape_at(shown)
        yield t, render_rig(rig, idle.pose_at(shown, shape, loudness), shown)


def write_talking_video(
    path: str | Path,
    replica: Replica,
    audio_int16: np.ndarray,
    sample_rate: int,
    phonemes: list[tuple[str, int]] | None,
    fps: int = 25,
    size: tuple[int, int] = (512, 512),
) -> Path:
    """Write an MP4 of ``replica`` saying ``audio_int16`` (mono), lips in step.

    Args:
        path: Output file (``.mp4``).
        replica: The replica to animate.
        audio_int16: Mono 16-bit samples.
        sample_rate: Their sample rate.
        phonemes: ``(espeak IPA phoneme, num_samples)`` pairs covering the
            audio from its start, or ``None`` to drive the mouth from loudness.
        fps: Video frame rate.
        size: ``(width, height)``; both must be even for H.264 4:2:0.

    Returns:
        The path written.
    """
    out = Path(path)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"size {size} must have even width and height for H.264")
    audio = np.asarray(audio_int16, dtype=np.int16).reshape(-1)
    with av.open(str(out), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = width
        video.height = height
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "veryfast", "crf": "23"}
        sound = container.add_stream("aac", rate=sample_rate)
        sound.layout = "mono"

        for i, (_, rgb) in enumerate(
            render_talking_frames(replica, audio, sample_rate, phonemes, fps=fps, size=size)
        ):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)

        chunk = 1024
        for start in range(0, len(audio), chunk):
            samples = audio[start : start + chunk]
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
    return out
