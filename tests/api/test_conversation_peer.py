"""A conversation created over the API, met by a real WebRTC peer (aiortc) on loopback with the real bot.

Each test runs on SQLite and on the real PostgreSQL the API tests start.
"""

import asyncio
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from api import create_app
from bench.devroom_client import DevRoomClient
from tests.api.conftest import AUTH, WebhookReceiver, api_settings, serve_api
from tests.fake_openai import FakeChatServer, ToolCall
from tests.voices import VOICES, spoken, write_wav

pytestmark = pytest.mark.integration

QUESTION = "What should I eat in Lisbon?"
GREETING = "Welcome to the API room. Ask me anything."
CONTEXT = "The user is visiting for one day."


@pytest.fixture(scope="module")
def spoken_question(tmp_path_factory) -> Path:
    """The question in another voice than the bot's: festival's HTS voice.

    Whisper base heard espeak-ng's "What should I eat in Lisbon?" as "at
    shonaidin lisman" in a recording, with no word of the question left.
    """
    path = tmp_path_factory.mktemp("question") / "question.wav"
    return write_wav(path, spoken([QUESTION], VOICES["festival-slt-hts"], pause_secs=0.0))


async def _until(check, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _async(value):
    return value


@dataclass
class Server:
    """The API served on loopback with the real engines, its client and a webhook receiver."""

    app: object
    base: str
    api: httpx.AsyncClient
    receiver: WebhookReceiver

    async def create(self, **body) -> dict:
        body.setdefault("persona_id", "ava")
        body.setdefault("callback_url", self.receiver.url)
        response = await self.api.post("/v2/conversations", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def verbose(self, cid: str) -> dict:
        return (await self.api.get(f"/v2/conversations/{cid}", params={"verbose": "true"})).json()

    async def webhook(self, cid: str, event_type: str, timeout_s: float = 15) -> dict:
        await _until(lambda: _async(event_type in self.receiver.events(cid)), timeout_s)
        return next(
            e for e, _, _ in self.receiver.received if e["event_type"] == event_type and e["conversation_id"] == cid
        )


@pytest.fixture
async def server(tmp_path, embedded_models, database_url):
    receiver = WebhookReceiver(failures=0)
    app = create_app(api_settings(tmp_path / "data", database_url), models=embedded_models)
    try:
        async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as api:
            yield Server(app=app, base=base, api=api, receiver=receiver)
    finally:
        receiver.close()


async def _peer_sees_the_call_end(peer: DevRoomClient) -> None:
    await _until(lambda: _async(peer.peer_left or peer.connection_state in ("closed", "failed")), 15)


async def test_a_peer_talks_in_a_conversation_created_over_the_api(server, spoken_question):
    created = await server.create(custom_greeting=GREETING, conversational_context=CONTEXT)
    cid = created["conversation_id"]
    assert created["conversation_url"] == f"{server.base}/conversations/{cid}/"

    async with DevRoomClient(created["conversation_url"]) as peer:
        await peer.connect()
        joined = await peer.wait_for_message("system.replica_joined", timeout_s=30)
        assert joined.data == {
            "message_type": "system", "event_type": "system.replica_joined", "conversation_id": cid,
            "properties": {"replica_id": "eileen"},
        }
        # The custom greeting is spoken first.
        await peer.wait_for_message("conversation.replica.stopped_speaking", timeout_s=60)
        (bot,) = server.app.state.live.get(cid).bots
        assert bot.conversation.custom_greeting == GREETING
        assert bot.conversation.conversational_context == CONTEXT
        assert CONTEXT in bot.conversation.persona.full_system_prompt(bot.conversation.conversational_context)

        playback = await peer.play_wav(spoken_question)
        heard = await peer.wait_for_message(
            "conversation.utterance", after=playback.started_at,
            where=lambda m: m["properties"]["role"] == "user" and m["properties"]["final"], timeout_s=30,
        )
        assert heard.data["conversation_id"] == cid
        assert "eat" in heard.data["properties"]["speech"].lower()
        reply = await peer.wait_for_message(
            "conversation.utterance", after=playback.ended_at,
            where=lambda m: m["properties"]["role"] == "replica", timeout_s=60,
        )
        assert reply.data["properties"]["speech"].strip()
        done = await peer.wait_for_message("conversation.replica.stopped_speaking", after=playback.ended_at, timeout_s=60)

        # Client -> replica: speak this text verbatim.
        peer.send_app_message(
            {"message_type": "conversation", "event_type": "conversation.echo", "conversation_id": cid,
             "properties": {"text": "Echo test."}}
        )
        await peer.wait_for_message("conversation.replica.started_speaking", after=done.arrived_at, timeout_s=30)
        await peer.wait_for_message("conversation.replica.stopped_speaking", after=done.arrived_at, timeout_s=30)

        # Ended over the API while the peer is there: it hears why, on the channel.
        ended = await server.api.post(f"/v2/conversations/{cid}/end")
        assert ended.json()["status"] == "ended"
        shutdown = await peer.wait_for_message("system.shutdown", timeout_s=10)
        assert shutdown.data["properties"] == {"shutdown_reason": "end_conversation_endpoint_hit"}
        await _peer_sees_the_call_end(peer)

    verbose = await server.verbose(cid)
    assert verbose["shutdown_reason"] == "end_conversation_endpoint_hit"
    transcript = verbose["transcript"]
    assert transcript[0] == {"role": "assistant", "content": GREETING}
    assert any(t["role"] == "user" and "eat" in t["content"].lower() for t in transcript)
    assert any(t["role"] == "assistant" and t["content"] == reply.data["properties"]["speech"] for t in transcript)
    kinds = [e["event_type"] for e in verbose["events"]]
    assert kinds[0] == "system.replica_joined"
    assert kinds[-2:] == ["system.shutdown", "application.transcription_ready"]
    assert {"conversation.utterance", "conversation.replica.started_speaking",
            "conversation.user.stopped_speaking", "conversation.latency"} <= set(kinds)
    assert server.app.state.live.get(cid) is None

    ready = await server.webhook(cid, "application.transcription_ready")
    assert server.receiver.events(cid) == ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
    assert ready["properties"]["transcript"] == transcript


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_RESULT = "The weather in Lisbon now: 21 degrees and sunny."


def _scripted_llm(request: dict) -> str | ToolCall:
    """The LLM at its network seam: calls the tool when asked about the weather, then answers from its result."""
    system = next(m["content"] for m in request["messages"] if m["role"] == "system")
    last_user = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
    if "weather" in last_user.lower() and TOOL_RESULT not in system:
        return ToolCall("get_weather", {"city": "Lisbon"})
    if "OVERWRITTEN" in system:
        return "The context was replaced."
    if TOOL_RESULT in system:
        return "It is 21 degrees and sunny in Lisbon."
    return "I am not sure."


def _message(cid: str, event_type: str, **properties) -> dict:
    return {"message_type": "conversation", "event_type": event_type, "conversation_id": cid, "properties": properties}


async def test_every_live_message_goes_through_both_ways(server):
    """tool_call out and append_llm_context back, sensitivity, respond, overwrite, interrupt, replica_joined, shutdown."""
    async with FakeChatServer(_scripted_llm).running() as llm:
        persona = await server.api.post(
            "/v2/personas",
            json={
                "persona_name": "weather", "system_prompt": "You answer weather questions.",
                "layers": {"llm": {"engine": "openai", "base_url": llm.base_url, "model": "fake", "tools": [WEATHER_TOOL]}},
            },
        )
        assert persona.status_code == 200, persona.text
        created = await server.create(persona_id=persona.json()["persona_id"], audio_only=True, custom_greeting="Hi.")
        cid = created["conversation_id"]
        async with DevRoomClient(created["conversation_url"]) as peer:
            await peer.connect()
            await peer.wait_for_message("system.replica_joined", timeout_s=30)
            greeted = await peer.wait_for_message("conversation.replica.stopped_speaking", timeout_s=60)
            (bot,) = server.app.state.live.get(cid).bots

            # conversation.sensitivity: the VAD takes the new pause sensitivity live.
            vad = next(p for p in bot.processors if getattr(p, "_vad_controller", None))._vad_controller._vad_analyzer
            assert vad.params.stop_secs == pytest.approx(0.3)  # medium
            peer.send_app_message(_message(cid, "conversation.sensitivity", participant_pause_sensitivity="high"))
            await _until(lambda: _async(vad.params.stop_secs == pytest.approx(0.15)), 10)
            assert bot.sensitivity["participant_interrupt_sensitivity"] == "medium"

            # conversation.respond -> the LLM calls the tool -> conversation.tool_call to the client.
            peer.send_app_message(_message(cid, "conversation.respond", text="What is the weather in Lisbon?"))
            call = await peer.wait_for_message("conversation.tool_call", after=greeted.arrived_at, timeout_s=30)
            assert call.data["conversation_id"] == cid and call.data["inference_id"]
            assert call.data["properties"]["name"] == "get_weather"
            assert json.loads(call.data["properties"]["arguments"]) == {"city": "Lisbon"}
            assert llm.requests[-1]["tools"][0]["function"]["name"] == "get_weather"

            # The client runs the tool and answers with append_llm_context; the next reply uses it.
            peer.send_app_message(_message(cid, "conversation.append_llm_context", context=TOOL_RESULT))
            peer.send_app_message(_message(cid, "conversation.respond", text="So, what is it like?"))
            answer = await peer.wait_for_message(
                "conversation.utterance", after=call.arrived_at,
                where=lambda m: m["properties"]["role"] == "replica" and "21 degrees" in m["properties"]["speech"],
                timeout_s=60,
            )
            assert TOOL_RESULT in llm.system_prompt()

            # conversation.overwrite_llm_context replaces the context.
            peer.send_app_message(_message(cid, "conversation.overwrite_llm_context", context="OVERWRITTEN"))
            peer.send_app_message(_message(cid, "conversation.respond", text="And now?"))
            replaced = await peer.wait_for_message(
                "conversation.utterance", after=answer.arrived_at,
                where=lambda m: m["properties"]["role"] == "replica" and "replaced" in m["properties"]["speech"],
                timeout_s=60,
            )
            assert TOOL_RESULT not in llm.system_prompt()

            # conversation.interrupt while the replica speaks: it stops and says so.
            done = replaced  # the replica's line comes as it stops speaking
            peer.send_app_message(_message(cid, "conversation.echo", text="This is a long sentence that will be cut off before it ends, " * 3))
            await peer.wait_for_message("conversation.replica.started_speaking", after=done.arrived_at, timeout_s=30)
            peer.send_app_message(_message(cid, "conversation.interrupt"))
            await peer.wait_for_message("conversation.replica_interrupted", after=done.arrived_at, timeout_s=10)

            await server.api.post(f"/v2/conversations/{cid}/end")
            shutdown = await peer.wait_for_message("system.shutdown", timeout_s=10)
            assert shutdown.data["properties"] == {"shutdown_reason": "end_conversation_endpoint_hit"}
            await _peer_sees_the_call_end(peer)
    kinds = [e["event_type"] for e in (await server.verbose(cid))["events"]]
    assert {"conversation.tool_call", "conversation.replica_interrupted"} <= set(kinds)


async def test_the_call_ends_participant_left_timeout_after_the_peer_leaves(server):
    created = await server.create(properties={"participant_left_timeout": 2})
    cid = created["conversation_id"]
    async with DevRoomClient(created["conversation_url"]) as peer:
        await peer.connect()
        await peer.wait_for_message("conversation.replica.started_speaking", timeout_s=60)
    left_at = asyncio.get_running_loop().time()

    assert (await server.verbose(cid))["status"] == "active"  # still waiting for someone to come back
    await _until(lambda: _async(server.app.state.live.get(cid) is None), 20)
    waited = asyncio.get_running_loop().time() - left_at
    assert 1.5 < waited < 12, waited
    verbose = await server.verbose(cid)
    assert verbose["status"] == "ended"
    assert verbose["shutdown_reason"] == "participant_left_timeout reached"
    shutdown = await server.webhook(cid, "system.shutdown")
    assert shutdown["properties"]["shutdown_reason"] == "participant_left_timeout reached"


async def test_max_call_duration_ends_a_call_the_peer_is_in(server):
    created = await server.create(properties={"max_call_duration": 6})
    cid = created["conversation_id"]
    async with DevRoomClient(created["conversation_url"]) as peer:
        await peer.connect()
        shutdown = await peer.wait_for_message("system.shutdown", timeout_s=30)
        assert shutdown.data["properties"] == {"shutdown_reason": "max_call_duration reached"}
        await _peer_sees_the_call_end(peer)
    verbose = await server.verbose(cid)
    assert verbose["status"] == "ended" and verbose["shutdown_reason"] == "max_call_duration reached"
    shutdown = await server.webhook(cid, "system.shutdown")
    assert shutdown["properties"]["shutdown_reason"] == "max_call_duration reached"


async def test_a_recorded_call_is_an_mp4_with_the_replica_s_face_and_voice_and_the_user_s_voice(
    server, spoken_question, tmp_path, embedded_models
):
    from personas import load_persona
    from processors.stt.whisper import shared_whisper_model, transcribe_trimmed

    async with FakeChatServer(lambda _request: "Try the grilled sardines and the custard tarts by the river.").running() as llm:
        persona = await server.api.post(
            "/v2/personas",
            json={"persona_name": "recorded", "system_prompt": "Be brief.",
                  "layers": {"llm": {"engine": "openai", "base_url": llm.base_url, "model": "fake"}}},
        )
        persona_id = persona.json()["persona_id"]
        unrecorded = await server.create(persona_id=persona_id, replica_id="eileen")
        created = await server.create(
            persona_id=persona_id, replica_id="eileen", custom_greeting="Welcome to the recorded call.",
            properties={"enable_recording": True},
        )
        cid = created["conversation_id"]
        async with DevRoomClient(created["conversation_url"]) as peer:
            await peer.connect()
            await peer.wait_for_message("conversation.replica.stopped_speaking", timeout_s=60)
            playback = await peer.play_wav(spoken_question)
            await peer.wait_for_message(
                "conversation.utterance", after=playback.ended_at,
                where=lambda m: m["properties"]["role"] == "replica" and m["properties"]["final"], timeout_s=60,
            )
            await server.api.post(f"/v2/conversations/{cid}/end")
            await _peer_sees_the_call_end(peer)
        await server.api.post(f"/v2/conversations/{unrecorded['conversation_id']}/end")

    ready = await server.webhook(cid, "application.recording_ready", timeout_s=120)
    path = Path(ready["properties"]["recording_path"])
    assert path == tmp_path / "data" / "recordings" / f"{cid}.mp4" and path.is_file()
    assert "application.recording_ready" in [e["event_type"] for e in (await server.verbose(cid))["events"]]
    # Nothing is recorded or encoded for a conversation that did not ask.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert "application.recording_ready" not in server.receiver.events(unrecorded["conversation_id"])

    probe = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert (streams["video"]["codec_name"], streams["video"]["width"], streams["video"]["height"]) == ("h264", 512, 512)
    assert streams["audio"]["codec_name"] == "aac"
    duration = float(probe["format"]["duration"])
    assert duration == pytest.approx(ready["properties"]["duration"], abs=1.0) and duration > 4

    # Both voices are in it: the replica's greeting and the user's question.
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        capture_output=True, check=True,
    ).stdout
    audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    model = shared_whisper_model(embedded_models.whisper_path(load_persona("ava")))
    heard = " ".join(transcribe_trimmed(model, audio[a:b]) for a, b in _speech_spans(audio, 16000)).lower()
    print(f"recording ({duration:.1f} s) heard: {heard!r}")
    # Whisper on the mix mishears some words: a few from each side will do.
    words = set(re.findall(r"[a-z]+", heard))
    replica_words = {"welcome", "recorded", "call", "try", "grilled", "sardines", "custard", "tarts", "river"}
    assert len(words & replica_words) >= 2, heard  # the replica's voice
    assert words & {"what", "should", "shall", "eat", "lisbon"}, heard  # the user's voice
    # The face moves: frames differ over the call.
    frames = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf", "fps=1,scale=64:64", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    ).stdout
    gray = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 64 * 64)
    assert gray.mean() > 10, "the replica is seen, not a black frame"
    assert len({row.tobytes() for row in gray}) > 1
    # In its own colours (the renderer hands the recording I420 frames, as it sends them).
    from processors.replica.assets import load_replica
    from processors.replica.face import FaceRig
    from tests.replica.measure import looks_like

    frame = subprocess.run(
        ["ffmpeg", "-v", "error", "-ss", "2", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout
    colour, correlation = looks_like(np.frombuffer(frame, np.uint8).reshape(512, 512, 3), FaceRig(load_replica("eileen")).base)
    assert colour < 6 and correlation > 0.9, (colour, correlation)


def _speech_spans(audio: np.ndarray, rate: int, gap_s: float = 0.6) -> list[tuple[int, int]]:
    """Where someone speaks in ``audio`` (float mono): louder than -40 dBFS, pauses under ``gap_s`` joined."""
    hop = rate // 50
    frames = audio[: len(audio) - len(audio) % hop].reshape(-1, hop)
    loud = np.flatnonzero(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9) > -40)
    spans: list[list[int]] = []
    for i in loud:
        if spans and i - spans[-1][1] <= gap_s * 50:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    pad = rate // 5
    return [(max(0, a * hop - pad), min(len(audio), (b + 1) * hop + pad)) for a, b in spans]
