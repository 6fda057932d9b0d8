"""A bot in a Daily room: whom it serves, when it starts and every way it ends.

- **Whom it serves**: the humans in the room, every remote participant that
  is not a bot (a participant whose ``userData`` says ``{"bot": true}``, the
  convention for other agents). The bot starts on the first of them, greets
  once, and stays while any is in the room; it ends
  ``participant_left_timeout`` seconds after the last one leaves.
- **Whom it listens to**: the room's mixed audio. Daily mixes every
  microphone into one stream (``audio_in_user_tracks=False``), which goes to
  one STT stream, so two people are heard as the room hears them and the
  transcript's ``role`` is ``user`` for either; per-participant tracks are
  never interleaved into one recognizer.
- **Whom it sees**: with perception on, one person's camera (and screen
  share), the first human to join, sampled at the persona's rate; when they
  leave, the next person still in the room. Several cameras are never mixed
  into one set of cues.
- **App messages** are carried out only when their sender is one of the
  people it serves; anyone else's (another bot, a REST-API message, someone
  who has left) are ignored and logged.
- **How it ends**: every path goes through ``ConversationBot.stop(reason)``,
  which records the reason and cancels the pipeline, and the pipeline's
  teardown leaves the room and ends the Tavus conversation. The reasons:
  ``participant_left_timeout reached``, ``participant_absent_timeout reached``,
  ``max_call_duration reached`` (the contract's), the call ending under the
  bot (ejected, the meeting ended, the room deleted), a refused join
  (``DailyJoinError``), SIGTERM and SIGINT.
"""

import asyncio
import signal
from dataclasses import dataclass
from typing import Any

from loguru import logger

from bot.engines import EmbeddedModels, check_persona
from bot.perception import SCREEN_FRAMERATE
from bot.pipeline import (
    KEY_REJECTED_PREFIX,
    Conversation,
    ConversationBot,
    camera_in_framerate,
    transport_media_params,
)
from bot.settings import Settings
from personas import load_persona

# The hosted contract's defaults (seconds).
PARTICIPANT_LEFT_TIMEOUT = 0.0
PARTICIPANT_ABSENT_TIMEOUT = 300.0
MAX_CALL_DURATION = 3600.0
# A join that has not finished by then failed (Daily unreachable).
JOIN_TIMEOUT_S = 15.0
# After SIGTERM/SIGINT the pipeline has this long to leave and end remote sessions.
SHUTDOWN_GRACE_S = 4.0
# A room created with --create-room, and the bot's token for it, expire after this.
CREATED_ROOM_TTL_S = 3600


class DailyJoinError(RuntimeError):
    """Daily refused the bot's join (token, room or network); the message names the cause."""


class EngineKeyRejectedError(RuntimeError):
    """A cloud engine rejected its key mid-call; the call was ended. Retrying will not help."""


@dataclass(frozen=True)
class RoomTimeouts:
    """When a call ends by itself (the contract's conversation properties), in seconds."""

    participant_left_timeout: float = PARTICIPANT_LEFT_TIMEOUT
    participant_absent_timeout: float = PARTICIPANT_ABSENT_TIMEOUT
    max_call_duration: float = MAX_CALL_DURATION


def join_error_cause(error: str) -> str:
    """A short cause for a Daily join error: token expired, room not found, network, or the error."""
    text = error.lower()
    if "expired" in text or ("token" in text and "exp" in text):
        return "token expired"
    if "token" in text:
        return "token rejected"
    if "not exist" in text or "no-room" in text or "not found" in text or "no room" in text:
        return "room not found"
    if any(word in text for word in ("network", "connect", "timeout", "timed out", "unreachable", "dns")):
        return "network"
    return "refused"


def is_bot(participant: dict[str, Any]) -> bool:
    """Whether a Daily participant says it is a bot (``userData.bot``)."""
    info = participant.get("info") or {}
    user_data = info.get("userData") or participant.get("userData")
    return isinstance(user_data, dict) and bool(user_data.get("bot"))


