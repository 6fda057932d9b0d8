"""The interactions protocol: events to the client, commands from it, turn timing.

Events go out as app messages on the call's data channel with the contract's
envelope ``{"message_type": "conversation", "event_type": ...,
"conversation_id": ..., "inference_id": ..., "properties": {...}}``.
``TurnObserver`` also measures every stage of every turn, from the end of the
user's speech, and keeps the figures for ``talk --json`` and the benchmarks.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    InterruptionWorkerFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    LLMUpdateSettingsFrame,
    OutputImageRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import LLMSettings

from processors.llm.spoken_reply import ReplyRewriter

STAGES = (
    "end_of_turn",
    "transcript",
    "llm_first_token",
    "llm_first_sentence",
    "tts_first_audio",
    "first_frame",
    "total",
)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def envelope(event_type: str, conversation_id: str, properties: dict[str, Any], inference_id: str | None = None) -> dict[str, Any]:
    """One app message in the contract's envelope."""
    message: dict[str, Any] = {
        "message_type": "conversation",
        "event_type": event_type,
        "conversation_id": conversation_id,
        "properties": properties,
    }
    if inference_id:
        message["inference_id"] = inference_id
    return message


@dataclass
class TurnTimings:
    """Milliseconds from the end of the user's speech to each stage of one reply."""

    inference_id: str
    speech_end: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    reply: str = ""
    reported: bool = False

    def mark(self, stage: str, at: float) -> None:
        """Record ``stage`` once, at ``at`` (seconds on the pipeline clock)."""
        self.marks.setdefault(stage, at)

    def timings_ms(self) -> dict[str, float | None]:
        """Each stage in ms after the user stopped speaking (None if not reached)."""
        origin = self.speech_end
        if origin is None:
            origin = self.marks.get("end_of_turn")
        out: dict[str, float | None] = {}
        for stage in STAGES:
            at = self.marks.get(stage)
            out[stage] = None if at is None or origin is None else round((at - origin) * 1000, 1)
        return out


# How long the replica may pause inside a reply whose end was not seen (an
# LLM error, say) before its line is sent anyway. On two busy cores the next
# sentence can take over 1.5 s: a shorter wait split one reply into two lines.
REPLY_LINE_WAIT_S = 5.0


