"""The replica's voice, Opus-encoded on the event loop, so it leaves on time when the cores are busy.

aiortc's sender encodes every 10 ms audio frame in the event loop's default
thread pool: a frame is read on the loop, handed to a pool thread, encoded
there and handed back. Each hand-over waits for the GIL and for the OS to run
that thread. On two busy cores (the LLM writing, the renderer drawing, other
programs) the round trips took 25-50 ms instead of 10, for seconds at a time:
the voice fell behind and then left in bursts, and Chrome's jitter buffer grew
to hold 0.2-1.0 s of it before playing.

:class:`OpusPacketTrack` wraps the audio track pipecat sends and encodes on
the loop itself (libopus takes about 0.1 ms for 20 ms of voice), returning
encoded packets; aiortc's sender only packs a packet, with no thread hop.
:func:`encode_audio_on_the_loop` puts it between a peer connection's audio
sender and whatever track pipecat gives it. ``bench/audio_pacing.py``
measures both ways under load.
"""

from __future__ import annotations

import fractions
from collections import deque

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from loguru import logger

from bot.webrtc_video import negotiated_senders

# What aiortc's own Opus encoder uses (aiortc/codecs/opus.py), so the stream
# a browser gets is the same, only sent on time.
OPUS_RATE = 48000
OPUS_FRAME = 960  # 20 ms
OPUS_BIT_RATE = 96000
OPUS_TIME_BASE = fractions.Fraction(1, OPUS_RATE)


class OpusPacketTrack(MediaStreamTrack):
    """An audio track that yields Opus packets made from ``source``'s frames.

    ``source`` paces itself (pipecat's track waits until each 10 ms frame is
    due); each packet is encoded as soon as its 20 ms are in.
    """

    kind = "audio"

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self.source = source
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.bit_rate = OPUS_BIT_RATE
        self._codec.format = "s16"
        self._codec.layout = "stereo"
        self._codec.sample_rate = OPUS_RATE
        self._codec.time_base = OPUS_TIME_BASE
        self._codec.options = {"application": "voip"}
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME)
        self._ready: deque[av.Packet] = deque()
        self._first_pts: int | None = None

    async def recv(self) -> av.Packet:
        """The next Opus packet, stamped in 48 kHz samples from the first."""
        if self.readyState != "live":
            raise MediaStreamError
        while not self._ready:
            frame = await self.source.recv()
            for resampled in self._resampler.resample(frame):
                self._ready.extend(self._codec.encode(resampled))
        packet = self._ready.popleft()
        if self._first_pts is None:
            self._first_pts = packet.pts  # libopus starts below zero (its pre-skip)
        packet.pts -= self._first_pts
        packet.time_base = OPUS_TIME_BASE
        return packet

    def stop(self) -> None:
        """Stop this track and the one it reads."""
        super().stop()
        self.source.stop()


def encode_audio_on_the_loop(pc: RTCPeerConnection) -> bool:
    """Make ``pc``'s Opus audio sender wrap each track it is given in :class:`OpusPacketTrack`; True if it did.

    Call it once the offer is answered (the codec is known) and before a
    track is given to the sender (pipecat gives its own on connect).
    """
    patched = False
    for sender in negotiated_senders(pc, "audio/opus"):
        replace = sender.replaceTrack

        def replace_track(track: MediaStreamTrack | None, replace=replace) -> None:
            if track is not None and track.kind == "audio" and not isinstance(track, OpusPacketTrack):
                track = OpusPacketTrack(track)
            replace(track)

        sender.replaceTrack = replace_track
        if sender.track is not None:
            replace_track(sender.track)
        patched = True
    if not patched:
        logger.debug(f"{pc}: no Opus audio sender; aiortc encodes the voice in its thread pool")
    return patched