class DailyRoom:
    """Our handlers on one ``DailyTransport``: who is there, the timers, the one way out.

    Args:
        transport: The ``DailyTransport`` the bot's pipeline runs on.
        bot: The conversation bot (built, not yet running).
        timeouts: When the call ends by itself.
        room_url: For messages.
    """

    def __init__(self, transport, bot: ConversationBot, *, timeouts: RoomTimeouts, room_url: str):
        self._bot = bot
        self._transport = transport
        self._call_gone = False
        self._timeouts = timeouts
        self._room_url = room_url
        self.humans: set[str] = set()
        self.joined = False
        self.join_error: str | None = None
        self._served_anyone = False
        self._ending = False
        self._presence_timer: asyncio.Task | None = None
        self._duration_timer: asyncio.Task | None = None
        # The person whose camera perception samples (None: perception off, or nobody yet).
        self.watched: str | None = None
        self._arrivals: list[str] = []
        self._camera_fps = camera_in_framerate(bot.conversation.persona)

        transport.event_handler("on_joined")(self._on_joined)
        transport.event_handler("on_error")(self._on_error)
        transport.event_handler("on_call_state_updated")(self._on_call_state_updated)
        transport.event_handler("on_participant_joined")(self._on_participant_joined)
        transport.event_handler("on_participant_left")(self._on_participant_left)
        transport.event_handler("on_app_message")(self._on_app_message)

    @property
    def ending(self) -> bool:
        """Whether the bot is on its way out."""
        return self._ending

    async def end(self, reason: str) -> None:
        """The one way out: record ``reason``, stop the timers, cancel the pipeline."""
        if self._ending:
            return
        self._ending = True
        current = asyncio.current_task()
        for timer in (self._presence_timer, self._duration_timer):
            if timer is not None and timer is not current:
                timer.cancel()
        if self.joined and not self._call_gone:
            await self._send_system("system.shutdown", {"shutdown_reason": reason})
        await self._bot.stop(reason)

    async def _send_system(self, event_type: str, properties: dict[str, Any]) -> None:
        """A system event to the people in the room (``system.replica_joined``, ``system.shutdown``), in the webhook envelope."""
        from pipecat.frames.frames import OutputTransportMessageUrgentFrame

        message = {
            "message_type": "system",
            "event_type": event_type,
            "conversation_id": self._bot.conversation.conversation_id,
            "properties": properties,
        }
        try:
            await asyncio.wait_for(
                self._transport.output().send_message(OutputTransportMessageUrgentFrame(message=message)), 1.0
            )
        except (TimeoutError, ConnectionError, RuntimeError) as e:
            logger.debug(f"{self._bot}: {event_type} not sent: {e}")

    def _start_presence_timer(self, seconds: float, reason: str) -> None:
        if self._presence_timer is not None:
            self._presence_timer.cancel()
        self._presence_timer = asyncio.create_task(self._end_after(seconds, reason))

    async def _end_after(self, seconds: float, reason: str) -> None:
        await asyncio.sleep(seconds)
        await self.end(reason)

    async def _on_joined(self, _transport, data) -> None:
        self.joined = True
        logger.info(f"{self._bot}: in the room")
        # People already in the room when the bot arrives.
        for key, participant in ((data or {}).get("participants") or {}).items():
            if key != "local" and isinstance(participant, dict):
                await self._on_participant_joined(_transport, participant)
        if not self.humans:
            self._start_presence_timer(
                self._timeouts.participant_absent_timeout, "participant_absent_timeout reached"
            )
        self._duration_timer = asyncio.create_task(
            self._end_after(self._timeouts.max_call_duration, "max_call_duration reached")
        )

    async def _on_error(self, _transport, error: str) -> None:
        if not self.joined:
            self.join_error = f"Daily refused to let the bot join {self._room_url}: {join_error_cause(error)} ({error})"
            await self.end("join refused")
        else:
            logger.warning(f"{self._bot}: Daily reported: {error}")

    async def _on_call_state_updated(self, _transport, state: str) -> None:
        if state == "left" and not self._ending:
            self._call_gone = True
            await self.end("the call ended under the bot (ejected, the meeting ended or the room was deleted)")

    async def _on_participant_joined(self, _transport, participant: dict[str, Any]) -> None:
        pid = participant.get("id")
        if self._ending:
            return
        if not pid or is_bot(participant) or (participant.get("info") or {}).get("isLocal"):
            logger.info(f"{self._bot}: participant {pid} is a bot; not served")
            return
        self.humans.add(pid)
        self._arrivals.append(pid)
        await self._watch_someone()
        # Whoever joins learns the replica is there (it sent this to nobody when it joined an empty room).
        await self._send_system("system.replica_joined", {"replica_id": self._bot.conversation.persona.replica_id})
        if self._presence_timer is not None:
            self._presence_timer.cancel()
            self._presence_timer = None
        if not self._served_anyone:
            self._served_anyone = True
            logger.info(f"{self._bot}: first person joined; starting")
            await self._bot.open_remote_sessions()
            await self._bot.greet()

    async def _on_participant_left(self, _transport, participant: dict[str, Any], reason: Any = None) -> None:
        pid = participant.get("id")
        if pid not in self.humans:
            return
        self.humans.discard(pid)
        self._arrivals = [p for p in self._arrivals if p != pid]
        if pid == self.watched:
            self.watched = None
            await self._watch_someone()
        if not self.humans and not self._ending:
            seconds = self._timeouts.participant_left_timeout
            logger.info(f"{self._bot}: the last person left; ending in {seconds:g} s unless someone joins")
            self._start_presence_timer(seconds, "participant_left_timeout reached")

    async def _watch_someone(self) -> None:
        """With perception on and nobody watched, capture the camera and screen of a person in the room."""
        if self._camera_fps is None or self.watched is not None or not self.humans or self._ending:
            return
        pid = next(p for p in self._arrivals if p in self.humans)
        self.watched = pid
        logger.info(f"{self._bot}: perception watches {pid}'s camera at {self._camera_fps} fps")
        await self._transport.capture_participant_video(pid, self._camera_fps, "camera")
        await self._transport.capture_participant_video(pid, SCREEN_FRAMERATE, "screenVideo")

    async def _on_app_message(self, _transport, message: Any, sender: str) -> None:
        if sender not in self.humans:
            logger.warning(f"{self._bot}: ignored an app message from {sender!r}, who is not served here")
            return
        await self._bot.handle_client_message(message)


