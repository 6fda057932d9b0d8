"""Tavus renders the face: pipecat's Tavus video service, opened only when someone is there.

pipecat's ``TavusVideoService`` creates its (paid) Tavus conversation when the
pipeline is set up, before anyone has joined the room, and swallows a
rejected key. This one creates it on ``open_conversation()`` (the bot calls
it when the first person joins), speaks to the Tavus API at ``api_base_url``,
reports a conversation that cannot be created as a fatal error, and ends it
on every exit (stop, cancel, cleanup).
"""

import aiohttp
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, StartFrame
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.services.ai_service import AIService
from pipecat.services.tavus.video import TavusVideoService
from pipecat.transports.tavus.transport import (
    TavusApi,
    TavusCallbacks,
    TavusParams,
    TavusTransportClient,
)

TAVUS_API_BASE_URL = "https://tavusapi.com"


class TavusApiAt(TavusApi):
    """``TavusApi`` speaking to ``base_url`` (the hosted API, a test server, a compatible one)."""

    def __init__(self, api_key: str, session: aiohttp.ClientSession, *, base_url: str):
        super().__init__(api_key, session)
        self.BASE_URL = f"{base_url.rstrip('/')}/v2"


class OnDemandTavusVideoService(TavusVideoService):
    """``TavusVideoService`` whose conversation exists only between ``open_conversation()`` and the end.

    Args:
        api_base_url: The Tavus API's base URL (``/v2/...`` is appended).
        **kwargs: As ``TavusVideoService``.
    """

    def __init__(self, *, api_base_url: str = TAVUS_API_BASE_URL, **kwargs):
        super().__init__(**kwargs)
        self._api_base_url = api_base_url
        self._setup: FrameProcessorSetup | None = None
        self._started = False
        self._closed = False

    @property
    def conversation_id(self) -> str | None:
        """The live Tavus conversation, if one is open."""
        return self._client.conversation_id if self._client else None

    async def setup(self, setup: FrameProcessorSetup):
        """Keep the setup for later: nothing is created with Tavus yet."""
        await AIService.setup(self, setup)
        self._setup = setup

    async def open_conversation(self) -> None:
        """Create the Tavus conversation and join its room (once; no-op after the end)."""
        if self._client is not None or self._closed or self._setup is None:
            return
        callbacks = TavusCallbacks(
            on_joined=self._on_joined,
            on_participant_joined=self._on_participant_joined,
            on_participant_left=self._on_participant_left,
        )
        client = TavusTransportClient(
            bot_name="Pipecat",
            callbacks=callbacks,
            api_key=self._api_key,
            replica_id=self._replica_id,
            persona_id=self._persona_id,
            session=self._session,
            params=TavusParams(
                audio_in_enabled=True,
                video_in_enabled=True,
                audio_out_faster_than_realtime=True,
                initial_receive_bitrate=self._initial_receive_bitrate,
            ),
        )
        # The client builds its own TavusApi on the hosted URL; point it at ours.
        api = TavusApiAt(self._api_key, self._session, base_url=self._api_base_url)
        client._api = api
        self._client = client
        await client.setup(self._setup)
        if self._closed and client.conversation_id is not None:
            # The call ended while the conversation was being created.
            await api.end_conversation(client.conversation_id)
            return
        if client.conversation_id is None:
            # TavusTransportClient logs and swallows the failure; it is fatal here.
            self._client = None
            await self.push_error(f"{self}: Tavus did not create a conversation", force_treat_as_permanent=True)
            return
        logger.info(f"{self}: Tavus conversation {client.conversation_id} created")
        await client.join()
        if self._started:
            await client.start_send_task()

    async def start(self, frame: StartFrame):
        """Start; the conversation opens later."""
        await super().start(frame)
        self._started = True

    async def stop(self, frame: EndFrame):
        """End the Tavus conversation."""
        self._closed = True
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame):
        """End the Tavus conversation."""
        self._closed = True
        await super().cancel(frame)

    async def cleanup(self):
        """End the Tavus conversation if still open, and release the client."""
        self._closed = True
        await super().cleanup()
