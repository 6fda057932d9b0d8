"""Where a bot meets people: the local dev room (Daily rooms: ``bot/daily.py``)."""

import re
import time
from contextlib import asynccontextmanager
from urllib.parse import urlparse

from loguru import logger
from pipecat.transports.base_transport import TransportParams

from bot.engines import EmbeddedModels, check_persona
from bot.pipeline import Conversation, ConversationBot, transport_media_params
from bot.settings import Settings
from personas import load_persona

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class RoomUrlError(ValueError):
    """A Daily room URL that cannot be right; the message says what is allowed."""


def validate_room_url(url: str) -> str:
    """Check ``url`` looks like ``https://<domain>.daily.co/<room>`` (any https host).

    Raises:
        RoomUrlError: naming the value and what is expected.
    """
    expected = "expected https://<your-domain>.daily.co/<room-name>"
    parsed = urlparse(url.strip())
    if parsed.scheme != "https":
        raise RoomUrlError(f"--room-url {url!r}: scheme must be https; {expected}")
    if not parsed.hostname or "." not in parsed.hostname:
        raise RoomUrlError(f"--room-url {url!r}: missing or invalid host; {expected}")
    room = parsed.path.strip("/")
    if not ROOM_NAME.match(room):
        raise RoomUrlError(f"--room-url {url!r}: missing or invalid room name {room!r}; {expected}")
    if parsed.query or parsed.fragment:
        raise RoomUrlError(f"--room-url {url!r}: no query or fragment allowed (pass --token separately); {expected}")
    return url.strip()


def attach_bot_events(transport, bot: ConversationBot, *, connected_event: str, disconnected_event: str) -> None:
    """Greet on join, end the pipeline when the peer leaves, route app messages."""

    @transport.event_handler(connected_event)
    async def _on_connected(transport, *args):
        await bot.greet()

    @transport.event_handler(disconnected_event)
    async def _on_disconnected(transport, *args):
        logger.info(f"{bot}: peer left; ending the conversation")
        await bot.stop()

    @transport.event_handler("on_app_message")
    async def _on_app_message(transport, message, *args):
        await bot.handle_client_message(message)


async def run_conversation(
    transport,
    *,
    persona,
    persona_name: str,
    settings: Settings,
    models: EmbeddedModels,
    connected_event: str,
    disconnected_event: str,
    video_format: str = "RGB",
) -> None:
    """One conversation bot on ``transport``, until its peer leaves (``video_format``: see ``ConversationBot``)."""
    bot = ConversationBot(
        conversation=Conversation(persona=persona, persona_name=persona_name),
        transport=transport,
        settings=settings,
        models=models,
        video_format=video_format,
    )
    await bot.build()
    attach_bot_events(transport, bot, connected_event=connected_event, disconnected_event=disconnected_event)
    await bot.run()


def dev_room_bot(settings: Settings, models: EmbeddedModels, *, persona_name: str):
    """The dev room's ``on_connection``: one conversation bot per peer that joins."""
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    from bot.perception import camera_request_for
    from bot.webrtc_video import send_replica_video_over

    persona = load_persona(persona_name)
    check_persona(persona, settings, name=persona_name)

    async def on_connection(connection) -> None:
        video_format = send_replica_video_over(connection)  # the renderer's I420 frames, stamped by the clock
        transport = SmallWebRTCTransport(
            webrtc_connection=connection, params=TransportParams(**transport_media_params(persona))
        )

        request = camera_request_for(persona)
        if request is not None:
            # The page sends no camera until asked, and then at the rate and size perception wants.
            connection.send_app_message(request)
        await run_conversation(
            transport,
            persona=persona,
            persona_name=persona_name,
            settings=settings,
            models=models,
            connected_event="on_client_connected",
            disconnected_event="on_client_disconnected",
            video_format=video_format,
        )

    return on_connection


def create_dev_room(
    settings: Settings,
    *,
    persona_name: str,
    started_at: float | None = None,
    models: EmbeddedModels | None = None,
):
    """The dev room app: our page, signalling, and one bot per browser that joins.

    The app's lifespan prepares ``models`` (already prepared ones cost nothing
    more) and closes them on shutdown.
    """
    from bot.devroom import PageConfigPublic, create_devroom_app

    persona = load_persona(persona_name)
    models = models or EmbeddedModels(settings)
    on_connection = dev_room_bot(settings, models, persona_name=persona_name)
    app = create_devroom_app(
        on_connection=on_connection,
        page_config=PageConfigPublic(persona=persona_name, pipeline_mode=persona.pipeline_mode),
    )

    @asynccontextmanager
    async def lifespan(app_):
        await models.prepare(persona)
        took = time.monotonic() - started_at if started_at is not None else None
        logger.info(
            "Dev room ready: persona {} {}".format(persona_name, f"in {took:.1f} s" if took is not None else "")
        )
        try:
            async with original_lifespan(app_):
                yield
        finally:
            await models.close()

    original_lifespan = app.router.lifespan_context
    app.router.lifespan_context = lifespan
    return app


# Daily rooms: see bot/daily.py.