def build_daily_transport(persona, *, room_url: str, token: str | None):
    """A Daily transport for this persona's media (the bot joins when the pipeline starts).

    The room's audio arrives mixed (one stream for everyone): see the module
    docstring. With perception on, video in is enabled but nobody's camera is
    captured on joining: :class:`DailyRoom` captures one person's.
    """
    from pipecat.transports.daily.transport import DailyParams, DailyTransport

    params = transport_media_params(persona, video_in=False)
    if camera_in_framerate(persona) is not None:
        params["video_in_enabled"] = True
    return DailyTransport(
        room_url, token, persona.persona_name, DailyParams(audio_in_user_tracks=False, **params)
    )


async def run_daily_bot(
    transport,
    bot: ConversationBot,
    *,
    room_url: str,
    timeouts: RoomTimeouts,
    handle_signals: bool = True,
) -> str:
    """Run ``bot`` on a Daily ``transport`` until one of the ends; return the shutdown reason.

    Raises:
        DailyJoinError: the room refused the bot; the message names the cause.
    """
    room = DailyRoom(transport, bot, timeouts=timeouts, room_url=room_url)
    loop = asyncio.get_running_loop()
    run_task = asyncio.create_task(bot.run())
    signalled = asyncio.Event()

    def on_signal(name: str) -> None:
        signalled.set()
        asyncio.ensure_future(room.end(f"{name} received"))

    installed = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)

    async def join_watchdog() -> None:
        await asyncio.sleep(JOIN_TIMEOUT_S)
        if not room.joined and not room.ending:
            room.join_error = (
                f"Daily refused to let the bot join {room_url}: network "
                f"(no answer within {JOIN_TIMEOUT_S:g} s)"
            )
            await room.end("join timed out")

    async def hard_stop() -> None:
        # A pipeline stuck in teardown must not outlive the grace period.
        await signalled.wait()
        await asyncio.sleep(SHUTDOWN_GRACE_S)
        if not run_task.done():
            logger.error(f"{bot}: teardown took over {SHUTDOWN_GRACE_S:g} s; cancelling it")
            run_task.cancel()

    helpers = [asyncio.create_task(join_watchdog()), asyncio.create_task(hard_stop())]
    try:
        await run_task
    except asyncio.CancelledError:
        if not signalled.is_set():
            raise
    finally:
        for helper in helpers:
            helper.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
    if room.join_error:
        raise DailyJoinError(room.join_error)
    reason = bot.shutdown_reason or "pipeline ended"
    if reason.startswith(KEY_REJECTED_PREFIX):
        raise EngineKeyRejectedError(f"the call in {room_url} ended: {reason}")
    logger.info(f"{bot}: conversation ended: {reason}")
    return reason


