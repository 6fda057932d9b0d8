"""With DAILY_API_KEY, a conversation is a Daily room made through Daily's REST API, which the bot joins.

Daily's REST API is a local aiohttp server and daily-python's ``CallClient``
is faked at its network seam (``tests/bot/fake_daily.py``); pipecat's
``DailyTransport`` and our handlers are real. The echo persona speaks with
the real piper voice.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from api import create_app
from bot.engines import EmbeddedModels
from tests.api.conftest import AUTH, WebhookReceiver, api_settings, serve_api
from tests.bot.fake_daily import install

pytestmark = pytest.mark.cloud

ROOM_URL = "https://acme.daily.co/made-here"


@contextlib.asynccontextmanager
async def fake_daily_rest() -> AsyncIterator[tuple[str, dict]]:
    from aiohttp import web

    seen: dict[str, list] = {"rooms": [], "tokens": []}

    async def rooms(request):
        assert request.headers["Authorization"] == "Bearer daily-key"
        seen["rooms"].append(await request.json())
        return web.json_response({
            "id": "r-1", "name": "made-here", "api_created": True, "privacy": "public",
            "url": ROOM_URL, "created_at": "2026-12-01T00:00:00.000Z", "config": {},
        })

    async def tokens(request):
        seen["tokens"].append(await request.json())
        return web.json_response({"token": "bot-token"})

    app = web.Application()
    app.router.add_post("/rooms", rooms)
    app.router.add_post("/meeting-tokens", tokens)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", seen
    finally:
        await runner.cleanup()


async def until(condition, timeout_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def daily(monkeypatch):
    return install(monkeypatch)


@pytest.fixture
async def daily_api(tmp_path, daily):
    """The API with Daily keys, its HTTP client, the fake Daily backend and a webhook receiver."""
    receiver = WebhookReceiver(failures=0)
    async with fake_daily_rest() as (rest_url, seen):
        settings = api_settings(tmp_path / "data", daily_api_key="daily-key", daily_api_url=rest_url)
        models = EmbeddedModels(settings)
        app = create_app(settings, models=models)
        try:
            async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as api:
                yield api, daily, receiver, seen
        finally:
            await models.close()
            receiver.close()


async def _create(api, receiver, **properties) -> str:
    response = await api.post(
        "/v2/conversations",
        json={"persona_id": "echo", "callback_url": receiver.url, "properties": properties},
    )
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["conversation_url"] == ROOM_URL
    return created["conversation_id"]


async def test_the_bot_joins_the_daily_room_it_made_and_the_api_ends_it(daily_api):
    api, daily, receiver, seen = daily_api
    cid = await _create(api, receiver)
    assert len(seen["rooms"]) == 1 and seen["tokens"][0]["properties"]["is_owner"] is True
    await until(lambda: daily.in_room(ROOM_URL) and daily.client(ROOM_URL).joined, 20)
    client = daily.client(ROOM_URL)
    assert client.token == "bot-token"
    await asyncio.sleep(0.2)
    await client.person_joins("p1", "Ana")
    await client.app_message(
        {"message_type": "conversation", "event_type": "conversation.echo", "properties": {"text": "Hello from Daily."}},
        "p1",
    )
    await until(lambda: "conversation.replica.stopped_speaking" in client.events_sent(), 30)

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
    cid = await _create(api, receiver, participant_left_timeout=1)
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
