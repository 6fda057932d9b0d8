"""The real bot in the dev room, met by a real WebRTC peer (aiortc) on loopback."""

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bench.devroom_client import DevRoomClient
from bot.rooms import dev_room_bot
from personas import load_persona
from processors.replica.assets import load_replica
from processors.replica.face import FaceRig
from tests.bot.conftest import serve_devroom
from tests.replica.measure import looks_like

pytestmark = pytest.mark.integration

QUESTION = "What should I eat in Lisbon?"


@pytest.fixture(scope="module")
def spoken_question(tmp_path_factory) -> Path:
    """The question recorded by another voice than the bot's (espeak-ng)."""
    assert shutil.which("espeak-ng"), "espeak-ng is installed by scripts/setup.sh"
    path = tmp_path_factory.mktemp("question") / "question.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), QUESTION], check=True)
    return path


@pytest.fixture
async def real_bot_room(settings, embedded_models):
    """The dev room with the real bot for persona ava; tracks finished bot tasks."""
    await embedded_models.prepare(load_persona("ava"))
    bot = dev_room_bot(settings, embedded_models, persona_name="ava")
    finished: list[float] = []

    async def on_connection(connection):
        try:
            await bot(connection)
        finally:
            finished.append(time.monotonic())

    async with serve_devroom(on_connection) as url:
        yield url, finished


async def _greeted(client: DevRoomClient) -> None:
    await client.wait_for_message("conversation.replica.stopped_speaking", timeout_s=60)


async def test_peer_speaks_a_question_and_hears_a_spoken_reply_with_a_face(real_bot_room, spoken_question, logged_errors):
    url, finished = real_bot_room
    async with DevRoomClient(url) as client:
        await client.connect()
        await _greeted(client)
        playback = await client.play_wav(spoken_question)
        user = await client.wait_for_message(
            "conversation.utterance", after=playback.started_at,
            where=lambda m: m["properties"]["role"] == "user" and m["properties"]["final"], timeout_s=30,
        )
        assert "eat" in user.data["properties"]["speech"].lower()
        heard_at = await client.wait_for_audio(after=playback.ended_at, timeout_s=30)
        latency = await client.wait_for_message("conversation.latency", after=playback.ended_at, timeout_s=30)
        reply = await client.wait_for_message(
            "conversation.utterance", after=playback.ended_at,
            where=lambda m: m["properties"]["role"] == "replica", timeout_s=60,
        )
        print(
            f"first audible reply {1000 * (heard_at - playback.ended_at):.0f} ms after the question; "
            f"bot stages {latency.data['properties']['timings_ms']}; reply {reply.data['properties']['speech']!r}"
        )
        assert reply.data["properties"]["speech"].strip()
        assert reply.data["inference_id"] == latency.data["inference_id"]
        timings = latency.data["properties"]["timings_ms"]
        assert timings["total"] and timings["total"] > 0
        # The replica's face arrives as video, at the persona's size, in its own colours
        # (the renderer sends I420 planes: swapped or shifted ones would not look like the portrait).
        frame = await client.wait_for_video(count=10)
        assert (frame.width, frame.height) == (512, 512)
        portrait = FaceRig(load_replica(load_persona("ava").replica_id)).base
        colour, correlation = looks_like(frame.image, portrait)
        print(f"received frame against the portrait: colour means within {colour:.1f}, correlation {correlation:.3f}")
        assert colour < 6 and correlation > 0.9
    # The peer left: its bot ends by itself.
    for _ in range(100):
        if finished:
            break
        await asyncio.sleep(0.1)
    assert finished, "the bot did not end after its peer left"
    assert not logged_errors, logged_errors


