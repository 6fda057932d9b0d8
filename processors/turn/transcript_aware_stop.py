"""End the user's turn when Smart Turn hesitates but the words are plainly finished,
and start the reply before the turn is even decided."""

import asyncio
import re

from loguru import logger
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import NormalizedMatch, TurnAnalyzerUserTurnStopStrategy

SENTENCE_END = re.compile(r"[.?!][\"')\]]*\s*$")


class TranscriptAwareTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart Turn v3, with the transcript as a second opinion and a head start.

    **Second opinion.** Smart Turn judges from the sound alone and sometimes
    calls a finished question unfinished ("How do I get to the castle?" read
    flatly); the turn then waits its full silence budget (a second or more).
    Whisper has heard the words: when its transcript of the utterance ends a
    sentence (``.``, ``?`` or ``!``) and has at least ``min_words`` words, and
    the user stays silent for ``grace_secs`` more, the turn ends then. Any new
    speech cancels that, as it cancels Smart Turn's own verdict.

    **Head start.** The reply need not wait for the verdict. When a transcript
    of the turn exists before the turn is decided (the STT's
    ``EagerTranscriptionFrame`` from a pause, or the final transcript while
    Smart Turn or the grace still deliberate), the LLM starts on it at once,
    through pipecat's speculation machinery: the inference runs on a
    provisional context and the LLM service holds its reply until the turn
    ends. If the committed transcript matches (``NormalizedMatch``), that reply
    is released the moment the turn ends; if the user speaks again, or the
    words differ, it is withdrawn and never heard.

    Args:
        grace_secs: Extra silence after the VAD stop before a finished
            transcript may overrule an "incomplete" verdict.
        min_words: Shortest transcript that may overrule it.
        speculate: Start the reply on a transcript before the turn ends.
        speculation_timeout: Seconds a speculation may stay unresolved before
            it is withdrawn.
        **kwargs: Passed to ``TurnAnalyzerUserTurnStopStrategy``.
    """

    def __init__(
        self,
        *,
        grace_secs: float = 0.25,
        min_words: int = 3,
        speculate: bool = True,
        speculation_timeout: float = 5.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._grace_secs = grace_secs
        self._min_words = min_words
        self._grace_task: asyncio.Task | None = None
        self._speculate_enabled = speculate
        self._speculation_timeout = speculation_timeout
        self._match = NormalizedMatch()
        self._segments: list[str] = []  # committed transcripts of this turn
        self._speculation: UserTurnSpeculation | None = None
        self._speculation_timer: asyncio.Task | None = None
        self._in_turn = False
        self.speculations = 0
        self.speculations_kept = 0

    def transcript_looks_finished(self, text: str) -> bool:
        """A sentence ending and enough words."""
        return bool(SENTENCE_END.search(text)) and len(text.split()) >= self._min_words

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, EagerTranscriptionFrame):
            await self._speculate(" ".join([*self._segments, frame.text.strip()]))
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            await self._take_speculation()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            await self._withdraw("the user spoke again")
        return await super().process_frame(frame)

    async def handle_user_turn_started(self):
        self._in_turn = True
        await super().handle_user_turn_started()

    async def handle_user_turn_stopped(self):
        self._in_turn = False
        await super().handle_user_turn_stopped()

    # ----------------------------------------------------------------- grace

    async def _handle_vad_user_stopped_speaking(self, frame):
        await super()._handle_vad_user_stopped_speaking(frame)
        await self._maybe_start_grace()

    async def _handle_transcription(self, frame: TranscriptionFrame):
        if frame.text.strip():
            self._segments.append(frame.text.strip())
        await super()._handle_transcription(frame)
        if self._vad_stopped and not self._vad_user_speaking and not self._turn_complete:
            # The words are in but the verdict is not: answer them meanwhile.
            await self._speculate(" ".join(self._segments))
        await self._maybe_start_grace()

    async def _reset(self):
        self._segments = []
        await self._withdraw("the turn ended without resolving it")
        await super()._reset()

    async def _discard_pending_end_of_turn(self):
        await self._cancel_grace()
        await super()._discard_pending_end_of_turn()

    async def cleanup(self):
        await self._cancel_grace()
        await self._take_speculation()
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

    # ----------------------------------------------------------- speculation

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None):
        """End the turn, keeping the reply started early if it answers these words."""
        speculation = await self._take_speculation()
        committed = " ".join(self._segments)
        if speculation is not None and self._match.matches(speculation.text, committed):
            self.speculations_kept += 1
            logger.debug(f"{self}: the reply started early answers the turn; releasing it")
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames, confirms_speculation=True
            )
            return
        if speculation is not None:
            logger.debug(f"{self}: the turn's words changed; the reply started early is withdrawn")
            await self.trigger_user_turn_speculation_cancelled()
        await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)

    async def _speculate(self, text: str):
        # Only inside a user turn: words the turn-start strategies did not take
        # as a turn (a short "uh-huh" while the replica talks, for a persona
        # that needs several words to be interrupted) must not get a reply.
        if not self._speculate_enabled or not self._in_turn or not text.strip():
            return
        if self._speculation is not None:
            if self._match.matches(self._speculation.text, text):
                return  # already answering these words
            await self._withdraw("newer words")
        speculation = UserTurnSpeculation(text=text)
        self._speculation = speculation
        self.speculations += 1
        self._speculation_timer = self.task_manager.create_task(
            self._expire(speculation), f"{self}::speculation_timeout"
        )
        logger.debug(f"{self}: starting the reply before the turn ends")
        await self.trigger_user_turn_inference_triggered(speculation=speculation)

    async def _expire(self, speculation: UserTurnSpeculation):
        await asyncio.sleep(self._speculation_timeout)
        self._speculation_timer = None
        if self._speculation is speculation:
            self._speculation = None
            logger.debug(f"{self}: speculation unresolved after {self._speculation_timeout} s; withdrawn")
            await self.trigger_user_turn_speculation_cancelled()

    async def _take_speculation(self) -> UserTurnSpeculation | None:
        speculation, self._speculation = self._speculation, None
        if self._speculation_timer is not None:
            task, self._speculation_timer = self._speculation_timer, None
            await self.task_manager.cancel_task(task)
        return speculation

    async def _withdraw(self, why: str):
        if await self._take_speculation() is not None:
            logger.debug(f"{self}: reply started early withdrawn ({why})")
            await self.trigger_user_turn_speculation_cancelled()
