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

**I420 frames.** The renderer can hand the transport YUV 4:2:0 itself
(``OutputImageRawFrame(format="I420")``, see ``FaceRig.render_i420``): it
converts only what moved, and the frame needs no conversion here at all.
pipecat's WebRTC video track takes RGB only; ``send_replica_video`` makes it
take I420 too, copying the planes straight into the frame the encoder gets.
``send_replica_video_over`` readies a connection and returns the format to
give ``ConversationBot`` (the dev room and API conversations use it).

**Timestamps.** aiortc's video track stamps each frame 1/30 s after the one
before, whatever the real rate. The renderer sends 25 frames a second while
the replica speaks and 12 while it listens, so those stamps ran slower than
the clock, and the browser, which plays a peer's audio in step with its
video, held the replica's voice back to match: Chrome's audio jitter buffer
held about 400 ms on average in a listening call (about 30 ms with a steady
25 frames, and again with these stamps). ``stamp_video_by_the_clock`` stamps
each frame with the time it is sent.

**Repeats.** A frame the same as the one sent before is not encoded or sent
(the peer keeps showing the last one), except once every ``REPEAT_EVERY_S``:
while the replica listens about half its frames are repeats.
"""

from __future__ import annotations

import asyncio
import os
import time
import types

import av
import cv2
import numpy as np
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
    # Faster search; on replica frames as sharp as aiortc's -6 without the denoiser (-15 and -16 lose 1.3-3.5 dB).
    "cpu-used": "-14",
    # A macroblock that hardly changed is sent as it was, not coded again: most
    # of a listening face, and the background. 0.5-0.9 ms a frame less than aiortc's 1, 0.2 dB worse.
    "static-thresh": "800",
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


def i420_video_frame(data: bytes, width: int, height: int) -> av.VideoFrame:
    """A yuv420p ``av.VideoFrame`` from an I420 buffer (Y, then U and V at half size), planes copied as they are."""
    if width % 2 or height % 2 or len(data) != width * height * 3 // 2:
        raise ValueError(
            f"an I420 frame of {width}x{height} needs an even size and {width * height * 3 // 2} bytes, got {len(data)}"
        )
    frame = av.VideoFrame(width, height, "yuv420p")
    source = np.frombuffer(data, np.uint8)
    start = 0
    for plane, (w, h) in zip(frame.planes, ((width, height), (width // 2, height // 2), (width // 2, height // 2))):
        # A plane's rows may be padded to an aligned line size.
        rows = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)
        rows[:, :w] = source[start : start + w * h].reshape(h, w)
        start += w * h
    return frame


# A frame the same as the one sent before is not sent again (the peer shows
# the last one): a listening replica repeats about half its frames while its
# head holds still (``FaceRig.HEAD_STEP_PX``). One goes out at least this
# often, so that a peer that lost a packet, or asked for a key frame, is
# answered while the face is still.
REPEAT_EVERY_S = 1.0


async def _recv_rgb_or_i420(track) -> av.VideoFrame:
    """pipecat's ``RawVideoTrack.recv``, for frames in RGB or I420, skipping repeats (at most ``REPEAT_EVERY_S``)."""
    loop = asyncio.get_running_loop()
    while True:
        raw = await track._video_buffer.get()
        if raw.image != track._last_image or loop.time() - track._last_sent_at >= REPEAT_EVERY_S:
            break
        track.repeats_skipped += 1
    track._last_image, track._last_sent_at = raw.image, loop.time()
    width, height = raw.size
    if raw.format == "I420":
        frame = i420_video_frame(raw.image, width, height)
    else:
        frame = av.VideoFrame.from_ndarray(np.frombuffer(raw.image, np.uint8).reshape(height, width, 3), format="rgb24")
    frame.pts, frame.time_base = await track.next_timestamp()
    return frame


def send_replica_video(track: MediaStreamTrack) -> None:
    """Ready pipecat's WebRTC video ``track`` (a ``RawVideoTrack``) for the replica: I420 frames taken, stamps by the clock."""
    stamp_video_by_the_clock(track)
    track._last_image, track._last_sent_at = None, 0.0  # the frame sent last, and when (loop time)
    track.repeats_skipped = 0
    track.recv = types.MethodType(_recv_rgb_or_i420, track)


def send_replica_video_over(connection) -> str:
    """Ready each video track pipecat gives ``connection`` (a ``SmallWebRTCConnection``) with ``send_replica_video``.

    Returns the pixel format the renderer may now use on this connection
    (``I420``): pass it to ``ConversationBot(video_format=...)``. Other
    transports (Daily, ``talk``'s files) take RGB only.

    Call it before the transport is made. The track is readied as pipecat
    hands it to the connection, before anything can ask it for a frame:
    readied later (in an ``on_client_connected`` handler, a task), a frame in
    I420 could reach pipecat's own ``recv``, which takes RGB only.
    """
    hand_over = connection.replace_video_track

    def replace_video_track(track) -> None:
        send_replica_video(track)
        hand_over(track)

    connection.replace_video_track = replace_video_track
    return "I420"
