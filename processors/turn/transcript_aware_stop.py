"""End the user's turn when Smart Turn hesitates but the words are plainly finished."""

import asyncio
import re

from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

SENTENCE_END = re.compile(r"[.?!][\"')\]]*\s*$")


class TranscriptAwareTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart Turn v3, with the final transcript as a second opinion.

    Smart Turn judges from the sound alone and sometimes calls a finished
    question unfinished ("How do I get to the castle?" read flatly); the turn
    then waits its full silence budget (a second or more). Whisper has heard
    the words: when its transcript of the utterance ends a sentence (``.``,
    ``?`` or ``!``) and has at least ``min_words`` words, and the user stays
    silent for ``grace_secs`` more, the turn ends then. Any new speech cancels
    that, as it cancels Smart Turn's own verdict.

    Args:
        grace_secs: Extra silence after the VAD stop before a finished
            transcript may overrule an "incomplete" verdict.
        min_words: Shortest transcript that may overrule it.
        **kwargs: Passed to ``TurnAnalyzerUserTurnStopStrategy``.
    """

    def __init__(self, *, grace_secs: float = 0.25, min_words: int = 3, **kwargs):
        super().__init__(**kwargs)
        self._grace_secs = grace_secs
        self._min_words = min_words
        self._grace_task: asyncio.Task | None = None

    def transcript_looks_finished(self, text: str) -> bool:
        """A sentence ending and enough words."""
        return bool(SENTENCE_END.search(text)) and len(text.split()) >= self._min_words

    async def _handle_vad_user_stopped_speaking(self, frame):
        await super()._handle_vad_user_stopped_speaking(frame)
        await self._maybe_start_grace()

    async def _handle_transcription(self, frame):
        await super()._handle_transcription(frame)
        await self._maybe_start_grace()

    async def _discard_pending_end_of_turn(self):
        await self._cancel_grace()
        await super()._discard_pending_end_of_turn()

    async def cleanup(self):
        await self._cancel_grace()
        await super().cleanup()

    async def _maybe_start_grace(self):
        if (
            self._vad_stopped
            and not self._vad_user_speaking
            and not self._turn_complete
            and self._grace_task is None
            and self.transcript_looks_finished(self._text)
        ):
            self._grace_task = self.task_manager.create_task(self._grace(), f"{self}::grace")

    async def _grace(self):
        try:
            await asyncio.sleep(self._grace_secs)
        except asyncio.CancelledError:
            return
        self._grace_task = None
        if self._vad_stopped and not self._vad_user_speaking and not self._turn_complete:
            self._turn_complete = True
            await self._maybe_trigger_user_turn_stopped()

    async def _cancel_grace(self):
        if self._grace_task is not None:
            task, self._grace_task = self._grace_task, None
            await self.task_manager.cancel_task(task)