class TurnObserver(BaseObserver):
    """Turns pipeline frames into contract events and per-stage turn timings.

    Args:
        conversation_id: Goes in every event.
        send: Coroutine that delivers an app message to the client (None: no client).
        on_turn_complete: Called with each finished turn's ``TurnTimings``.
    """

    def __init__(
        self,
        *,
        conversation_id: str,
        send: Send | None = None,
        on_turn_complete: Callable[[TurnTimings], None] | None = None,
    ):
        super().__init__()
        self._conversation_id = conversation_id
        self._send = send
        self._on_turn_complete = on_turn_complete
        self.turns: list[TurnTimings] = []
        self._turn: TurnTimings | None = None
        self._speech_end: float | None = None
        self._user_text: list[str] = []
        self._transcript_at: float | None = None
        self._reply_text: list[str] = []
        # The replica's line is sent once per reply: when it stops speaking
        # with the reply complete, or cut short by the user.
        self._reply_complete = False
        self._reply_interrupted = False
        self._pending_line: asyncio.Task | None = None
        self._bot_started_at: float | None = None
        self._bot_speaking = False
        self._shows_video = False

    @property
    def inference_id(self) -> str | None:
        """The id of the reply being made now (the user turn that asked for it)."""
        return self._turn.inference_id if self._turn is not None else None

    async def _emit(self, event_type: str, properties: dict[str, Any], inference_id: str | None = None):
        if self._send is None:
            return
        await self._send(envelope(event_type, self._conversation_id, properties, inference_id))

    async def _emit_latency(self, turn: TurnTimings) -> None:
        if turn.reported:
            return
        turn.reported = True
        await self._emit(
            "conversation.latency",
            {"inference_id": turn.inference_id, "timings_ms": turn.timings_ms()},
            turn.inference_id,
        )

    def _cancel_pending_line(self) -> None:
        if self._pending_line is not None and not self._pending_line.done():
            self._pending_line.cancel()
        self._pending_line = None

    async def _emit_reply_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._emit_reply()

    async def _emit_reply(self) -> None:
        """Send the replica's line for the reply so far, once."""
        reply = "".join(self._reply_text).strip()
        self._reply_text = []
        if not reply:
            return
        logger.debug(f"{self}: replica said [{reply}]")
        await self._emit(
            "conversation.utterance", {"role": "replica", "speech": reply, "final": True},
            self._turn.inference_id if self._turn else None,
        )

    def _new_turn(self) -> TurnTimings:
        turn = TurnTimings(inference_id=uuid.uuid4().hex[:12], speech_end=self._speech_end)
        # The final transcript usually arrives before the turn is decided.
        turn.transcript = " ".join(t for t in self._user_text if t)
        if self._transcript_at is not None:
            turn.mark("transcript", self._transcript_at)
        self._turn = turn
        self.turns.append(turn)
        return turn

    async def on_push_frame(self, data: FramePushed):
        """Watch each frame once, at its first push downstream.

        Broadcast frames (speaking events) travel both ways as two frames;
        only the downstream one counts.
        """
        if not data.first_push or data.direction != FrameDirection.DOWNSTREAM:
            return
        frame = data.frame
        # Observers run from a queue: time the push itself (pipeline clock), not now.
        now = data.timestamp / 1e9
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            # The VAD confirms silence stop_secs after the last voiced audio.
            self._speech_end = now - frame.stop_secs
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_text = []
            self._transcript_at = None
            self._speech_end = None
            await self._emit("conversation.user.started_speaking", {})
        elif isinstance(frame, UserStoppedSpeakingFrame):
            turn = self._new_turn()
            turn.mark("end_of_turn", now)
            self._user_text = []
            self._transcript_at = None
            if turn.transcript:
                # One line per user turn, however many pauses it had.
                logger.debug(f"{self}: user said [{turn.transcript}]")
                await self._emit(
                    "conversation.utterance", {"role": "user", "speech": turn.transcript, "final": True},
                    turn.inference_id,
                )
            await self._emit("conversation.user.stopped_speaking", {}, turn.inference_id)
        elif isinstance(frame, InterimTranscriptionFrame):
            await self._emit(
                "conversation.utterance",
                {"role": "user", "speech": frame.text, "final": False},
            )
        elif isinstance(frame, TranscriptionFrame):
            # The words so far; the turn may go on after a pause, so the line
            # stays open (final=False) until the turn ends.
            self._user_text.append(frame.text.strip())
            self._transcript_at = now
            text = " ".join(t for t in self._user_text if t)
            await self._emit("conversation.utterance", {"role": "user", "speech": text, "final": False})
        elif isinstance(frame, TTSSpeakFrame):
            # Words said as given (the greeting, conversation.echo): a line of their own.
            await self._emit_reply()
            self._reply_text = [frame.text]
            self._reply_complete = True
            self._reply_interrupted = False
        elif isinstance(frame, LLMFullResponseStartFrame):
            if self._turn is None or "llm_first_token" in self._turn.marks:
                self._new_turn()
            await self._emit_reply()  # a reply cut short and never followed by a stop
            self._reply_complete = False
            self._reply_interrupted = False
        elif isinstance(frame, LLMTextFrame):
            if self._turn is not None:
                self._turn.mark("llm_first_token", now)
            # The LLM's raw words on their way to be shaped are not what the
            # replica says: the shaped text (new frames) is counted instead.
            if not isinstance(data.destination, ReplyRewriter):
                self._reply_text.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            if isinstance(data.destination, ReplyRewriter):
                return  # the shaper still holds the last words: it pushes its own end after them
            self._reply_complete = True
            if self._turn is not None:
                self._turn.reply = "".join(self._reply_text).strip()
        elif isinstance(frame, TTSStartedFrame):
            if self._turn is not None:
                self._turn.mark("llm_first_sentence", now)
        elif isinstance(frame, TTSAudioRawFrame):
            if self._turn is not None:
                self._turn.mark("tts_first_audio", now)
        elif isinstance(frame, OutputImageRawFrame):
            # The renderer tags each frame; the first one showing speech is the
            # replica's first visible syllable of this reply.
            self._shows_video = True
            turn = self._turn
            if (
                turn is not None
                and "tts_first_audio" in turn.marks
                and "first_frame" not in turn.marks
                and frame.metadata.get("replica_speaking")
            ):
                turn.mark("first_frame", now)
                if "total" in turn.marks:
                    await self._emit_latency(turn)
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._cancel_pending_line()
            self._bot_speaking = True
            self._bot_started_at = now
            turn = self._turn
            await self._emit(
                "conversation.replica.started_speaking", {}, turn.inference_id if turn else None
            )
            if turn is not None and "total" not in turn.marks:
                turn.mark("total", now)
                if not self._shows_video or "first_frame" in turn.marks:
                    await self._emit_latency(turn)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            turn = self._turn
            duration = None if self._bot_started_at is None else round(now - self._bot_started_at, 3)
            inference_id = turn.inference_id if turn else None
            await self._emit("conversation.replica.stopped_speaking", {"duration": duration}, inference_id)
            # A pause inside a reply (the voice waiting on the next sentence)
            # is not its end: the line waits for the whole reply.
            if self._reply_complete or self._reply_interrupted:
                await self._emit_reply()
            else:
                # The reply's end was not seen (it may still be written): if
                # the voice does not go on soon, the line is sent as it stands.
                self._cancel_pending_line()
                self._pending_line = asyncio.create_task(self._emit_reply_after(REPLY_LINE_WAIT_S))
            if turn is not None and "total" in turn.marks and not turn.reported:
                await self._emit_latency(turn)  # the face never showed speech
            if turn is not None and self._on_turn_complete is not None:
                self._on_turn_complete(turn)
        elif isinstance(frame, InterruptionFrame) and self._bot_speaking:
            self._reply_interrupted = True
            await self._emit(
                "conversation.replica_interrupted", {}, self._turn.inference_id if self._turn else None
            )


