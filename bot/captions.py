"""Closed captions: the replica's words sent to the page as it speaks them.

The user's words already go out as they are heard (``conversation.utterance``
with ``final: false``, then the turn's final line). With captions on
(``enable_closed_captions``), the replica's reply does the same: each
sentence the voice speaks extends a ``final: false`` line for its role,
until the reply's own final line (sent by ``TurnObserver``) closes it. With
captions off this observer is not added, and nothing extra is sent.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseStartFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from bot.interactions import envelope


class CaptionObserver(BaseObserver):
    """Sends the replica's spoken text so far as ``conversation.utterance`` (``role: replica``, ``final: false``).

    Args:
        conversation_id: Goes in every event.
        send: Delivers an app message to the client.
    """

    def __init__(self, *, conversation_id: str, send: Callable[[dict[str, Any]], Awaitable[None]]):
        super().__init__()
        self._conversation_id = conversation_id
        self._send = send
        self._spoken: list[str] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if not data.first_push or data.direction != FrameDirection.DOWNSTREAM:
            return
        frame = data.frame
        if isinstance(frame, TTSTextFrame):
            # The voice's text, sentence by sentence, as it is synthesised for playback.
            text = frame.text.strip()
            if not text:
                return
            self._spoken.append(text)
            line = " ".join(self._spoken)
            await self._send(
                envelope("conversation.utterance", self._conversation_id, {"role": "replica", "speech": line, "final": False})
            )
        elif isinstance(frame, (LLMFullResponseStartFrame, InterruptionFrame)):
            self._spoken = []
        elif isinstance(frame, (OutputTransportMessageUrgentFrame, OutputTransportMessageFrame)):
            message = frame.message if isinstance(frame.message, dict) else {}
            props = message.get("properties") or {}
            if (
                message.get("event_type") == "conversation.utterance"
                and props.get("role") == "replica"
                and props.get("final")
            ):
                self._spoken = []  # the reply's final line closed it
