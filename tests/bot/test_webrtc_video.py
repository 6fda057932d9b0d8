"""The replica's VP8 encoder: what a WebRTC peer of the dev room receives, decoded and compared with what was rendered.

aiortc's own encoder (temporal denoising on, set for a camera) is the
baseline: the replica's must give a picture at least as close to the
rendered frames. Its cost is measured by ``bench/video_encode.py``, not here.
"""

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterFrame

from bench.devroom_client import DevRoomClient
from bot.webrtc_video import ReplicaVp8Encoder
from tests.bot.conftest import ToneBotSessions

pytestmark = pytest.mark.integration

FRAMES = 60


@pytest.fixture(scope="module")
def rendered_frames(settings) -> list[np.ndarray]:
    """Two and a half seconds of the default replica, idle, as the renderer draws it."""
    from bot.pipeline import build_replica
    from personas import load_persona

    renderer = build_replica(load_persona("ava"), settings)
    return [renderer.render_at(1000.0 + i / 25)[0] for i in range(FRAMES)]


def round_trip_psnr(encoder: Vp8Encoder, frames: list[np.ndarray]) -> list[float]:
    """Each frame through ``encoder``'s RTP payloads and a VP8 decoder: PSNR (dB) against the original."""
    decoder = Vp8Decoder()
    psnr = []
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=i == 0)
        data = b"".join(VpxPayloadDescriptor.parse(p)[1] for p in payloads)
        for decoded in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            error = decoded.to_ndarray(format="rgb24").astype(np.float64) - image
            psnr.append(10 * np.log10(255**2 / np.mean(error**2)))
    return psnr


def test_the_replica_encoder_keeps_its_settings_through_bitrate_changes_and_looks_as_sharp(rendered_frames):
    ours, theirs = ReplicaVp8Encoder(), Vp8Encoder()
    half = FRAMES // 2
    ours_psnr = round_trip_psnr(ours, rendered_frames[:half])
    opened = ours.codec
    assert opened is not None and opened is ours.tuned_codec, "aiortc replaced the tuned libvpx context"
    # The peer's congestion control moves the target bitrate: the new context is tuned too.
    ours.target_bitrate = ours.target_bitrate // 2
    ours_psnr += round_trip_psnr(ours, rendered_frames[half:])
    assert ours.codec is not opened and ours.codec is ours.tuned_codec
    assert ours.codec.bit_rate == ours.target_bitrate

    theirs_psnr = round_trip_psnr(theirs, rendered_frames[:half])
    theirs.target_bitrate = theirs.target_bitrate // 2
    theirs_psnr += round_trip_psnr(theirs, rendered_frames[half:])
    assert len(ours_psnr) == len(theirs_psnr) == FRAMES
    print(f"\nPSNR median: replica encoder {np.median(ours_psnr):.2f} dB, aiortc's {np.median(theirs_psnr):.2f} dB")
    assert np.median(ours_psnr) >= np.median(theirs_psnr)
    assert min(ours_psnr) > 30.0


async def test_a_dev_room_peer_gets_the_replica_encoder_on_its_video(devroom_url: str, tone_bot_sessions: ToneBotSessions):
    async with DevRoomClient(devroom_url) as client:
        await client.connect()
        frame = await client.wait_for_video(count=5)
        assert frame.width > 0
        (connection,) = tone_bot_sessions.connections.values()
        (video,) = [t for t in connection.pc.getTransceivers() if t.kind == "video"]
        assert isinstance(video.sender._RTCRtpSender__encoder, ReplicaVp8Encoder)


async def test_replica_video_is_stamped_with_the_time_it_is_sent():
    """At 10 frames a second the stamps advance 0.1 s a frame (aiortc's own advance 1/30 s, whatever the rate)."""
    import asyncio

    from pipecat.frames.frames import OutputImageRawFrame
    from pipecat.transports.smallwebrtc.transport import RawVideoTrack

    from bot.webrtc_video import stamp_video_by_the_clock

    track = RawVideoTrack(width=64, height=64)
    stamp_video_by_the_clock(track)
    stamps = []
    for _ in range(8):
        track.add_video_frame(OutputImageRawFrame(image=bytes(64 * 64 * 3), size=(64, 64), format="RGB"))
        frame = await track.recv()
        stamps.append(float(frame.pts * frame.time_base))
        await asyncio.sleep(0.1)
    steps = np.diff(stamps)
    assert np.all(steps > 0) and np.median(steps) == pytest.approx(0.1, abs=0.02), steps
