"""End the user's turn when Smart Turn hesitates but the words are plainly finished,
let a statement wait for the question that may follow it, and start the reply
before the turn is even decided."""

import asyncio
import re
import time

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import NormalizedMatch, TurnAnalyzerUserTurnStopStrategy

SENTENCE_END = re.compile(r"[.?!][\"')\]]*\s*$")
QUESTION_END = re.compile(r"\?[\"')\]]*\s*$")
# Input louder than this may be the user starting to speak again, before the
# VAD says so (it needs start_secs of speech, and its verdict reaches this
# strategy behind any audio queued meanwhile).
ONSET_DBFS = -40.0
# How recent (in audio) that sound must be to hold the end of a turn back.
ONSET_WINDOW_SECS = 0.25
# If audio stops arriving, a held turn still ends this long after its deadline.
HOLD_WALL_CLOCK_SLACK_SECS = 1.0


class TranscriptAwareTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart Turn v3, with the transcript as a second opinion and a head start.

    **Second opinion.** Smart Turn judges from the sound alone and sometimes
    calls a finished question unfinished ("How do I get to the castle?" read
    flatly); the turn then waits its full silence budget (a second or more).
    Whisper has heard the words: when its transcript of the utterance ends a
    sentence (``.``, ``?`` or ``!``) and has at least ``min_words`` words, and
    the user stays silent for ``grace_secs`` more, the turn ends then. Any new
    speech cancels that, as it cancels Smart Turn's own verdict.

    **Room for a second sentence.** People pause between the sentences of one
    thought: "I am feeling a little tired today. [0.6 s] Do you have any
    advice?". A turn whose words end in a question mark is most likely
    finished and ends as above; any other turn (a statement, an exclamation, a
    fragment Smart Turn calls complete) ends only once the user has been
    silent ``statement_hold_secs`` since their last word, and later still while
    the input is loud enough to be them starting again (at most
    ``max_onset_wait_secs``). Both are counted in audio received, not wall
    time, so a busy machine that delivers audio late or in bursts cannot end
    the turn before it has heard the pause. The reply starts early meanwhile, so the wait
    costs nothing when no second sentence comes; when one does, the early
    reply is withdrawn and the turn goes on, and the answer covers all of it.

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
            question may overrule an "incomplete" verdict.
        statement_hold_secs: Silence after the last word before a turn that
            does not end in a question mark may end (it overrules an
            "incomplete" verdict too, if its words end a sentence).
        max_onset_wait_secs: Longest the end of such a turn waits past
            ``statement_hold_secs`` while the input sounds like speech starting.
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
        statement_hold_secs: float = 0.9,
        max_onset_wait_secs: float = 1.0,
        min_words: int = 3,
        speculate: bool = True,
        speculation_timeout: float = 5.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._grace_secs = grace_secs
        self._min_words = min_words
        self._grace_task: asyncio.Task | None = None
        self._statement_hold_secs = statement_hold_secs
        self._max_onset_wait_secs = max_onset_wait_secs
        self._hold_task: asyncio.Task | None = None
        self._held = False  # the statement hold has run out in this pause
        self._speech_end: float | None = None  # wall clock of the user's last word
        # VAD-bounded utterances of this turn, and transcripts of them received.
        self._utterances = 0
        self._transcripts = 0
        # Audio seconds since the user's last word, and when (on that count) input was last loud.
        self._silence_audio_secs = 0.0
        self._last_loud_audio_secs = 0.0
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

    def transcript_is_question(self, text: str) -> bool:
        """Ends in a question mark: most likely the whole turn."""
        return bool(QUESTION_END.search(text))

    @property
    def _turn_text(self) -> str:
        return " ".join(self._segments)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame) and frame.audio and self._vad_stopped:
            await self._count_silence(frame)
        elif isinstance(frame, EagerTranscriptionFrame):
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
        self._utterances += 1
        self._speech_end = frame.timestamp - frame.stop_secs
        self._silence_audio_secs = frame.stop_secs
        self._last_loud_audio_secs = 0.0
        await super()._handle_vad_user_stopped_speaking(frame)
        await self._maybe_start_grace()

    async def _handle_transcription(self, frame: TranscriptionFrame):
        if frame.text.strip():
            self._segments.append(frame.text.strip())
            self._transcripts += 1
        await super()._handle_transcription(frame)
        if self._vad_stopped and not self._vad_user_speaking and not self._turn_complete and self._has_latest_words:
            # The words are in but the verdict is not: answer them meanwhile.
            await self._speculate(" ".join(self._segments))
        await self._maybe_start_grace()

    async def _reset(self):
        self._segments = []
        self._utterances = self._transcripts = 0
        self._speech_end = None
        await self._withdraw("the turn ended without resolving it")
        await super()._reset()

    async def _discard_pending_end_of_turn(self):
        await self._cancel_grace()
        await self._cancel_hold()
        self._held = False
        await super()._discard_pending_end_of_turn()

    async def cleanup(self):
        await self._cancel_grace()
        await self._cancel_hold()
        await self._take_speculation()
        await super().cleanup()

    async def _maybe_start_grace(self):
        if not self._vad_stopped or self._vad_user_speaking or not self._turn_text:
            return
        if not self.transcript_is_question(self._turn_text):
            # A statement (or Smart Turn's "complete" fragment) may have a
            # second sentence coming: the hold decides, not the grace.
            if self._has_latest_words and (self._turn_complete or self.transcript_looks_finished(self._turn_text)):
                await self._start_hold()
            return
        if not self._turn_complete and self._grace_task is None and self.transcript_looks_finished(self._text):
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

    # ------------------------------------------------------------------ hold

    async def _maybe_trigger_user_turn_stopped(self):
        if not self._has_latest_words:
            # A busy STT can deliver the first sentence's words after the VAD
            # has heard the second one end; the turn is not decided on them.
            return
        if (
            self._turn_complete
            and not self._held
            and self._speech_end is not None
            and self._turn_text
            and self._has_latest_words
            and not self.transcript_is_question(self._turn_text)
        ):
            await self._start_hold()
            return
        await super()._maybe_trigger_user_turn_stopped()

    @property
    def _has_latest_words(self) -> bool:
        # The transcript of every utterance of the turn so far is in (or the
        # STT's time for the last one has run out: it may have been noise).
        return (self._transcript_finalized and self._transcripts >= self._utterances) or self._timeout_expired

    async def _start_hold(self):
        if self._hold_task is not None or self._held or self._speech_end is None:
            return
        # The reply may start now; it is heard only if no second sentence comes.
        await self._speculate(self._turn_text)
        self._hold_task = self.task_manager.create_task(self._hold_by_wall_clock(), f"{self}::statement_hold")
        await self._check_hold()

    async def _count_silence(self, frame: InputAudioRawFrame):
        samples = np.frombuffer(frame.audio, dtype=np.int16).astype(np.float32)
        self._silence_audio_secs += samples.size / (frame.sample_rate * frame.num_channels)
        if 20 * np.log10(np.sqrt(np.mean(samples**2)) / 32768.0 + 1e-9) > ONSET_DBFS:
            self._last_loud_audio_secs = self._silence_audio_secs
        if self._hold_task is not None:
            await self._check_hold()

    async def _check_hold(self):
        """End the hold once enough quiet audio has come in since the user's last word."""
        heard = self._silence_audio_secs
        if heard < self._statement_hold_secs:
            return
        starting_again = heard - self._last_loud_audio_secs < ONSET_WINDOW_SECS
        if starting_again and heard < self._statement_hold_secs + self._max_onset_wait_secs:
            return  # maybe the next sentence; the VAD will say
        await self._cancel_hold()
        await self._hold_over()

    async def _hold_by_wall_clock(self):
        # Only if audio stops arriving altogether.
        assert self._speech_end is not None
        deadline = self._speech_end + self._statement_hold_secs + self._max_onset_wait_secs
        try:
            await asyncio.sleep(max(0.0, deadline + HOLD_WALL_CLOCK_SLACK_SECS - time.time()))
        except asyncio.CancelledError:
            return
        self._hold_task = None
        await self._hold_over()

    async def _hold_over(self):
        self._held = True
        if not self._vad_stopped or self._vad_user_speaking:
            return
        if self.transcript_looks_finished(self._turn_text):
            self._turn_complete = True  # a whole sentence and nothing after it
        logger.debug(f"{self}: no second sentence after {self._statement_hold_secs} s")
        await self._maybe_trigger_user_turn_stopped()

    async def _cancel_hold(self):
        if self._hold_task is not None:
            task, self._hold_task = self._hold_task, None
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
