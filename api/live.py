"""Conversations that run in this process: a room, the bots in it, and its one teardown.

A local conversation's room is a dev room (:class:`bot.devroom.DevRoom`)
bound to it: its page is ``/conversations/{id}/`` on this server, and each
peer that connects meets a :class:`bot.pipeline.ConversationBot` built for
this conversation (persona, context, greeting). What the bot says and hears
is recorded through the store as it happens.

Every way a conversation ends goes through :meth:`LiveConversations.end`:
the end endpoint, ``max_call_duration``, ``participant_absent_timeout``,
``participant_left_timeout`` after the last peer left, the record marked
ended by another API process, and server shutdown. It stops the bots with
the reason, closes the room, records ``shutdown_reason`` and sends
``system.shutdown`` and ``application.transcription_ready``.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import OutputTransportMessageFrame, OutputTransportMessageUrgentFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from api.storage import Store
from bot.engines import EmbeddedModels
from bot.pipeline import Conversation, ConversationBot
from bot.settings import Settings
from personas.model import Persona

REASON_ENDPOINT = "end_conversation_endpoint_hit"
REASON_MAX_DURATION = "max_call_duration reached"
REASON_ABSENT = "participant_absent_timeout reached"
REASON_LEFT = "participant_left_timeout reached"
REASON_SERVER_SHUTDOWN = "server_shutdown: the API server stopped"
# A conversation's events kept in the log (interim transcripts are not).
UNLOGGED_EVENTS = {"conversation.user.started_speaking"}


class ConversationRecorder(BaseObserver):
    """Hands every app message a bot sends to its client to ``record``, once."""

    def __init__(self, record: Callable[[dict[str, Any]], None]):
        super().__init__()
        self._record = record

    async def on_push_frame(self, data: FramePushed) -> None:
        if not data.first_push or data.direction != FrameDirection.DOWNSTREAM:
            return
        frame = data.frame
        if isinstance(frame, (OutputTransportMessageUrgentFrame, OutputTransportMessageFrame)):
            if isinstance(frame.message, dict) and frame.message.get("message_type") == "conversation":
                self._record(frame.message)


@dataclass
class LiveConversation:
    """One conversation hosted here."""

    conversation_id: str
    persona: Persona
    persona_name: str
    conversational_context: str
    custom_greeting: str | None
    properties: dict[str, Any]
    meeting_token_sha256: str | None
    room: Any = None
    bots: set[ConversationBot] = field(default_factory=set)
    # Every bot that ran here, for the end-of-call perception analysis.
    bots_seen: list[ConversationBot] = field(default_factory=list)
    transports: dict[ConversationBot, Any] = field(default_factory=dict)
    peers_joined: int = 0
    timers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    records: asyncio.Queue = field(default_factory=asyncio.Queue)
    writer: asyncio.Task[None] | None = None
    ending: asyncio.Task[None] | None = None
    # enable_recording: the call's recording (bot.recording.CallRecording), None when off.
    recording: Any = None


class LiveConversations:
    """The conversations this process hosts (what a bot worker would hold).

    Args:
        settings: Process settings.
        store: Where records go.
        models: The process's shared embedded engines.
        emit: Records a system/application event and sends its webhook.
        server_id: This process, as the store knows it.
        bot_end_timeout_s: How long bots get to end before they are cancelled.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        models: EmbeddedModels,
        emit: Callable[..., Any],
        server_id: str,
        bot_end_timeout_s: float = 5.0,
    ):
        self._settings = settings
        self._store = store
        self._models = models
        self._emit = emit
        self.server_id = server_id
        self._bot_end_timeout_s = bot_end_timeout_s
        self._live: dict[str, LiveConversation] = {}
        self._prepare_lock = asyncio.Lock()
        # Recordings being made into MP4s after their calls ended.
        self._finishing: set[asyncio.Task[None]] = set()

    def get(self, conversation_id: str) -> LiveConversation | None:
        return self._live.get(conversation_id)

    @property
    def ids(self) -> list[str]:
        return list(self._live)

    async def prepare(self, persona: Persona) -> None:
        """Load the persona's engines (once per process) before its room opens."""
        async with self._prepare_lock:
            await self._models.prepare(persona)

    async def open(self, live: LiveConversation) -> None:
        """Open the room: from now on a peer that connects meets the bot."""
        from bot.devroom import DevRoom, allow_loopback_ice_candidates

        allow_loopback_ice_candidates()
        cid = live.conversation_id
        self._start_recording(live)
        live.room = DevRoom(on_connection=lambda connection: self._run_bot(live, connection), audio_jitter_prefetch=0)
        live.writer = asyncio.create_task(self._write_records(live), name=f"records-{cid}")
        self._live[cid] = live
        props = live.properties
        live.timers["max_call_duration"] = asyncio.create_task(
            self._end_after(cid, props["max_call_duration"], REASON_MAX_DURATION)
        )
        live.timers["participant_absent_timeout"] = asyncio.create_task(
            self._end_after(cid, props["participant_absent_timeout"], REASON_ABSENT)
        )
        logger.info(f"api: conversation {cid} open (persona {live.persona_name})")

    async def open_daily(self, live: LiveConversation, *, room_url: str, token: str | None) -> None:
        """The bot joins a Daily room (made through Daily's REST API) and serves the people in it.

        Daily's own handlers (``bot.daily``) keep the room's timeouts; when
        the bot's run ends, the conversation ends with the reason it gives.
        """
        from bot.daily import RoomTimeouts, build_daily_transport

        cid = live.conversation_id
        self._start_recording(live)
        transport = build_daily_transport(live.persona, room_url=room_url, token=token)
        bot = self._bot(live, transport)
        await bot.build()

        @transport.event_handler("on_joined")
        async def _in_room(_transport, *_args):
            await self._emit(cid, "system.replica_joined", "system", {"replica_id": live.persona.replica_id})

        live.writer = asyncio.create_task(self._write_records(live), name=f"records-{cid}")
        live.bots.add(bot)
        live.transports[bot] = transport
        self._live[cid] = live
        props = live.properties
        timeouts = RoomTimeouts(
            participant_left_timeout=props["participant_left_timeout"],
            participant_absent_timeout=props["participant_absent_timeout"],
            max_call_duration=props["max_call_duration"],
        )
        live.timers["daily"] = asyncio.create_task(self._run_daily(live, transport, bot, room_url, timeouts))
        logger.info(f"api: conversation {cid} in a Daily room (persona {live.persona_name})")

    async def _run_daily(self, live: LiveConversation, transport, bot: ConversationBot, room_url: str, timeouts) -> None:
        from bot.daily import DailyJoinError, EngineKeyRejectedError, run_daily_bot

        try:
            reason = await run_daily_bot(transport, bot, room_url=room_url, timeouts=timeouts, handle_signals=False)
        except (DailyJoinError, EngineKeyRejectedError) as e:
            reason = f"error: {e}"
        live.bots.discard(bot)
        live.transports.pop(bot, None)
        live.timers.pop("daily", None)
        self.end_soon(live.conversation_id, reason)

    def _start_recording(self, live: LiveConversation) -> None:
        if not live.properties.get("enable_recording"):
            return  # nothing is recorded or encoded that nobody asked for
        from bot.recording import CallRecording

        live.recording = CallRecording(
            folder=self._settings.data_dir / "recordings", name=live.conversation_id, fps=live.persona.layers.replica.fps
        )

    async def _finish_recording(self, live: LiveConversation) -> None:
        """Make the MP4 after the call, then send ``application.recording_ready`` with its path."""
        from bot.recording import RecordingError

        cid = live.conversation_id
        try:
            path = await live.recording.finish()
        except RecordingError as e:
            logger.error(f"api: conversation {cid}: no recording: {e}")
            return
        if path is None:
            logger.info(f"api: conversation {cid}: nothing to record (nobody joined)")
            return
        await self._emit(
            cid, "application.recording_ready", "application",
            {"recording_path": str(path), "duration": live.recording.duration_s},
        )

    def _bot(self, live: LiveConversation, transport, *, video_format: str = "RGB") -> ConversationBot:
        observers: list = [ConversationRecorder(live.records.put_nowait)]
        if live.recording is not None:
            from bot.recording import RecordingObserver

            observers.append(RecordingObserver(live.recording))
        bot: ConversationBot | None = None
        if live.properties.get("enable_closed_captions"):
            from bot.captions import CaptionObserver

            async def to_client(message: dict[str, Any]) -> None:
                if bot is not None:
                    await bot.send_to_client(message)

            observers.append(CaptionObserver(conversation_id=live.conversation_id, send=to_client))
        bot = ConversationBot(
            conversation=Conversation(
                persona=live.persona,
                persona_name=live.persona_name,
                conversation_id=live.conversation_id,
                conversational_context=live.conversational_context,
                custom_greeting=live.custom_greeting,
            ),
            transport=transport,
            settings=self._settings,
            models=self._models,
            extra_observers=observers,
            video_format=video_format,
        )
        return bot

    async def _end_after(self, conversation_id: str, seconds: float, reason: str) -> None:
        await asyncio.sleep(seconds)
        self.end_soon(conversation_id, reason)

    def end_soon(self, conversation_id: str, reason: str) -> None:
        """Start the teardown without waiting for it (from a timer or a bot's own task)."""
        live = self._live.get(conversation_id)
        if live is not None and live.ending is None:
            live.ending = asyncio.create_task(self._teardown(live, reason), name=f"end-{conversation_id}")

    async def end(self, conversation_id: str, reason: str) -> None:
        """End the conversation (if hosted here) and wait until it is over; the first reason wins."""
        live = self._live.get(conversation_id)
        if live is None:
            return
        self.end_soon(conversation_id, reason)
        assert live.ending is not None
        await asyncio.shield(live.ending)

    async def close(self, recordings_timeout_s: float = 60.0) -> None:
        """End every conversation hosted here (server shutdown), and finish their recordings."""
        await asyncio.gather(*(self.end(cid, REASON_SERVER_SHUTDOWN) for cid in list(self._live)))
        if self._finishing:
            _, pending = await asyncio.wait(set(self._finishing), timeout=recordings_timeout_s)
            for task in pending:
                task.cancel()  # its ffmpeg process is killed as the task ends
            await asyncio.gather(*pending, return_exceptions=True)

    # The bot for one peer ---------------------------------------------

    async def _run_bot(self, live: LiveConversation, connection) -> None:
        from pipecat.transports.base_transport import TransportParams
        from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

        from bot.perception import camera_request_for
        from bot.pipeline import transport_media_params
        from bot.rooms import attach_bot_events
        from bot.webrtc_video import send_replica_video_over

        cid = live.conversation_id
        if live.ending is not None:
            return
        video_format = send_replica_video_over(connection)  # the renderer's I420 frames, stamped by the clock
        transport = SmallWebRTCTransport(
            webrtc_connection=connection, params=TransportParams(**transport_media_params(live.persona))
        )
        camera = camera_request_for(live.persona)
        if camera is not None:
            # The page sends its camera only when asked (at perception's rate and size).
            connection.send_app_message(camera)
        bot = self._bot(live, transport, video_format=video_format)
        await bot.build()

        # Registered before the bot's own handlers, so these run first.
        @transport.event_handler("on_client_connected")
        async def _joined(_transport, *_args):
            live.peers_joined += 1
            await _send_system(transport, cid, "system.replica_joined", {"replica_id": live.persona.replica_id})
            greeting = bot.conversation.greeting
            if greeting and live.persona.pipeline_mode != "echo":
                # Spoken straight to TTS (no LLM text), so the observer never sees it as an utterance.
                live.records.put_nowait(
                    {"event_type": "conversation.utterance", "properties": {"role": "replica", "speech": greeting, "final": True}}
                )
            for name in ("participant_absent_timeout", "participant_left_timeout"):
                timer = live.timers.pop(name, None)
                if timer is not None:
                    timer.cancel()

        @transport.event_handler("on_client_disconnected")
        async def _left(_transport, *_args):
            await bot.stop("participant left")

        attach_bot_events(
            transport, bot, connected_event="on_client_connected", disconnected_event="on_client_disconnected"
        )
        live.bots.add(bot)
        live.bots_seen.append(bot)
        live.transports[bot] = transport
        try:
            await bot.run()
        finally:
            live.bots.discard(bot)
            live.transports.pop(bot, None)
            if not live.bots and live.ending is None:
                # The last peer left: the call ends unless someone joins within the timeout.
                live.timers["participant_left_timeout"] = asyncio.create_task(
                    self._end_after(cid, live.properties["participant_left_timeout"], REASON_LEFT)
                )

    # Records ------------------------------------------------------------

    async def _write_records(self, live: LiveConversation) -> None:
        cid = live.conversation_id
        while True:
            message = await live.records.get()
            try:
                await self._record(cid, message)
            except Exception:
                logger.exception(f"api: could not record an event of {cid}")
            finally:
                live.records.task_done()

    async def _record(self, conversation_id: str, message: dict[str, Any]) -> None:
        event_type = str(message.get("event_type"))
        properties = dict(message.get("properties") or {})
        if message.get("inference_id"):
            properties.setdefault("inference_id", message["inference_id"])
        if event_type == "conversation.utterance":
            if not properties.get("final"):
                return
            role = "assistant" if properties.get("role") == "replica" else "user"
            speech = str(properties.get("speech", "")).strip()
            if speech:
                await self._store.add_transcript(conversation_id, role=role, content=speech)
        if event_type in UNLOGGED_EVENTS:
            return
        await self._store.add_event(
            conversation_id, event_type=event_type, message_type="conversation", properties=properties
        )

    # The one teardown ---------------------------------------------------

    async def _teardown(self, live: LiveConversation, reason: str) -> None:
        cid = live.conversation_id
        logger.info(f"api: conversation {cid} ending: {reason}")
        daily_run = live.timers.pop("daily", None)
        for timer in live.timers.values():
            timer.cancel()
        live.timers.clear()
        # The record says ended at once (a client polling sees it while the bots leave).
        ended_here = await self._store.end_conversation(cid, reason)
        try:
            # The peers hear why before the bots leave.
            await asyncio.gather(
                *(
                    _send_system(transport, cid, "system.shutdown", {"shutdown_reason": reason})
                    for transport in list(live.transports.values())
                )
            )
            await asyncio.gather(*(bot.stop(reason) for bot in list(live.bots)), return_exceptions=True)
            if live.room is not None:
                await live.room.close()
            if daily_run is not None and daily_run is not asyncio.current_task():
                # The bot leaves the Daily room as its pipeline ends.
                try:
                    await asyncio.wait_for(asyncio.shield(daily_run), self._bot_end_timeout_s)
                except TimeoutError:
                    daily_run.cancel()
                    logger.warning(f"api: conversation {cid}: the Daily bot took too long to leave; cancelled")
            try:
                await asyncio.wait_for(live.records.join(), self._bot_end_timeout_s)
            except TimeoutError:
                logger.warning(f"api: conversation {cid}: some events were not recorded in time")
        finally:
            if live.writer is not None:
                live.writer.cancel()
            row = await self._store.get_conversation(cid)
            final_reason = row.shutdown_reason if row is not None and row.shutdown_reason else reason
            if row is not None:
                await self._emit(cid, "system.shutdown", "system", {"shutdown_reason": final_reason})
                transcript = [
                    {"role": t.role, "content": t.content} for t in await self._store.transcript(cid)
                ]
                await self._emit(cid, "application.transcription_ready", "application", {"transcript": transcript})
                for bot in live.bots_seen:
                    analysis = await bot.perception_analysis()
                    if analysis is not None:
                        await self._emit(cid, "application.perception_analysis", "application", analysis)
            if live.recording is not None:
                # Made after the call, off its path: its webhook follows when the MP4 is there.
                task = asyncio.create_task(self._finish_recording(live), name=f"recording-{cid}")
                self._finishing.add(task)
                task.add_done_callback(self._finishing.discard)
            self._live.pop(cid, None)
            logger.info(
                f"api: conversation {cid} ended ({final_reason}{'' if ended_here else '; already marked ended'})"
            )


async def _send_system(transport, conversation_id: str, event_type: str, properties: dict[str, Any]) -> None:
    """A system event to the peer on the call's data channel, in the webhook envelope."""
    message = {
        "message_type": "system",
        "event_type": event_type,
        "conversation_id": conversation_id,
        "properties": properties,
    }
    try:
        await asyncio.wait_for(transport.output().send_message(OutputTransportMessageUrgentFrame(message=message)), 1.0)
    except (TimeoutError, ConnectionError, RuntimeError) as e:
        logger.debug(f"api: {event_type} not sent to a peer of {conversation_id}: {e}")
