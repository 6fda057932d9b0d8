"""Receive buffers for WebRTC on loopback and LAN: hand media on as soon as it is whole.

aiortc's receivers buffer for jitter on long paths: audio waits for 4
packets (80 ms), and any frame, audio or video, is released only when a
packet of the *next* frame arrives (another 20 ms of audio, 40 ms of video at
25 fps). Browsers play a frame as soon as it is complete. On the dev room's
paths (this machine or its LAN) packets arrive evenly, so the bot's own
receivers use ``InOrderAudioBuffer``, and the measuring peer in
``bench/latency.py`` uses ``MarkerVideoBuffer`` for video so it sees the
replica's frames when a browser would. aiortc offers no setting for either:
the helpers below replace a receiver's buffer object before any packet
arrives.
"""

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket


def _frame(packets: list[RtpPacket]) -> JitterFrame:
    return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packets[0].timestamp)


def _contiguous(buffer: JitterBuffer) -> list[RtpPacket]:
    """The packets from the buffer's origin up to the first gap."""
    packets = []
    while len(packets) < buffer.capacity:
        packet = buffer._packets[(buffer._origin + len(packets)) % buffer.capacity]
        if packet is None:
            break
        packets.append(packet)
    return packets


class InOrderAudioBuffer(JitterBuffer):
    """Releases each audio packet as soon as it is next in order (an audio
    packet is always a whole frame).

    After a gap fills, one packet still goes out per packet in, so the
    packets queued behind it are skipped down to ``MAX_BACKLOG``.
    """

    MAX_BACKLOG = 2

    def __init__(self, capacity: int = 16):
        super().__init__(capacity=capacity)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        ready = _contiguous(self)
        if not ready:
            return None  # a gap: wait for the missing packet (or for the buffer to skip it)
        skip = max(0, len(ready) - self.MAX_BACKLOG)
        self.remove(skip + 1)
        return _frame([ready[skip]])


class MarkerVideoBuffer(JitterBuffer):
    """Releases a video frame when its last packet (RTP marker bit) is in and
    none of its packets is missing; like aiortc's, otherwise."""

    def __init__(self, capacity: int = 512):
        super().__init__(capacity=capacity, is_video=True)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        packets = []
        for packet in _contiguous(self):
            if packets and packet.timestamp != packets[0].timestamp:
                break  # the next frame began: this one is whole (a lost marker)
            packets.append(packet)
            if packet.marker:
                self.remove(len(packets))
                return _frame(packets)
        else:
            return None  # the frame is still arriving
        self.remove(len(packets))
        return _frame(packets)


def _replace(pc: RTCPeerConnection, kind: str, make) -> None:
    for transceiver in pc.getTransceivers():
        # By kind, not by track: a receiver has no track until the remote
        # description arrives, and a client applies this before its offer.
        if transceiver.kind == kind:
            transceiver.receiver._RTCRtpReceiver__jitter_buffer = make()


def shorten_audio_jitter_buffers(pc: RTCPeerConnection, *, prefetch: int) -> None:
    """Let ``pc`` hear its peer sooner: a shorter audio jitter buffer.

    ``prefetch=0`` releases each packet the moment it arrives in order;
    ``prefetch=N`` is aiortc's buffer holding N packets (it holds 4 by default).
    """
    if prefetch == 0:
        _replace(pc, "audio", InOrderAudioBuffer)
    else:
        _replace(pc, "audio", lambda: JitterBuffer(capacity=16, prefetch=prefetch))


def release_video_frames_when_whole(pc: RTCPeerConnection) -> None:
    """Let ``pc`` show each received video frame as soon as it is complete."""
    _replace(pc, "video", MarkerVideoBuffer)
