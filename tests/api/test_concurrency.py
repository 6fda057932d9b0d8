"""Many conversations at once over real HTTP: created and ended concurrently, nothing lost, no cross-talk."""

import asyncio

import httpx
import pytest

from api import create_app
from tests.api.conftest import AUTH, NoEngines, WebhookReceiver, serve_api

pytestmark = pytest.mark.unit

N = 20


async def test_twenty_conversations_created_and_ended_at_once(make_settings):
    receiver = WebhookReceiver(failures=1)
    settings = make_settings()
    app = create_app(settings, models=NoEngines(settings))
    try:
        async with serve_api(app) as base, httpx.AsyncClient(base_url=base, headers=AUTH, timeout=60) as api:

            async def create(i: int) -> dict:
                response = await api.post(
                    "/v2/conversations",
                    json={
                        "persona_id": "max" if i % 3 else "ava",
                        "conversation_name": f"call {i}",
                        "custom_greeting": f"greeting {i}",
                        "callback_url": receiver.url,
                        "test_mode": i % 2 == 0,
                    },
                )
                assert response.status_code == 200, response.text
                return response.json()

            created = await asyncio.gather(*(create(i) for i in range(N)))
            by_name = {c["conversation_name"]: c for c in created}
            assert len({c["conversation_id"] for c in created}) == N
            real = [c["conversation_id"] for c in created if not c["test_mode"]]
            assert len(real) == N // 2
            assert (await api.get("/v2/conversations?status=active&limit=100")).json()["total_count"] == N // 2

            ended = await asyncio.gather(*(api.post(f"/v2/conversations/{c['conversation_id']}/end") for c in created))
            assert all(r.status_code == 200 and r.json()["status"] == "ended" for r in ended)
            listed = (await api.get("/v2/conversations?limit=100")).json()
            assert listed["total_count"] == N and len(listed["data"]) == N
            assert all(c["status"] == "ended" for c in listed["data"])

            for i in range(N):
                c = by_name[f"call {i}"]
                got = (await api.get(f"/v2/conversations/{c['conversation_id']}?verbose=true")).json()
                assert got["custom_greeting"] == f"greeting {i}"
                assert got["persona_id"] == ("max" if i % 3 else "ava")
                events = [e["event_type"] for e in got["events"]]
                if c["test_mode"]:
                    assert events == [] and got["shutdown_reason"].startswith("test_mode")
                else:
                    assert events == ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
                    assert got["shutdown_reason"] == "end_conversation_endpoint_hit"
                    assert all(e["conversation_id"] == c["conversation_id"] for e in got["events"])
            assert app.state.live.ids == []
        # Every real conversation's three webhooks arrived (after one failed try each), none for test_mode.
        for cid in real:
            assert sorted(receiver.events(cid)) == sorted(
                ["system.replica_joined", "system.shutdown", "application.transcription_ready"]
            ), cid
        assert len(receiver.received) == 3 * len(real)
    finally:
        receiver.close()
