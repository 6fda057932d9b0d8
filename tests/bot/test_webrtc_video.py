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


async def test_a_frame_the_same_as_the_last_one_sent_is_not_sent_again_for_up_to_a_while(monkeypatch):
    """Repeats are skipped (the peer shows the last frame), but one goes out every ``REPEAT_EVERY_S``."""
    import asyncio

    from pipecat.frames.frames import OutputImageRawFrame
    from pipecat.transports.smallwebrtc.transport import RawVideoTrack

    from bot import webrtc_video
    from bot.webrtc_video import send_replica_video

    monkeypatch.setattr(webrtc_video, "REPEAT_EVERY_S", 0.3)
    track = RawVideoTrack(width=64, height=64)
    send_replica_video(track)
    still, moved = bytes(64 * 64 * 3 // 2), bytes([128]) * (64 * 64 * 3 // 2)

    def add(image: bytes) -> None:
        track.add_video_frame(OutputImageRawFrame(image=image, size=(64, 64), format="I420"))

    add(still)
    first = await track.recv()
    for image in (still, still, still, moved):
        add(image)
    second = await track.recv()  # the three repeats were passed over
    assert track.repeats_skipped == 3
    assert first.to_ndarray()[0, 0] == 0 and second.to_ndarray()[0, 0] == 128
    # The same frame again and again: one is sent once REPEAT_EVERY_S has passed.
    sent = []
    async def feed():
        for _ in range(10):
            add(moved)
            await asyncio.sleep(0.05)
    feeder = asyncio.create_task(feed())
    sent.append(await asyncio.wait_for(track.recv(), 2.0))
    await feeder
    assert len(sent) == 1 and track.repeats_skipped >= 3 + 4


async def test_i420_frames_reach_the_peer_as_sharp_as_rgb_frames():
    """The renderer's I420 frames through the dev room's track, encoder and a VP8 decoder, beside its RGB frames."""
    from pipecat.frames.frames import OutputImageRawFrame
    from pipecat.transports.smallwebrtc.transport import RawVideoTrack

    from bot.webrtc_video import send_replica_video
    from processors.replica.assets import load_replica
    from processors.replica.face import FaceRig, IdleMotion

    rig = FaceRig(load_replica("eileen"))
    idle = IdleMotion(seed=2)
    mouth = np.array([0.6, 0.2, 0.5, 0.2, 0.0], np.float32)
    poses = [idle.pose_at(i / 25, mouth * (i % 5) / 4, 0.5) for i in range(40)]
    psnr = {}
    for pixel_format in ("RGB", "I420"):
        track = RawVideoTrack(width=512, height=512)
        send_replica_video(track)
        encoder, decoder, psnr[pixel_format] = ReplicaVp8Encoder(), Vp8Decoder(), []
        for i, pose in enumerate(poses):
            image = rig.render_i420(pose) if pixel_format == "I420" else rig.render(pose)
            track.add_video_frame(OutputImageRawFrame(image=image.tobytes(), size=(512, 512), format=pixel_format))
            frame = await track.recv()
            assert frame.format.name == ("yuv420p" if pixel_format == "I420" else "rgb24")
            payloads, timestamp = encoder.encode(frame, force_keyframe=i == 0)
            data = b"".join(VpxPayloadDescriptor.parse(p)[1] for p in payloads)
            for decoded in decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
                error = decoded.to_ndarray(format="rgb24").astype(np.float64) - rig.render(pose)
                psnr[pixel_format].append(10 * np.log10(255**2 / np.mean(error**2)))
    print(f"\nPSNR median: RGB frames {np.median(psnr['RGB']):.2f} dB, I420 frames {np.median(psnr['I420']):.2f} dB")
    assert len(psnr["I420"]) == len(poses)
    # libvpx's rate control moves either by up to a dB from run to run; swapped or shifted planes lose over 15.
    assert np.median(psnr["I420"]) > np.median(psnr["RGB"]) - 1.5 and min(psnr["I420"]) > 30.0


def test_an_i420_frame_of_the_wrong_size_is_refused_with_what_was_expected():
    from bot.webrtc_video import i420_video_frame

    with pytest.raises(ValueError, match=r"64x48 needs an even size and 4608 bytes, got 9216"):
        i420_video_frame(bytes(64 * 48 * 3), 64, 48)
    with pytest.raises(ValueError, match=r"63x48"):
        i420_video_frame(bytes(63 * 48 * 3 // 2), 63, 48)
    # An odd line size (padded rows in the frame) keeps the picture.
    planes = np.arange(100 * 20 * 3 // 2, dtype=np.uint32).astype(np.uint8)
    assert np.array_equal(i420_video_frame(planes.tobytes(), 100, 20).to_ndarray().ravel(), planes)
