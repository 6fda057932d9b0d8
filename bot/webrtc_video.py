"""The replica's video on a WebRTC peer: an encoder set for rendered frames, and true timestamps.

**Encoder.** aiortc encodes every outgoing video frame with libvpx set for a
camera: temporal noise reduction on (``noise-sensitivity=4``) and
``cpu-used=-6``. The replica is rendered, not filmed: there is no sensor
noise to remove, and the denoiser only blurs it. On the dev room's 2-core
machine that encoder was the largest part of what a listening call cost the
bot (py-spy: about a third of its busy time, at 25 frames a second).
``bench/video_encode.py`` measures both encoders on rendered replica frames
in the same run. aiortc offers no setting for this:
``use_replica_video_encoder`` gives a peer connection's video sender this
encoder before its first frame, when the call negotiated VP8 (an H.264 call
keeps aiortc's encoder).

**Conversion.** The renderer's frames are RGB; aiortc converts each to
YUV 4:2:0 with libswscale, about 1.7 ms of the encoder's 5 ms a frame on the
2-core EPYC. ``ReplicaVp8Encoder`` converts with OpenCV's ``cvtColor``
instead (about 0.5 ms; the same BT.601 limited range, chroma averaged over
2x2 pixels; decoded PSNR a little higher). ``bench/render.py`` measures the
encoder as it was and as it is, in one run.

**Timestamps.** aiortc's video track stamps each frame 1/30 s after the one
before, whatever the real rate. The renderer sends 25 frames a second while
the replica speaks and 12 while it listens, so those stamps ran slower than
the clock, and the browser, which plays a peer's audio in step with its
video, held the replica's voice back to match: Chrome's audio jitter buffer
held about 400 ms on average in a listening call (about 30 ms with a steady
25 frames, and again with these stamps). ``stamp_video_by_the_clock`` stamps
each frame with the time it is sent.
"""

from __future__ import annotations

import os
import time
import types

import av
import cv2
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads
from av import CodecContext
from av.frame import Frame
from loguru import logger

# aiortc's own VP8 settings (aiortc/codecs/vpx.py), except the two below.
_AIORTC_OPTIONS = {
    "deadline": "realtime",
    "lag-in-frames": "0",
    "overshoot-pct": "15",
    "partitions": "0",
    "static-thresh": "1",
    "undershoot-pct": "100",
}
REPLICA_OPTIONS = {
    "noise-sensitivity": "0",  # nothing to denoise in a rendered face
    "cpu-used": "-12",  # faster search; on replica frames as sharp as aiortc's -6 without the denoiser
}


class ReplicaVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder with libvpx set for rendered video.

    It opens the libvpx context itself whenever aiortc would (first frame, a
    new size, the target bitrate moved by over 10 %), with the same rate
    control, so aiortc's ``encode`` finds it ready and keeps it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tuned_codec = None  # the libvpx context this encoder opened last

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        """Encode one frame, as aiortc's encoder does (an RGB frame converted by OpenCV)."""
        if frame.format.name == "rgb24" and frame.width % 2 == 0 and frame.height % 2 == 0:
            frame = _rgb_to_yuv420p(frame)
        if self._needs_codec(frame):
            self.codec = self.tuned_codec = self._open_codec(frame.width, frame.height)
        return super().encode(frame, force_keyframe)

    def _needs_codec(self, frame: Frame) -> bool:
        codec = self.codec
        return (
            codec is None
            or frame.width != codec.width
            or frame.height != codec.height
            or abs(self.target_bitrate - codec.bit_rate) / codec.bit_rate > 0.1
        )

    def _open_codec(self, width: int, height: int):
        bitrate = self.target_bitrate
        codec = CodecContext.create("libvpx", "w")
        codec.width, codec.height = width, height
        codec.bit_rate = bitrate
        codec.pix_fmt = "yuv420p"
        codec.gop_size = 3000
        codec.qmin, codec.qmax = 2, 56
        codec.options = {
            **_AIORTC_OPTIONS,
            "bufsize": str(bitrate),
            # minrate = maxrate = bit_rate: constant bitrate, as aiortc's.
            "minrate": str(bitrate),
            "maxrate": str(bitrate),
            **REPLICA_OPTIONS,
        }
        codec.thread_count = number_of_threads(width * height, os.cpu_count() or 1)
        return codec


def _rgb_to_yuv420p(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame`` (rgb24, even size) as yuv420p, converted by OpenCV; timing kept."""
    yuv = av.VideoFrame.from_ndarray(cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    yuv.pts = frame.pts
    if frame.time_base is not None:
        yuv.time_base = frame.time_base
    return yuv


def negotiated_senders(pc: RTCPeerConnection, mime_type: str) -> list[RTCRtpSender]:
    """``pc``'s senders whose negotiated codec is ``mime_type`` (e.g. ``video/vp8``); call it once the offer is answered."""
    kind = mime_type.split("/")[0]
    return [
        t.sender
        for t in pc.getTransceivers()
        if t.kind == kind and t._codecs and t._codecs[0].mimeType.lower() == mime_type
    ]


def use_replica_video_encoder(pc: RTCPeerConnection) -> bool:
    """Give ``pc``'s VP8 video sender a ``ReplicaVp8Encoder``; True if it did.

    Call it once the offer is answered and before the first video frame is
    sent. A sender that already encodes, or a call on another codec, is left
    as it is.
    """
    replaced = False
    for sender in negotiated_senders(pc, "video/vp8"):
        if getattr(sender, "_RTCRtpSender__encoder", None) is not None:
            continue
        sender._RTCRtpSender__encoder = ReplicaVp8Encoder()
        replaced = True
    if not replaced:
        logger.debug(f"{pc}: no VP8 video sender to tune; aiortc's encoder stays")
    return replaced


async def _timestamp_now(track: MediaStreamTrack) -> tuple[int, object]:
    """``next_timestamp`` for a track whose frames are sent when they are due: the time now."""
    if track.readyState != "live":
        raise MediaStreamError
    now = time.monotonic()
    if track._clock_start is None:
        track._clock_start = now
    pts = int((now - track._clock_start) * VIDEO_CLOCK_RATE)
    pts = max(pts, track._clock_last_pts + 1)  # never the same stamp twice
    track._clock_last_pts = pts
    return pts, VIDEO_TIME_BASE


def stamp_video_by_the_clock(track: MediaStreamTrack) -> None:
    """Make ``track`` (an aiortc video track whose ``recv`` uses ``next_timestamp``) stamp frames with the time they are sent."""
    track._clock_start = None
    track._clock_last_pts = -1
    track.next_timestamp = types.MethodType(_timestamp_now, track)
