"""A peer that goes away ends its bot: the page's beacon, or silence when it vanishes.

Real aiortc peers on loopback against the dev room with the tone bot; the
browser's own departures (a closed tab, a crashed browser) are in
``test_devroom_browser_departures.py``.
"""

import time

import httpx
import pytest

from bench.devroom_client import DevRoomClient
from tests.bot.conftest import ToneBotSessions, wait_for

pytestmark = pytest.mark.integration


async def departures(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/api/peers")
        response.raise_for_status()
        return response.json()


async def test_leave_beacon_ends_the_bot_at_once(
    devroom_url: str, tone_bot_sessions: ToneBotSessions, logged_errors: list[str]
) -> None:
    async with DevRoomClient(devroom_url) as client:
        await client.connect()
        await client.wait_for_video()
        peers = await departures(devroom_url)
        assert [p["pc_id"] for p in peers["peers"]] == [client.pc_id]

        # What navigator.sendBeacon sends: JSON as text/plain. The peer itself stays connected.
        sent_at = time.monotonic()
        async with httpx.AsyncClient(base_url=devroom_url) as http:
            response = await http.post(
                "/api/leave", content=f'{{"pc_id": "{client.pc_id}"}}', headers={"Content-Type": "text/plain;charset=UTF-8"}
            )
        assert response.status_code == 200, response.text
        await wait_for(lambda: client.pc_id in tone_bot_sessions.finished, 2.0)
        took = time.monotonic() - sent_at
        print(f"\nbeacon to bot gone: {took:.3f} s")

        peers = await departures(devroom_url)
        assert peers["peers"] == []
        (departure,) = peers["departures"]
        assert departure["pc_id"] == client.pc_id and departure["reason"] == "pagehide beacon"
        assert 0 <= departure["bot_ended_after_s"] < 2.0
        await wait_for(lambda: client.peer_left, 2.0)  # the bot said goodbye on the way out
    assert tone_bot_sessions.errors == []
    assert logged_errors == []


async def test_leave_names_what_is_wrong(devroom_url: str) -> None:
    async with httpx.AsyncClient(base_url=devroom_url) as http:
        unknown = await http.post("/api/leave", content='{"pc_id": "nobody"}')
        missing = await http.post("/api/leave", content="{}")
        garbage = await http.post("/api/leave", content="not json")
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "pc_id"]
    assert garbage.status_code == 422


async def test_a_peer_that_vanishes_without_a_word_ends_its_bot_within_10_s(
    devroom_url: str, tone_bot_sessions: ToneBotSessions, logged_errors: list[str]
) -> None:
    async with DevRoomClient(devroom_url) as staying, DevRoomClient(devroom_url) as vanishing:
        await staying.connect()
        await vanishing.connect()
        await vanishing.wait_for_video()
        # No ping, no microphone packet; ICE still answers, so only the silence tells.
        vanished_at = time.monotonic()
        vanishing.vanish()
        await wait_for(lambda: vanishing.pc_id in tone_bot_sessions.finished, 10.0)
        took = time.monotonic() - vanished_at
        print(f"\nvanished to bot gone: {took:.3f} s")
        assert took > 2.0, "a peer that is only quiet for a moment must not count as gone"
        assert staying.pc_id not in tone_bot_sessions.finished
        (departure,) = (await departures(staying.base_url))["departures"]
        assert departure["pc_id"] == vanishing.pc_id and departure["reason"].startswith("silent for ")

        # The other call goes on.
        await staying.wait_for_video(count=len(staying.video_frames) + 5)
    await wait_for(lambda: len(tone_bot_sessions.finished) == 2, 10)
    assert tone_bot_sessions.errors == []
    assert logged_errors == []
