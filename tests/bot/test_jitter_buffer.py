"""The bot's audio buffer hands each packet on as soon as it is next in order."""

import pytest
from aiortc.rtp import RtpPacket

from bot.devroom import InOrderAudioBuffer

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