class UnknownClientEvent(ValueError):
    """A client message the protocol does not define; names the allowed events."""


CLIENT_EVENTS = (
    "conversation.echo",
    "conversation.respond",
    "conversation.interrupt",
    "conversation.overwrite_llm_context",
    "conversation.append_llm_context",
    "conversation.sensitivity",
)


CONTEXT_EVENTS = ("conversation.append_llm_context", "conversation.overwrite_llm_context")


def updated_context(message: dict[str, Any], current: str) -> str:
    """The call's conversational context after an append/overwrite message.

    Raises:
        ValueError: ``properties.context`` is missing or empty.
    """
    context = (message.get("properties") or {}).get("context")
    if not isinstance(context, str) or not context.strip():
        raise ValueError(f"{message.get('event_type')}: properties.context must be a non-empty string, got {context!r}")
    if message.get("event_type") == "conversation.append_llm_context" and current.strip():
        return f"{current.strip()}\n{context.strip()}"
    return context.strip()


SENSITIVITY_LEVELS = ("low", "medium", "high")
SENSITIVITY_KEYS = ("participant_pause_sensitivity", "participant_interrupt_sensitivity")


def updated_sensitivity(message: dict[str, Any], current: dict[str, str]) -> dict[str, str]:
    """The turn-taking sensitivities after a ``conversation.sensitivity`` message.

    ``current`` and the result map each of ``SENSITIVITY_KEYS`` to ``low``/``medium``/``high``;
    the message sets one or both.

    Raises:
        ValueError: an unknown key, a value not allowed, or nothing set; the message names it.
    """
    props = message.get("properties") or {}
    if not isinstance(props, dict):
        raise ValueError("conversation.sensitivity: properties must be an object")
    unknown = sorted(str(k) for k in props if k not in SENSITIVITY_KEYS)
    if unknown:
        raise ValueError(
            f"conversation.sensitivity: unknown properties {', '.join(unknown)}; allowed: {', '.join(SENSITIVITY_KEYS)}"
        )
    if not props:
        raise ValueError(f"conversation.sensitivity: properties must set {' and/or '.join(SENSITIVITY_KEYS)}")
    for key, value in props.items():
        if value not in SENSITIVITY_LEVELS:
            raise ValueError(
                f"conversation.sensitivity: properties.{key} must be one of {', '.join(SENSITIVITY_LEVELS)}; got {value!r}"
            )
    return {**current, **props}


def system_instruction_frame(instruction: str) -> LLMUpdateSettingsFrame:
    """Change the LLM's system instruction from the next reply on."""
    return LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction=instruction))


def client_message_frames(message: Any) -> list:
    """The frames that carry out one client → replica app message (context events aside).

    Raises:
        UnknownClientEvent: not a conversation message, or an event we do not define.
        ValueError: a required property is missing; the message names it.
    """
    if not isinstance(message, dict) or message.get("message_type") != "conversation":
        raise UnknownClientEvent("app message must have message_type 'conversation'")
    event = message.get("event_type")
    props = message.get("properties") or {}
    if not isinstance(props, dict):
        raise ValueError("properties must be an object")

    def text(key: str) -> str:
        value = props.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{event}: properties.{key} must be a non-empty string, got {value!r}")
        return value

    if event == "conversation.echo":
        return [TTSSpeakFrame(text("text"))]
    if event == "conversation.respond":
        # InterruptionFrame, not InterruptionWorkerFrame: the worker frame makes a
        # round trip through the pipeline and, on a busy machine, lands after the
        # LLM has started on this message, cancelling the reply it asked for.
        return [
            InterruptionFrame(),
            LLMMessagesAppendFrame(messages=[{"role": "user", "content": text("text")}], run_llm=True),
        ]
    if event == "conversation.interrupt":
        return [InterruptionWorkerFrame()]
    raise UnknownClientEvent(f"event_type {event!r} is not supported; allowed: {', '.join(CLIENT_EVENTS)}")
