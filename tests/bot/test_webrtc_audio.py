"""The replica's voice encoded on the event loop: a real WebRTC peer hears it whole, in tune and stamped in order.

And silence: once libopus settles on it, its packet is sent again instead of
encoding more zeros, and the next words encode as they would have.

Why it is encoded there (aiortc's thread pool let the voice fall behind and
leave in bursts on busy cores) is measured by ``bench/audio_pacing.py``,
not here.
"""

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamTrack

from bench.devroom_client import DevRoomClient
from bot.webrtc_audio import OpusPacketTrack
from tests.bot.conftest import TONE_HZ, TONE_S, ToneBotSessions, speech_wav

pytestmark = pytest.mark.integration


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[int(np.argmax(spectrum))])


async def test_a_dev_room_peer_hears_the_voice_encoded_on_the_loop(
    devroom_url: str, tone_bot_sessions: ToneBotSessions
) -> None:
    async with DevRoomClient(devroom_url) as client:
        await client.connect()
        (connection,) = tone_bot_sessions.connections.values()
        (audio_transceiver,) = [t for t in connection.pc.getTransceivers() if t.kind == "audio"]
        sender = audio_transceiver.sender
        assert isinstance(sender.track, OpusPacketTrack), sender.track

        stamps: list[int] = []
        send_rtp = sender.transport._send_rtp

        async def recording_send(data: bytes) -> None:
            if int.from_bytes(data[8:12], "big") == sender._ssrc:
                stamps.append(int.from_bytes(data[4:8], "big"))
            await send_rtp(data)

        sender.transport._send_rtp = recording_send
        playback = await client.play_wav(speech_wav())
        heard_at = await client.wait_for_audio(after=playback.ended_at, timeout_s=10)
        await asyncio.sleep(TONE_S + 0.5)  # the whole reply

        audio, rate = client.received_audio()
        assert rate == 48000
        loud = np.flatnonzero(np.abs(audio) > 0.05)
        tone = audio[loud[0] : loud[-1]]
        # The stand-in bot answers with a 440 Hz tone: it arrives decoded, in
        # tune, and as long as it was sent (no 20 ms packet lost or repeated).
        assert abs(_peak_hz(tone, rate) - TONE_HZ) < 5
        assert tone.size / rate == pytest.approx(TONE_S, abs=0.06)
        # One packet per 20 ms of voice, stamped 960 samples (at 48 kHz) apart.
        steps = np.diff(np.array(stamps, dtype=np.int64)) % 2**32
        assert len(stamps) > 50 and set(steps.tolist()) == {960}, sorted(set(steps.tolist()))[:5]



class _Frames(MediaStreamTrack):
    """A source track giving prepared 10 ms frames (16 kHz mono s16), as pipecat's output track does."""

    kind = "audio"

    def __init__(self, samples: np.ndarray):
        super().__init__()
        self._chunks = [samples[i : i + 160] for i in range(0, len(samples), 160)]
        self._next = 0

    async def recv(self) -> av.AudioFrame:
        chunk = self._chunks[self._next]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, self._next * 160, fractions.Fraction(1, 16000)
        self._next += 1
        return frame


def _decode(packets: list) -> np.ndarray:
    codec = av.CodecContext.create("libopus", "r")
    codec.sample_rate, codec.layout = 48000, "stereo"
    out = []
    for packet in packets:
        for frame in codec.decode(av.Packet(bytes(packet))):
            out.append(frame.to_ndarray().reshape(-1, 2)[:, 0].astype(np.float64) / 32768)
    return np.concatenate(out)


async def test_silence_reuses_libopus_packet_and_the_next_words_encode_as_before() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
    silence = np.zeros(3 * rate, np.int16)
    samples = np.concatenate([tone, silence, tone, silence[:rate]])

    track = OpusPacketTrack(_Frames(samples))
    packets = [await track.recv() for _ in range(len(samples) // 320 - 5)]  # libopus holds back a few ms
    # One packet per 20 ms, stamped 960 samples apart, whether encoded or sent again.
    assert [p.pts for p in packets] == [960 * i for i in range(len(packets))]
    # Three seconds of silence cost a handful of encodes, not 150.
    assert track.packets_encoded < len(packets) - 140, (track.packets_encoded, len(packets))

    reference = OpusPacketTrack(_Frames(samples))
    reference.SETTLE_FRAMES = 10**9  # never settles: every packet encoded
    expected = [await reference.recv() for _ in range(len(packets))]
    assert reference.packets_encoded >= len(packets)
    heard, meant = _decode(packets), _decode(expected)
    assert heard.size == meant.size
    # The same sound: silence as silence, and the tone after it as libopus encodes it without the shortcut.
    second = slice(4 * 48000 + 4800, 5 * 48000 - 4800)
    assert abs(_peak_hz(heard[second], 48000) - TONE_HZ) < 5
    error = heard[second] - meant[second]
    assert 10 * np.log10(np.sum(meant[second] ** 2) / np.sum(error**2)) > 30
    assert np.abs(heard[2 * 48000 : 4 * 48000 - 4800]).max() < 1e-3
