"""Perception end to end over the API: a real aiortc peer shows a real face; the reply and the analysis use it.

The conversation is created over the API with the coach persona (perception
on), the peer's camera sends scikit-image's astronaut (a real photograph), and
the real engines run (Whisper, the packaged LLM on llama.cpp, piper). The
question ("Can you see me?") comes as ``conversation.respond`` (text), so what
is tested is what the replica sees, not what it hears; the reply says it.
"""

import asyncio
import time

import cv2
import httpx
import pytest

from api import create_app
from bench.devroom_client import DevRoomClient
from processors.perception.processor import CUE_LINE_PREFIX
from tests import face_images
from tests.api.conftest import AUTH, WebhookReceiver, api_settings, serve_api

pytestmark = pytest.mark.integration

QUESTION = "Can you see me?"


async def _until(check, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_the_replica_sees_the_face_and_reports_on_it_at_the_end(tmp_path, embedded_models):
    receiver = WebhookReceiver(failures=0)
    app = create_app(api_settings(tmp_path / "data", None), models=embedded_models)
    face = cv2.resize(face_images.astronaut()[0:480, 0:512], (320, 240), interpolation=cv2.INTER_AREA)
    try:
        async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=120) as api:
            created = await api.post(
                "/v2/conversations", json={"persona_id": "coach", "callback_url": receiver.url, "custom_greeting": "Hi."}
            )
            assert created.status_code == 200, created.text
            cid = created.json()["conversation_id"]
            async with DevRoomClient(created.json()["conversation_url"], camera=face) as peer:
                await peer.connect()
                await _until(lambda: any(isinstance(m.data, dict) and m.data.get("type") == "devroom.camera" for m in peer.messages), 30)
                asked = next(m.data for m in peer.messages if isinstance(m.data, dict) and m.data.get("type") == "devroom.camera")
                assert asked["framerate"] == 2 and (asked["width"], asked["height"]) == (320, 240)
                cues = await peer.wait_for_message(
                    "conversation.perception_cues", timeout_s=30,
                    where=lambda m: (m["properties"]["cues"].get("faces") or {}).get("value") == 1,
                )
                assert "smiling" in cues.data["properties"]["line"]
                await peer.wait_for_message("conversation.replica.stopped_speaking", timeout_s=60)  # the greeting
                asked_at = time.monotonic()
                peer.send_app_message(
                    {"message_type": "conversation", "event_type": "conversation.respond", "conversation_id": cid,
                     "properties": {"text": QUESTION}}
                )
                reply = await peer.wait_for_message(
                    "conversation.utterance", after=asked_at,
                    where=lambda m: m["properties"]["role"] == "replica", timeout_s=120,
                )
                said = reply.data["properties"]["speech"]
                (bot,) = app.state.live.get(cid).bots
                # The turn's LLM context: the cue line came before the user's words.
                user_turns = [
                    m["content"] for p in bot.processors
                    if hasattr(getattr(p, "context", None), "get_messages")
                    for m in p.context.get_messages() if m.get("role") == "user"
                ]
                print(f"\nLLM got: {user_turns[-1]!r}\nreply: {said!r}")
                assert user_turns[-1] == (
                    f"{CUE_LINE_PREFIX}the user is smiling and looking at you; "
                    f"Is the user looking at the camera? looking at the camera.)\n{QUESTION}"
                )
                assert CUE_LINE_PREFIX not in said
                # With the embedded LLM the cues answer a question about the user's picture.
                assert said == "Yes, I can see you: you're smiling and looking right at me."
                ended = await api.post(f"/v2/conversations/{cid}/end")
                assert ended.json()["status"] == "ended"
            try:
                await _until(lambda: "application.perception_analysis" in receiver.events(cid), 20)
            except AssertionError:
                raise AssertionError(f"webhooks received: {receiver.events(cid)}") from None
            event = next(
                e for e, _, _ in receiver.received
                if e["event_type"] == "application.perception_analysis" and e["conversation_id"] == cid
            )
            analysis = event["properties"]
            print(f"analysis: {analysis['analysis']}")
            assert event["message_type"] == "application"
            assert [q["query"] for q in analysis["queries"]] == [
                "How much of the call was the user looking at the camera?",
                "Was the user smiling or frowning?",
                "Did the user nod or shake their head?",
            ]
            assert "looking 100%" in analysis["queries"][0]["answer"]
            assert "smiling" in analysis["queries"][1]["answer"]
            assert analysis["frames_analysed"] >= 4
    finally:
        receiver.close()
