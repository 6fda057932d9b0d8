"""Short audio jitter buffers: the bot's releases each packet as soon as it is next in order."""

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from bot.jitter_buffers import InOrderAudioBuffer, MarkerVideoBuffer, shorten_audio_jitter_buffers

pytestmark = pytest.mark.unit


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=seq * 960, payload=b"")
    p._data = bytes([seq % 256])  # the receiver stores the depacketized payload here
    return p


def released(buffer: InOrderAudioBuffer, seqs: list[int]) -> list[int | None]:
    out = []
    for seq in seqs:
        _, frame = buffer.add(packet(seq))
        out.append(None if frame is None else frame.timestamp // 960)
    return out


def test_in_order_packets_leave_at_once():
    assert released(InOrderAudioBuffer(), [100, 101, 102]) == [100, 101, 102]


def test_a_gap_waits_for_its_packet_then_catches_up():
    # 102 arrives late: 103 and 104 wait for it, then the backlog is cut to two packets.
    assert released(InOrderAudioBuffer(), [100, 101, 103, 104, 102, 105, 106]) == [100, 101, None, None, 103, 104, 105]


@pytest.mark.parametrize("prefetch, expected", [(0, InOrderAudioBuffer), (1, JitterBuffer)])
async def test_a_client_gets_the_short_buffer_before_its_offer(prefetch, expected):
    # Before negotiation a receiver has no track yet; the buffer must still be replaced.
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="sendrecv")
        shorten_audio_jitter_buffers(pc, prefetch=prefetch)
        audio, video = (t.receiver._RTCRtpReceiver__jitter_buffer for t in pc.getTransceivers())
        assert type(audio) is expected
        assert audio._prefetch == (0 if prefetch == 0 else prefetch)
        assert video._prefetch == 0 and video.capacity == 512  # video untouched
    finally:
        await pc.close()


def video_packet(seq: int, frame: int, *, last: bool) -> RtpPacket:
    p = RtpPacket(sequence_number=seq, timestamp=frame * 3600, payload=b"", marker=int(last))
    p._data = bytes([seq % 256])
    return p


def test_a_video_frame_leaves_with_its_last_packet():
    buffer = MarkerVideoBuffer()
    # Frame 1 in three packets, frame 2 in one: each leaves when its marker packet is in.
    outs = [buffer.add(video_packet(seq, frame, last=last))[1] for seq, frame, last in [
        (10, 1, False), (11, 1, False), (12, 1, True), (13, 2, True)]]
    assert [o is None for o in outs] == [True, True, False, False]
    assert outs[2].data == bytes([10, 11, 12]) and outs[3].data == bytes([13])


def test_a_video_frame_with_a_missing_packet_waits():
    buffer = MarkerVideoBuffer()
    outs = [buffer.add(video_packet(seq, 1, last=seq == 12))[1] for seq in (10, 12)]
    assert outs == [None, None]
    assert buffer.add(video_packet(11, 1, last=False))[1].data == bytes([10, 11, 12])