@dataclass(frozen=True)
class CreatedRoom:
    """A Daily room made through Daily's REST API: its URL, the bot's owner token and,
    for a private room, the token a participant must present."""

    url: str
    bot_token: str
    participant_token: str | None = None


async def create_room(settings: Settings, *, ttl_s: int = CREATED_ROOM_TTL_S, private: bool = False) -> CreatedRoom:
    """Create a Daily room and an owner token for the bot, all expiring in ``ttl_s``.

    ``private``: only someone with a meeting token may join; a participant's
    token (not an owner) is made too.

    Raises:
        DailyJoinError: Daily could not be reached or refused; the message says which.
    """
    import time

    import aiohttp
    from pipecat.transports.daily.utils import DailyRESTHelper, DailyRoomParams, DailyRoomProperties

    key = settings.require_key("DAILY_API_KEY", persona="-", needed_by="--create-room")
    async with aiohttp.ClientSession() as session:
        helper = DailyRESTHelper(daily_api_key=key, daily_api_url=settings.daily_api_url, aiohttp_session=session)
        try:
            room = await helper.create_room(
                DailyRoomParams(
                    privacy="private" if private else "public",
                    properties=DailyRoomProperties(exp=time.time() + ttl_s, eject_at_room_exp=True),
                )
            )
            bot_token = await helper.get_token(room.url, expiry_time=ttl_s, eject_at_token_exp=True, owner=True)
            participant_token = (
                await helper.get_token(room.url, expiry_time=ttl_s, eject_at_token_exp=True, owner=False)
                if private
                else None
            )
        except aiohttp.ClientError as e:
            raise DailyJoinError(f"Daily API at {settings.daily_api_url} could not be reached: {e}") from e
        except Exception as e:  # DailyRESTHelper raises bare Exception with Daily's answer
            raise DailyJoinError(f"Daily API at {settings.daily_api_url} refused to create a room: {e}") from e
    return CreatedRoom(url=room.url, bot_token=bot_token, participant_token=participant_token)


async def _prepare_unless_signalled(models: EmbeddedModels, persona) -> bool:
    """Load the engines; SIGTERM/SIGINT meanwhile stops loading (False) so the caller closes them."""
    loop = asyncio.get_running_loop()
    prepare = asyncio.create_task(models.prepare(persona))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, prepare.cancel)
    try:
        await prepare
        return True
    except asyncio.CancelledError:
        if not prepare.cancelled():
            raise
        logger.info("signal received while the engines were loading; not joining")
        return False
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_daily_room(
    settings: Settings,
    *,
    room_url: str,
    token: str | None,
    persona_name: str,
    timeouts: RoomTimeouts = RoomTimeouts(),
) -> str:
    """Join a Daily room as a participant and serve the people in it; return the shutdown reason.

    Raises:
        DailyJoinError: the room refused the bot.
        TavusRejectedError: Tavus rejected the key, replica or persona.
    """
    persona = load_persona(persona_name)
    check_persona(persona, settings, name=persona_name)
    if persona.layers.replica.replica_engine == "tavus":
        from bot.engines import validate_tavus

        await validate_tavus(persona, settings)
    models = EmbeddedModels(settings)
    try:
        if not await _prepare_unless_signalled(models, persona):
            return "signal received before the call started"
        transport = build_daily_transport(persona, room_url=room_url, token=token)
        bot = ConversationBot(
            conversation=Conversation(persona=persona, persona_name=persona_name),
            transport=transport,
            settings=settings,
            models=models,
        )
        await bot.build()
        return await run_daily_bot(transport, bot, room_url=room_url, timeouts=timeouts)
    finally:
        await models.close()
