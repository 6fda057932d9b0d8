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

While the replica is silent (most of a call: it listens), pipecat's track
still gives 10 ms of zeros every 10 ms. Once libopus has settled on silence
(two packets in a row the same, from zeros), that packet is sent again
instead of resampling and encoding more zeros; the first sound encodes as
before.
"""

from __future__ import annotations

import fractions
from collections import deque

import av
import numpy as np
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
    # Source frames of zeros before a repeated packet counts as settled silence
    # (longer than the resampler's and libopus's look-back of a few ms).
    SETTLE_FRAMES = 4

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
        self._ready: deque[bytes] = deque()
        self._sent = 0  # packets returned
        self._zeros_in = 0  # source frames of zeros in a row
        self._last = b""  # the packet encoded last
        self._silence: bytes | None = None  # libopus's packet for more silence, once it repeats
        self._silent_samples = 0  # zeros (at the source's rate x OPUS_RATE) not yet sent as a packet
        self.packets_encoded = 0

    async def recv(self) -> av.Packet:
        """The next Opus packet, stamped in 48 kHz samples from the first."""
        if self.readyState != "live":
            raise MediaStreamError
        while not self._ready:
            frame = await self.source.recv()
            if not any(np.frombuffer(plane, np.int16).any() for plane in frame.planes):
                self._zeros_in += 1
                if self._silence is not None:
                    self._silent_samples += frame.samples * OPUS_RATE
                    if self._silent_samples >= OPUS_FRAME * frame.sample_rate:
                        self._silent_samples -= OPUS_FRAME * frame.sample_rate
                        self._ready.append(self._silence)
                    continue
            else:
                self._zeros_in = 0
                if self._silence is not None:
                    self._silence = None
                    self._encode(self._owed_zeros(frame))
            self._encode(frame)
        packet = av.Packet(self._ready.popleft())
        packet.pts = self._sent * OPUS_FRAME  # libopus's own start below zero (its pre-skip) is not sent
        packet.time_base = OPUS_TIME_BASE
        self._sent += 1
        return packet

    def _owed_zeros(self, like: av.AudioFrame) -> av.AudioFrame | None:
        """The zeros taken since the last silent packet (under 20 ms), as a frame like ``like``: the encoder gets every sample."""
        owed = self._silent_samples // OPUS_RATE  # in samples at the source's rate
        self._silent_samples = 0
        if owed == 0:
            return None
        frame = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=owed)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = like.sample_rate
        return frame

    def _encode(self, frame: av.AudioFrame | None) -> None:
        if frame is None:
            return
        for resampled in self._resampler.resample(frame):
            for packet in self._codec.encode(resampled):
                data = bytes(packet)
                self.packets_encoded += 1
                # Zeros in for a while and the same packet twice: settled.
                if self._zeros_in >= self.SETTLE_FRAMES and data == self._last:
                    self._silence = data
                self._last = data
                self._ready.append(data)

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
