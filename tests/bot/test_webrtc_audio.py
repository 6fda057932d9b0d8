"""The replica's voice encoded on the event loop: a real WebRTC peer hears it whole, in tune and stamped in order.

Why it is encoded there (aiortc's thread pool let the voice fall behind and
leave in bursts on busy cores) is measured by ``bench/audio_pacing.py``,
not here.
"""

import asyncio

import numpy as np
import pytest

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