async def test_peer_dropping_mid_reply_ends_its_bot_cleanly_and_others_carry_on(real_bot_room, spoken_question, logged_errors):
    url, finished = real_bot_room
    async with DevRoomClient(url) as staying:
        await staying.connect()
        async with DevRoomClient(url) as leaving:
            await leaving.connect()
            # Hang up while the greeting is being spoken.
            await leaving.wait_for_message("conversation.replica.started_speaking", timeout_s=60)
            await asyncio.sleep(0.3)
        left_at = time.monotonic()
        for _ in range(100):
            if finished:
                break
            await asyncio.sleep(0.1)
        assert finished and finished[0] - left_at < 10, "the dropped peer's bot did not end"
        # The other conversation still works.
        await _greeted(staying)
        playback = await staying.play_wav(spoken_question)
        await staying.wait_for_message(
            "conversation.utterance", after=playback.ended_at,
            where=lambda m: m["properties"]["role"] == "replica", timeout_s=60,
        )
    assert not logged_errors, logged_errors


def speech_onset_s(path: Path) -> float:
    """Seconds into a recording where speech starts (first 20 ms louder than -35 dBFS)."""
    import numpy as np
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32")
    hop = int(rate * 0.02)
    for i in range(0, len(audio) - hop, hop):
        if 20 * np.log10(np.sqrt(np.mean(audio[i : i + hop] ** 2)) + 1e-9) > -35:
            return i / rate
    raise ValueError(f"no speech in {path}")


def silent_from(client: DevRoomClient, after: float, *, quiet_s: float = 0.3, min_dbfs: float = -45.0) -> float | None:
    """Arrival time of the first received frame after ``after`` that starts ``quiet_s`` of silence."""
    frames = [f for f in client.audio_frames if f.arrived_at >= after]
    for i, frame in enumerate(frames):
        window = [f for f in frames[i:] if f.arrived_at < frame.arrived_at + quiet_s]
        if window and frames[-1].arrived_at >= frame.arrived_at + quiet_s and all(f.rms_dbfs < min_dbfs for f in window):
            return frame.arrived_at
    return None


async def test_talking_over_the_replica_silences_it_within_200_ms(real_bot_room, librivox, logged_errors):
    """Measured at the peer: from the bot's interruption (its event) to the replica's audio going quiet.

    The time from the first syllable to the decision (VAD start, 0.12 s of
    speech for this persona, plus the trip in) is printed as well.
    """
    url, _ = real_bot_room
    clip = next(p for p in librivox if p.name.endswith("0870.wav"))
    # Like a browser on loopback (as bench/latency.py's peer): received audio plays without a long cushion.
    # aiortc's own jitter buffer holds 4 packets and grows with bursts on a busy machine (up to 16, 320 ms),
    # which this peer, not the bot, would then still play after the interruption.
    async with DevRoomClient(url, audio_jitter_prefetch=1) as client:
        await client.connect()
        started = await client.wait_for_message("conversation.replica.started_speaking", timeout_s=60)
        await client.wait_for_audio(after=started.arrived_at, timeout_s=10)
        await asyncio.sleep(0.8)  # well into the greeting
        # (a 0.3 s window: the greeting has short pauses between its phrases)
        assert client.first_audible(after=time.monotonic() - 0.3) is not None, "the replica is not speaking"
        playback = await client.play_wav(clip, wait=False)
        speech_at = playback.started_at + speech_onset_s(clip)
        interrupted = await client.wait_for_message(
            "conversation.replica_interrupted", after=playback.started_at, timeout_s=10
        )
        await asyncio.sleep(1.5)
        # Longer than any pause inside the replica's speech: it really stopped.
        stopped_at = silent_from(client, after=speech_at, quiet_s=0.8)
        assert stopped_at is not None, "the replica kept talking"
        stop_ms = (stopped_at - interrupted.arrived_at) * 1000
        print(
            f"replica audio quiet {stop_ms:.0f} ms after the interruption; "
            f"{(stopped_at - speech_at) * 1000:.0f} ms after the user's first syllable"
        )
        assert stop_ms <= 200
    assert not logged_errors, logged_errors
