"""A finished transcript overrules a hesitant end-of-turn model, and only then;
a transcript that exists before the turn ends starts the reply early."""

import asyncio
import time

import pytest
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, BaseTurnParams, EndOfTurnState
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_start import MinWordsUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from processors.turn.transcript_aware_stop import TranscriptAwareTurnStopStrategy

pytestmark = pytest.mark.unit


class HesitantTurnAnalyzer(BaseTurnAnalyzer):
    """Stands in for Smart Turn calling every utterance unfinished (its silence budget: 3 s)."""

    def __init__(self):
        super().__init__(sample_rate=16000)
        self._params = BaseTurnParams()

    @property
    def speech_triggered(self) -> bool:
        return True

    @property
    def params(self):
        return self._params

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        return EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self):
        return EndOfTurnState.INCOMPLETE, None

    def update_vad_start_secs(self, vad_start_secs: float):
        pass

    def clear(self):
        pass


async def user_turn(text: str, *, resume: bool = False) -> tuple[list, float]:
    strategy = TranscriptAwareTurnStopStrategy(turn_analyzer=HesitantTurnAnalyzer(), grace_secs=0.2)
    pair = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(start=[VADUserTurnStartStrategy()], stop=[strategy]),
            user_turn_stop_timeout=3.0,
        ),
    )
    frames = [
        VADUserStartedSpeakingFrame(start_secs=0.2),
        SleepFrame(0.3),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
        TranscriptionFrame(text, "user", "now", finalized=True),
        SleepFrame(0.1),
    ]
    if resume:
        frames += [VADUserStartedSpeakingFrame(start_secs=0.2)]
    frames += [SleepFrame(0.6)]
    started = time.monotonic()
    down, up = await run_test(pair.user(), frames_to_send=frames)
    return [f for f in [*down, *up] if isinstance(f, UserStoppedSpeakingFrame)], started


async def test_finished_question_ends_the_turn_after_the_grace():
    stops, _ = await user_turn("How do I get to the castle?")
    assert stops, "a finished question should end the turn despite the hesitant model"


async def test_unfinished_words_wait_for_the_model():
    stops, _ = await user_turn("I was wondering whether")
    assert not stops


async def test_new_speech_cancels_the_overrule():
    stops, _ = await user_turn("How do I get to the castle?", resume=True)
    assert not stops


async def speculative_turn(
    eager: str, final: str, *, resume: bool = False, turn_starts: bool = True
) -> tuple[list, TranscriptAwareTurnStopStrategy]:
    """A turn whose words were offered (``eager``) before the VAD stop, then committed (``final``)."""
    strategy = TranscriptAwareTurnStopStrategy(turn_analyzer=HesitantTurnAnalyzer(), grace_secs=0.2)
    # Without a turn start: the replica is talking and three words are needed to interrupt it.
    start = [VADUserTurnStartStrategy()] if turn_starts else [MinWordsUserTurnStartStrategy(min_words=3)]
    pair = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            user_turn_strategies=UserTurnStrategies(start=start, stop=[strategy]),
            user_turn_stop_timeout=3.0,
        ),
    )
    frames = [] if turn_starts else [BotStartedSpeakingFrame()]
    frames += [
        VADUserStartedSpeakingFrame(start_secs=0.2),
        SleepFrame(0.3),
        EagerTranscriptionFrame(eager, "user", "now"),
        SleepFrame(0.05),
    ]
    if resume:
        frames += [VADUserStartedSpeakingFrame(start_secs=0.2), SleepFrame(0.3)]
    frames += [
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
        TranscriptionFrame(final, "user", "now", finalized=True),
        SleepFrame(0.5),
    ]
    down, up = await run_test(pair.user(), frames_to_send=frames)
    return [*down, *up], strategy


def contexts(frames: list) -> list[bool]:
    """The speculation flag of each inference the aggregator asked for."""
    return [f.speculation for f in frames if isinstance(f, LLMContextFrame)]


async def test_the_reply_starts_before_the_turn_ends_and_is_kept():
    frames, strategy = await speculative_turn("How do I get to the castle?", "How do I get to the castle?")
    assert contexts(frames) == [True], "one inference, started before the turn ended"
    assert not any(isinstance(f, EagerEndOfTurnCancelFrame) for f in frames)
    assert any(isinstance(f, UserStoppedSpeakingFrame) for f in frames)
    assert (strategy.speculations, strategy.speculations_kept) == (1, 1)
    ctx = next(f for f in frames if isinstance(f, LLMContextFrame)).context
    assert ctx.messages[-1] == {"role": "user", "content": "How do I get to the castle?"}


async def test_the_early_reply_is_withdrawn_when_the_user_speaks_again():
    frames, strategy = await speculative_turn("How do I get", "How do I get to the castle?", resume=True)
    assert any(isinstance(f, EagerEndOfTurnCancelFrame) for f in frames)
    # The committed words are answered afresh (again early, during the grace).
    assert contexts(frames) == [True, True]
    assert (strategy.speculations, strategy.speculations_kept) == (2, 1)


async def test_the_early_reply_is_withdrawn_when_the_words_change():
    frames, strategy = await speculative_turn("How do I get to the cattle?", "How do I get to the castle?")
    assert any(isinstance(f, EagerEndOfTurnCancelFrame) for f in frames)
    # The committed words are speculated on again during the grace, and that one is kept.
    assert contexts(frames)[0] is True and contexts(frames).count(False) == 0
    assert strategy.speculations == 2 and strategy.speculations_kept == 1


async def test_no_early_reply_to_words_that_did_not_start_a_turn():
    # E.g. "uh-huh" while the replica talks, for a persona that needs more words to be interrupted.
    frames, strategy = await speculative_turn("Uh-huh.", "Uh-huh.", turn_starts=False)
    assert contexts(frames) == [] and strategy.speculations == 0
