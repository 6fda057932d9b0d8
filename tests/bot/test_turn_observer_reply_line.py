"""The replica's line in the transcript: once per reply, whole, however the voice paused.

The bot's own ``TurnObserver`` is fed the frames a reply pushes through the
pipeline, in the order a loaded machine produces them: the voice stops
between two sentences while the LLM is still writing (a
``BotStoppedSpeakingFrame`` mid-reply), and a reply the user cuts short.
"""

import itertools

import pytest

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.interactions import TurnObserver

pytestmark = pytest.mark.unit

_clock = itertools.count(1)


async def push(observer: TurnObserver, *frames) -> None:
    source, destination = FrameProcessor(), FrameProcessor()
    for frame in frames:
        await observer.on_push_frame(
            FramePushed(source, destination, frame, FrameDirection.DOWNSTREAM, timestamp=next(_clock) * 10**8)
        )


def replica_lines(events: list[dict]) -> list[str]:
    return [
        e["properties"]["speech"]
        for e in events
        if e["event_type"] == "conversation.utterance" and e["properties"]["role"] == "replica"
    ]


async def observed() -> tuple[TurnObserver, list[dict]]:
    events: list[dict] = []

    async def send(message: dict) -> None:
        events.append(message)

    return TurnObserver(conversation_id="c1", send=send), events


async def test_a_pause_inside_a_reply_does_not_split_or_repeat_its_line():
    observer, events = await observed()
    await push(
        observer,
        LLMFullResponseStartFrame(),
        LLMTextFrame("Take tram 28 up to the castle. "),
        BotStartedSpeakingFrame(),
        BotStoppedSpeakingFrame(),  # the voice waits for the next sentence
        LLMTextFrame("Then watch the sunset from a miradouro."),
        LLMFullResponseEndFrame(),
        BotStartedSpeakingFrame(),
        BotStoppedSpeakingFrame(),
    )
    assert replica_lines(events) == [
        "Take tram 28 up to the castle. Then watch the sunset from a miradouro."
    ]
    # The voice's own stops are all still reported.
    assert sum(e["event_type"] == "conversation.replica.stopped_speaking" for e in events) == 2


async def test_a_reply_cut_short_is_shown_once_and_the_next_reply_gets_its_own_line():
    observer, events = await observed()
    await push(
        observer,
        LLMFullResponseStartFrame(),
        LLMTextFrame("Lisbon has seven hills, and "),
        BotStartedSpeakingFrame(),
        InterruptionFrame(),
        BotStoppedSpeakingFrame(),
        LLMFullResponseStartFrame(),
        LLMTextFrame("Sure, the castle it is."),
        LLMFullResponseEndFrame(),
        BotStartedSpeakingFrame(),
        BotStoppedSpeakingFrame(),
    )
    assert replica_lines(events) == ["Lisbon has seven hills, and", "Sure, the castle it is."]


async def test_the_greeting_gets_its_line_and_the_first_reply_its_own():
    from pipecat.frames.frames import TTSSpeakFrame

    observer, events = await observed()
    await push(
        observer,
        TTSSpeakFrame("Hi, I'm Ava, your Lisbon guide."),
        BotStartedSpeakingFrame(),
        BotStoppedSpeakingFrame(),
        LLMFullResponseStartFrame(),
        LLMTextFrame("Try the custard tarts in Belem."),
        LLMFullResponseEndFrame(),
        BotStartedSpeakingFrame(),
        BotStoppedSpeakingFrame(),
    )
    assert replica_lines(events) == ["Hi, I'm Ava, your Lisbon guide.", "Try the custard tarts in Belem."]


async def test_a_reply_whose_end_is_never_seen_still_gets_its_line_once_the_voice_stops(monkeypatch):
    """As in the browser bench: no LLMFullResponseEndFrame reached the observer, so the line waited for the next reply."""
    import asyncio

    import bot.interactions

    monkeypatch.setattr(bot.interactions, "REPLY_LINE_WAIT_S", 0.05)
    observer, events = await observed()
    await push(
        observer,
        LLMFullResponseStartFrame(),
        LLMTextFrame("You can watch it from a miradouro."),
        BotStartedSpeakingFrame(),
        BotStoppedSpeakingFrame(),
    )
    assert replica_lines(events) == []  # it may still go on
    await asyncio.sleep(0.2)
    assert replica_lines(events) == ["You can watch it from a miradouro."]


async def test_the_reply_recorded_for_a_turn_is_all_that_the_shaper_lets_the_voice_say():
    """The LLM's end frame is seen first on its way into the shaper, which still holds the reply's last words.

    Seen in ``talk --json``: the reply came out as "He might have been made
    amiable" while the voice went on to say the whole sentence.
    """
    from pipecat.frames.frames import TranscriptionFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame
    from pipecat.tests.utils import run_test

    from processors.llm.spoken_reply import SpokenReplyProcessor

    from pipecat.pipeline.pipeline import Pipeline

    words = "He might have been made amiable himself. It's important to be kind."

    class LLMStandIn(FrameProcessor):
        """Answers the end of the user's turn as the LLM does: the reply's frames are first pushed into the shaper."""

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)
            if isinstance(frame, UserStoppedSpeakingFrame):
                await self.push_frame(LLMFullResponseStartFrame())
                for word in words.split():
                    await self.push_frame(LLMTextFrame(word + " "))
                await self.push_frame(LLMFullResponseEndFrame())

    observer, events = await observed()
    spoken = Pipeline([LLMStandIn(), SpokenReplyProcessor(persona_name="Ava", max_tokens=90)])
    down, _ = await run_test(
        spoken,
        frames_to_send=[
            UserStartedSpeakingFrame(),
            TranscriptionFrame("Was he amiable?", "user", "now"),
            UserStoppedSpeakingFrame(),
        ],
        observers=[observer],
    )
    said = "".join(f.text for f in down if isinstance(f, LLMTextFrame))
    assert said.strip() == words
    assert [t.reply for t in observer.turns] == [words]
