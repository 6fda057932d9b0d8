"""Synthetic "person talking and listening" videos for the video-replica tests.

No video of a real person ships with the project, so the tests film one:
the stock portrait (``eileen``) animated by :class:`FaceRig` (its mouth warped
open and shut in a talking rhythm, then closed while listening; blinks at
fixed times, slow head sway and breathing), written as H.264 MP4.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from processors.replica.assets import load_replica
from processors.replica.face import FacePose, FaceRig


def talking_mouth(t: float, talk_until: float) -> np.ndarray:
    """A mouth vector that talks (syllables of 0.15-0.3 s, varied shapes) until ``talk_until``, then rests."""
    if t >= talk_until:
        return np.zeros(5, np.float32)
    syllable = 0.5 + 0.5 * math.sin(2 * math.pi * 4.1 * t) * math.sin(2 * math.pi * 0.9 * t + 0.7)
    open_ = max(0.0, min(1.0, 1.25 * syllable * (0.6 + 0.4 * math.sin(2 * math.pi * 0.37 * t))))
    width = 0.8 * math.sin(2 * math.pi * 0.53 * t + 1.1)
    return np.array([open_, width, 0.5 * open_, 0.0, 0.0], np.float32)


BLINKS_S = (1.3, 4.2, 8.1, 9.9)


def blink_at(t: float) -> float:
    """Eyelid closure at ``t``: 0.2 s blinks starting at ``BLINKS_S``."""
    for start in BLINKS_S:
        x = (t - start) / 0.2
        if 0.0 <= x < 1.0:
            return math.sin(math.pi * x)
    return 0.0


def head_at(t: float) -> tuple[float, float, float, float]:
    """Slow sway and breathing: ``(dx, dy, roll_deg, scale)``."""
    breath = math.sin(2 * math.pi * t / 4.2)
    dx = 2.0 * math.sin(2 * math.pi * 0.11 * t) + 0.8 * math.sin(2 * math.pi * 0.29 * t + 1.0)
    dy = 1.0 * math.sin(2 * math.pi * 0.17 * t + 0.4) - 1.2 * breath
    roll = 0.8 * math.sin(2 * math.pi * 0.07 * t + 0.3)
    return (dx, dy, roll, 1.0 + 0.004 * breath)


def write_video(path: Path, frames, fps: int) -> Path:
    """Write RGB frames (all the same even size) as H.264 MP4."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for i, rgb in enumerate(frames):
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast", "crf": "18"}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def portrait_frames(
    seconds: float,
    fps: int,
    *,
    face_px: int = 320,
    canvas: tuple[int, int] | None = None,
    talk_until: float | None = None,
    copies: int = 1,
    brightness: float = 1.0,
    talking_brightness: float | None = None,
):
    """Frames of the stock portrait talking then listening.

    Args:
        seconds: Length.
        fps: Frame rate.
        face_px: Side of the portrait in the frame (the face is about half of it).
        canvas: ``(width, height)`` of the frame (grey around the portrait); default the portrait's size.
        talk_until: When the talking stops (default: 60 % of the length).
        copies: Portraits side by side (2: two people).
        brightness: Multiplies every pixel (0.2: a dark room).
        talking_brightness: The same while talking, if different (the light changed).
    """
    rig = FaceRig(load_replica("eileen"), (face_px, face_px))
    talk_until = 0.6 * seconds if talk_until is None else talk_until
    width, height = canvas or (face_px * copies, face_px)
    for i in range(int(round(seconds * fps))):
        t = i / fps
        face = rig.render(FacePose(mouth=talking_mouth(t, talk_until), blink=blink_at(t), head=head_at(t)))
        frame = np.full((height, width, 3), 96, np.uint8)
        y = (height - face_px) // 2
        for c in range(copies):
            x = (width - copies * face_px) // 2 + c * face_px
            frame[y : y + face_px, x : x + face_px] = face
        light = brightness if talking_brightness is None or t >= talk_until else talking_brightness
        if light != 1.0:
            frame = cv2.convertScaleAbs(frame, alpha=light)
        yield frame
