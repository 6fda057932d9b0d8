"""pipeline_mode="echo" end to end in the dev room: a real WebRTC peer sends
``conversation.echo`` and hears it spoken back, with the replica's face; no
STT or LLM is started, and ``conversation.respond`` is refused."""

import time

import pytest

from bench.devroom_client import DevRoomClient
from bot.engines import EmbeddedModels
from bot.rooms import dev_room_bot
from personas import load_persona
from tests.bot.conftest import serve_devroom

pytestmark = pytest.mark.integration


def conversation(event_type: str, **properties) -> dict:
    return {"message_type": "conversation", "event_type": event_type, "type": event_type, "properties": properties}


async def test_echo_persona_speaks_what_the_client_sends_and_nothing_else(settings):
    models = EmbeddedModels(settings)
    await models.prepare(load_persona("echo"))
    try:
        async with serve_devroom(dev_room_bot(settings, models, persona_name="echo")) as url:
            async with DevRoomClient(url) as client:
                await client.connect()
                await client.wait_for_video(count=5, timeout_s=30)
                # No greeting and no answer to anything but echo.
                asked_at = time.monotonic()
                client.send_app_message(conversation("conversation.respond", text="What time is it?"))
                with pytest.raises(TimeoutError):
                    await client.wait_for_audio(after=asked_at, timeout_s=2.0)

                sent_at = time.monotonic()
                client.send_app_message(conversation("conversation.echo", text="Hello from the echo test."))
                heard_at = await client.wait_for_audio(after=sent_at, timeout_s=40)
                await client.wait_for_message("conversation.replica.started_speaking", after=sent_at, timeout_s=10)
                print(f"\necho heard {(heard_at - sent_at) * 1000:.0f} ms after it was sent")
        with pytest.raises(RuntimeError):
            models.llm_base_url  # the LLM was never started
    finally:
        await models.close()
