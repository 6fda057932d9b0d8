"""With DAILY_API_KEY, a conversation is a Daily room made through Daily's REST API, which the bot joins.

Daily's REST API is a local aiohttp server and daily-python's ``CallClient``
is faked at its network seam (``tests/bot/fake_daily.py``); pipecat's
``DailyTransport`` and our handlers are real. The echo persona speaks with
the real piper voice.
"""

import asyncio
import time

import httpx
import pytest

from api import create_app
from bot.engines import EmbeddedModels
from tests.api.conftest import AUTH, WebhookReceiver, api_settings, serve_api
from tests.bot.conftest import logged_errors  # noqa: F401 - a fixture
from tests.bot.fake_daily import FakeDailyRest

pytestmark = pytest.mark.cloud

ROOM_URL = "https://acme.daily.co/made-here"


async def until(condition, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def daily_api(tmp_path, daily):
    """The API with Daily keys, its HTTP client, the fake Daily backend and REST API, and a webhook receiver."""
    receiver = WebhookReceiver(failures=0)
    async with FakeDailyRest(room_url=ROOM_URL) as rest:
        settings = api_settings(tmp_path / "data", daily_api_key=rest.api_key, daily_api_url=rest.url)
        models = EmbeddedModels(settings)
        app = create_app(settings, models=models)
        try:
            async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as api:
                yield api, daily, receiver, rest
        finally:
            await models.close()
            receiver.close()


async def _create(api, receiver, require_auth: bool = False, **properties) -> dict:
    response = await api.post(
        "/v2/conversations",
        json={"persona_id": "echo", "callback_url": receiver.url, "require_auth": require_auth, "properties": properties},
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["conversation_url"] == ROOM_URL
    return created


async def test_the_bot_joins_the_daily_room_it_made_and_the_api_ends_it(daily_api, logged_errors):
    api, daily, receiver, rest = daily_api
    created = await _create(api, receiver)
    cid = created["conversation_id"]
    assert created["meeting_token"] is None
    (room,) = rest.rooms
    assert room["privacy"] == "public"
    (token,) = rest.tokens
    assert token["properties"]["is_owner"] is True
    await until(lambda: daily.in_room(ROOM_URL) and daily.client(ROOM_URL).joined, 20)
    client = daily.client(ROOM_URL)
    assert client.token == "bot-token"
    await asyncio.sleep(0.2)
    await client.person_joins("p1", "Ana")
    # Whoever joins hears on the room's app messages that the replica is there.
    await until(lambda: "system.replica_joined" in client.events_sent(), 5)
    joined = next(m for m, _ in client.sent if m.get("event_type") == "system.replica_joined")
    assert joined == {"message_type": "system", "event_type": "system.replica_joined", "conversation_id": cid,
                      "properties": {"replica_id": "eileen"}}
    await client.app_message(
        {"message_type": "conversation", "event_type": "conversation.echo", "properties": {"text": "Hello from Daily."}},
        "p1",
    )
    await until(lambda: "conversation.replica.stopped_speaking" in client.events_sent(), 30)
    # The replica's frames reached Daily's (real) video source in the format it was made for:
    # it refuses a frame of another size ("frame size mismatch"), and pipecat logs that.
    assert not logged_errors, logged_errors[:3]

    ended = await api.post(f"/v2/conversations/{cid}/end")
    assert ended.json()["status"] == "ended"
    await until(lambda: client.left, 10)
    assert "system.shutdown" in client.events_sent()
    verbose = (await api.get(f"/v2/conversations/{cid}?verbose=true")).json()
    assert verbose["shutdown_reason"] == "end_conversation_endpoint_hit"
    kinds = [e["event_type"] for e in verbose["events"]]
    assert kinds[0] == "system.replica_joined"
    assert "conversation.replica.started_speaking" in kinds
    assert kinds[-2:] == ["system.shutdown", "application.transcription_ready"]
    await until(lambda: len(receiver.events(cid)) == 3, 10)


async def test_the_daily_room_s_timeout_ends_the_conversation_with_its_reason(daily_api):
    api, daily, receiver, _ = daily_api
    cid = (await _create(api, receiver, participant_left_timeout=1))["conversation_id"]
    await until(lambda: daily.in_room(ROOM_URL) and daily.client(ROOM_URL).joined, 20)
    client = daily.client(ROOM_URL)
    await asyncio.sleep(0.2)
    await client.person_joins("p1", "Ana")
    await asyncio.sleep(0.3)
    await client.person_leaves("p1")

    async def status() -> str:
        return (await api.get(f"/v2/conversations/{cid}")).json()["status"]

    deadline = asyncio.get_running_loop().time() + 15
    while await status() != "ended":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    verbose = (await api.get(f"/v2/conversations/{cid}?verbose=true")).json()
    assert verbose["shutdown_reason"] == "participant_left_timeout reached"
    assert client.left
    await until(lambda: "system.shutdown" in receiver.events(cid), 10)
    shutdown = next(e for e, _, _ in receiver.received if e["event_type"] == "system.shutdown")
    assert shutdown["properties"]["shutdown_reason"] == "participant_left_timeout reached"


async def test_require_auth_makes_a_private_room_and_a_participant_token_through_daily(daily_api):
    api, daily, receiver, rest = daily_api
    started = time.time()
    created = await _create(api, receiver, require_auth=True, max_call_duration=600)
    cid = created["conversation_id"]
    (room,) = rest.rooms
    assert room["privacy"] == "private", "only token holders may join"
    bot_token, participant = rest.tokens
    assert bot_token["properties"]["is_owner"] is True
    assert participant["properties"]["is_owner"] is False and participant["properties"]["room_name"] == "made-here"
    assert started + 600 < participant["properties"]["exp"] <= time.time() + 661
    # The participant's token is Daily's own, returned once and never stored.
    assert created["meeting_token"] == "participant-token-2"
    assert "meeting_token" not in (await api.get(f"/v2/conversations/{cid}")).json()
    await until(lambda: daily.in_room(ROOM_URL) and daily.client(ROOM_URL).joined, 20)
    assert daily.client(ROOM_URL).token == "bot-token"
    await api.post(f"/v2/conversations/{cid}/end")
    await until(lambda: daily.client(ROOM_URL).left, 10)
