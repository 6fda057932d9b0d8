"""The dev room with real WebRTC peers: signalling, media both ways, app messages, hang-ups.

The server and its Python peers run on 127.0.0.1 with no STUN server, so these
pass on a machine whose only interface is loopback.
"""

import asyncio
import time

import httpx
import numpy as np
import pytest

from bot.devroom import OnConnection
from bench.devroom_client import DevRoomClient
from tests.bot.conftest import ToneBotSessions, serve_devroom, speech_wav, wait_for

pytestmark = pytest.mark.integration

AUDIO_SDP = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


async def test_health_page_and_offer_validation(devroom_url: str) -> None:
    async with httpx.AsyncClient(base_url=devroom_url) as http:
        health = await http.get("/api/health")
        page = await http.get("/")
        missing_sdp = await http.post("/api/offer", json={"type": "offer"})
        wrong_type = await http.post("/api/offer", json={"sdp": AUDIO_SDP, "type": "answer"})
        bad_sdp = await http.post("/api/offer", json={"sdp": "not sdp", "type": "offer"})
        video_first = await http.post(
            "/api/offer", json={"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "type": "offer"}
        )
        unknown_peer = await http.patch("/api/offer", json={"pc_id": "nobody", "candidates": []})
        script = await http.get("/static/app.js")

    assert health.json() == {"status": "ok"}
    assert page.status_code == 200 and '<video id="replica"' in page.text
    assert "https://" not in page.text, "the page must not load anything from the network"
    assert script.status_code == 200
    assert missing_sdp.status_code == 422
    assert missing_sdp.json()["detail"][0]["loc"] == ["body", "sdp"]
    assert wrong_type.status_code == 422
    assert wrong_type.json()["detail"][0]["loc"] == ["body", "type"]
    for refused in (bad_sdp, video_first):
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", "sdp"]
    assert unknown_peer.status_code == 404


async def test_speech_in_gets_audio_video_and_events_back(
    devroom_url: str, tone_bot_sessions: ToneBotSessions, logged_errors: list[str]
) -> None:
    camera = np.full((240, 320, 3), (200, 120, 40), dtype=np.uint8)
    async with DevRoomClient(devroom_url, camera=camera) as client:
        await client.connect()
        frame = await client.wait_for_video(count=5)
        playback = await client.play_wav(speech_wav())
        heard_at = await client.wait_for_audio(after=playback.ended_at, timeout_s=10)
        latency = await client.wait_for_message("conversation.latency", timeout_s=5)

        reply_s = heard_at - playback.ended_at
        print(f"\nfirst audible reply {reply_s * 1000:.0f} ms after the speech ended "
              f"({playback.duration_s:.2f} s of speech); bot timings {latency.data['properties']}")
        assert (frame.width, frame.height) == (320, 240)
        assert 0.4 < reply_s < 3.0  # the bot waits 0.6 s of silence, then answers
        events = [m.data.get("event_type") for m in client.messages if isinstance(m.data, dict)]
        for expected in (
            "conversation.user.started_speaking",
            "conversation.user.stopped_speaking",
            "conversation.utterance",
            "conversation.replica.started_speaking",
            "conversation.latency",
        ):
            assert expected in events

        # Client -> bot app messages reach the pipeline, and its answer comes back.
        sent_at = time.monotonic()
        client.send_app_message(
            {
                "message_type": "conversation",
                "event_type": "conversation.respond",
                "properties": {"text": "hello"},
            }
        )
        await client.wait_for_message(
            "conversation.utterance",
            after=sent_at,
            where=lambda m: m["properties"] == {
                "role": "replica", "speech": "you said: hello", "final": True, "inference_id": "turn-2"
            },
        )

        (bot,) = tone_bot_sessions.bots.values()
        assert bot.camera_frames and set(bot.camera_frames) == {(320, 240)}
        audio, rate = client.received_audio()
        assert rate == 48000 and audio.size > rate  # over a second of audio came back

    await wait_for(lambda: tone_bot_sessions.finished == tone_bot_sessions.started, 10)
    assert tone_bot_sessions.errors == []
    assert logged_errors == []


async def test_peer_leaving_mid_stream_ends_only_its_bot(
    devroom_url: str, tone_bot_sessions: ToneBotSessions, logged_errors: list[str]
) -> None:
    async with DevRoomClient(devroom_url) as staying, DevRoomClient(devroom_url) as leaving:
        await asyncio.gather(staying.connect(), leaving.connect())
        await wait_for(lambda: len(tone_bot_sessions.started) == 2, 5)
        left_id = leaving.pc_id
        # Hang up in the middle of speaking.
        await leaving.play_wav(speech_wav(), wait=False)
        await asyncio.sleep(1.0)
        await leaving.close()

        await wait_for(lambda: left_id in tone_bot_sessions.finished, 10)
        assert left_id in tone_bot_sessions.disconnected
        assert staying.pc_id not in tone_bot_sessions.finished

        # The other call goes on.
        playback = await staying.play_wav(speech_wav())
        await staying.wait_for_audio(after=playback.ended_at, timeout_s=10)

    await wait_for(lambda: len(tone_bot_sessions.finished) == 2, 10)
    assert tone_bot_sessions.errors == []
    assert logged_errors == []


async def test_server_shutdown_hangs_up_and_ends_every_bot(
    devroom_on_connection: OnConnection, tone_bot_sessions: ToneBotSessions, logged_errors: list[str]
) -> None:
    async with serve_devroom(devroom_on_connection) as url:
        client = DevRoomClient(url)
        await client.connect()
        await client.wait_for_video()
    # The app's lifespan has disconnected the peer and waited for its bot.
    try:
        assert tone_bot_sessions.finished == tone_bot_sessions.started != []
        await wait_for(lambda: client.peer_left, 5)
    finally:
        await client.close()
    assert tone_bot_sessions.errors == []
    assert logged_errors == []
