"""A conversation created over the API, met by a real WebRTC peer (aiortc) on loopback with the real bot."""

import asyncio
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from api import create_app
from bench.devroom_client import DevRoomClient
from tests.api.conftest import AUTH, WebhookReceiver, api_settings, serve_api

pytestmark = pytest.mark.integration

QUESTION = "What should I eat in Lisbon?"
GREETING = "Welcome to the API room. Ask me anything."
CONTEXT = "The user is visiting for one day."


@pytest.fixture(scope="module")
def spoken_question(tmp_path_factory) -> Path:
    """The question recorded by another voice than the bot's (espeak-ng)."""
    assert shutil.which("espeak-ng"), "espeak-ng is installed by scripts/setup.sh"
    path = tmp_path_factory.mktemp("question") / "question.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), QUESTION], check=True)
    return path


async def _until(check, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_a_peer_talks_in_a_conversation_created_over_the_api(tmp_path, embedded_models, spoken_question):
    receiver = WebhookReceiver(failures=0)
    app = create_app(api_settings(tmp_path / "data"), models=embedded_models)
    try:
        async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as api:
            response = await api.post(
                "/v2/conversations",
                json={
                    "persona_id": "ava",
                    "custom_greeting": GREETING,
                    "conversational_context": CONTEXT,
                    "callback_url": receiver.url,
                },
            )
            assert response.status_code == 200, response.text
            created = response.json()
            cid = created["conversation_id"]
            assert created["conversation_url"] == f"{base}/conversations/{cid}/"

            async with DevRoomClient(created["conversation_url"]) as peer:
                await peer.connect()
                joined = await peer.wait_for_message("system.replica_joined", timeout_s=30)
                assert joined.data == {
                    "message_type": "system", "event_type": "system.replica_joined", "conversation_id": cid,
                    "properties": {"replica_id": "eileen"},
                }
                # The custom greeting is spoken first.
                await peer.wait_for_message("conversation.replica.stopped_speaking", timeout_s=60)
                (bot,) = app.state.live.get(cid).bots
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
                done = await peer.wait_for_message(
                    "conversation.replica.stopped_speaking", after=playback.ended_at, timeout_s=60
                )

                # Client -> replica: speak this text verbatim.
                peer.send_app_message(
                    {"message_type": "conversation", "event_type": "conversation.echo", "conversation_id": cid,
                     "properties": {"text": "Echo test."}}
                )
                await peer.wait_for_message("conversation.replica.started_speaking", after=done.arrived_at, timeout_s=30)
                await peer.wait_for_message("conversation.replica.stopped_speaking", after=done.arrived_at, timeout_s=30)

                # Ended over the API while the peer is there: it hears why, on the channel.
                ended = await api.post(f"/v2/conversations/{cid}/end")
                assert ended.json()["status"] == "ended"
                shutdown = await peer.wait_for_message("system.shutdown", timeout_s=10)
                assert shutdown.data["properties"] == {"shutdown_reason": "end_conversation_endpoint_hit"}
                await _until(lambda: _async(peer.peer_left or peer.connection_state in ("closed", "failed")), 15)

            verbose = (await api.get(f"/v2/conversations/{cid}", params={"verbose": "true"})).json()
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
            assert app.state.live.get(cid) is None

        await _until(lambda: _async(len(receiver.events(cid)) == 3), 15)
        assert receiver.events(cid) == ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
        ready = receiver.received[-1][0]
        assert ready["properties"]["transcript"] == transcript
    finally:
        receiver.close()


async def test_the_call_ends_participant_left_timeout_after_the_peer_leaves(tmp_path, embedded_models):
    receiver = WebhookReceiver(failures=0)
    app = create_app(api_settings(tmp_path / "data"), models=embedded_models)
    try:
        async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as api:
            created = (
                await api.post(
                    "/v2/conversations",
                    json={"persona_id": "ava", "callback_url": receiver.url, "properties": {"participant_left_timeout": 2}},
                )
            ).json()
            cid = created["conversation_id"]
            async with DevRoomClient(created["conversation_url"]) as peer:
                await peer.connect()
                await peer.wait_for_message("conversation.replica.started_speaking", timeout_s=60)
            left_at = asyncio.get_running_loop().time()

            async def status() -> str:
                return (await api.get(f"/v2/conversations/{cid}")).json()["status"]

            assert await status() == "active"  # still waiting for someone to come back
            await _until(lambda: _async(app.state.live.get(cid) is None), 20)
            waited = asyncio.get_running_loop().time() - left_at
            assert 1.5 < waited < 12, waited
            verbose = (await api.get(f"/v2/conversations/{cid}", params={"verbose": "true"})).json()
            assert verbose["status"] == "ended"
            assert verbose["shutdown_reason"] == "participant_left_timeout reached"
        await _until(lambda: _async("application.transcription_ready" in receiver.events(cid)), 15)
        shutdown = next(e for e, _, _ in receiver.received if e["event_type"] == "system.shutdown")
        assert shutdown["properties"]["shutdown_reason"] == "participant_left_timeout reached"
    finally:
        receiver.close()


async def test_max_call_duration_ends_a_call_the_peer_is_in(tmp_path, embedded_models):
    receiver = WebhookReceiver(failures=0)
    app = create_app(api_settings(tmp_path / "data"), models=embedded_models)
    try:
        async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as api:
            created = (
                await api.post(
                    "/v2/conversations",
                    json={"persona_id": "ava", "callback_url": receiver.url, "properties": {"max_call_duration": 6}},
                )
            ).json()
            cid = created["conversation_id"]
            async with DevRoomClient(created["conversation_url"]) as peer:
                await peer.connect()
                shutdown = await peer.wait_for_message("system.shutdown", timeout_s=30)
                assert shutdown.data["properties"] == {"shutdown_reason": "max_call_duration reached"}
                await _until(lambda: _async(peer.peer_left or peer.connection_state in ("closed", "failed")), 15)
            verbose = (await api.get(f"/v2/conversations/{cid}", params={"verbose": "true"})).json()
            assert verbose["status"] == "ended" and verbose["shutdown_reason"] == "max_call_duration reached"
        await _until(lambda: _async("system.shutdown" in receiver.events(cid)), 15)
        shutdown = next(e for e, _, _ in receiver.received if e["event_type"] == "system.shutdown")
        assert shutdown["properties"]["shutdown_reason"] == "max_call_duration reached"
    finally:
        receiver.close()


async def _async(value):
    return value
