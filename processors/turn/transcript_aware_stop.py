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

from processors.frames import UtteranceTranscribedFrame

SENTENCE_END = re.compile(r"[.?!][\"')\]]*\s*$")
QUESTION_END = re.compile(r"\?[\"')\]]*\s*$")
# Input louder than this, and than the noise floor by ABOVE_FLOOR_DB, may be the
# user starting to speak again before the VAD says so (it needs start_secs of
# speech, and on a busy machine its verdict reaches this strategy behind
# seconds of audio queued meanwhile).
ONSET_DBFS = -40.0
ABOVE_FLOOR_DB = 12.0
FLOOR_RISE_DB_PER_SEC = 2.5  # the floor follows steady noise up slowly, and down at once
# This much loud audio after the VAD's stop: the user may be speaking again; the
# turn does not end until the VAD says, or the sound proves a noise.
RESUMED_SECS = 0.1
# How recent (in audio) a sound must be to hold the end of a turn back.
ONSET_WINDOW_SECS = 0.25
# A sound is over after this much quiet. Shorter than SPEECH_LIKE_SECS in all,
# it was a noise (a click, a cough); longer, it was probably words, and the
# VAD's verdict is awaited for up to VAD_LAG_SECS of audio after it.
NOISE_END_SECS = 0.5
SPEECH_LIKE_SECS = 0.3
VAD_LAG_SECS = 3.0
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
    the input is loud enough to be them starting again. Both are counted in audio received, not wall
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
        min_words: Shortest transcript that may overrule it.
        speculate: Start the reply on a transcript before the turn ends.
        speculation_timeout: Seconds a speculation may stay unresolved before
            it is withdrawn.
        stt_reports_utterances: The STT pushes an ``UtteranceTranscribedFrame``
            after each utterance (ours does): the turn then waits for every
            utterance's words, however late a busy machine delivers them.
            Otherwise the STT's p99 latency stands in.
        **kwargs: Passed to ``TurnAnalyzerUserTurnStopStrategy``.
    """

    def __init__(
        self,
        *,
        grace_secs: float = 0.25,
        statement_hold_secs: float = 0.9,
        min_words: int = 3,
        speculate: bool = True,
        speculation_timeout: float = 5.0,
        stt_reports_utterances: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._grace_secs = grace_secs
        self._min_words = min_words
        self._grace_task: asyncio.Task | None = None
        self._statement_hold_secs = statement_hold_secs
        self._hold_task: asyncio.Task | None = None
        self._held = False  # the statement hold has run out in this pause
        self._speech_end: float | None = None  # wall clock of the user's last word
        # VAD-bounded utterances of this turn, transcripts of them received, and
        # utterances the STT said it is done with (an STT that says so:
        # UtteranceTranscribedFrame).
        self._utterances = 0
        self._transcripts = 0
        self._reported = 0
        self._stt_reports = stt_reports_utterances
        # Audio seconds since the VAD's stop (counting its stop_secs), when (on
        # that count) input was last loud, how long the current loud stretch
        # is, whether the user seems to be speaking again, and where the
        # statement hold counts from (the end of the last such sound).
        self._silence_audio_secs = 0.0
        self._last_loud_audio_secs = 0.0
        self._loud_run_secs = 0.0
        self._sound_secs = 0.0  # loud audio in the current sound
        self._resumed = False
        self._hold_from_secs = 0.0
        self._floor_dbfs = -70.0
        self._last_audio_wall = 0.0
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
        if isinstance(frame, InputAudioRawFrame) and frame.audio:
            await self._count_silence(frame)
        elif isinstance(frame, UtteranceTranscribedFrame):
            self._reported += 1
            if self._has_latest_words:
                # Every utterance's words are final, even if the last held none.
                self._transcript_finalized = True
                await self._words_in()
                await self._maybe_trigger_user_turn_stopped()
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
        self._last_loud_audio_secs = self._loud_run_secs = self._hold_from_secs = self._sound_secs = 0.0
        self._resumed = False
        await super()._handle_vad_user_stopped_speaking(frame)
        await self._maybe_start_grace()

    async def _handle_transcription(self, frame: TranscriptionFrame):
        if frame.text.strip():
            self._segments.append(frame.text.strip())
            self._transcripts += 1
        await super()._handle_transcription(frame)
        await self._words_in()

    async def _words_in(self):
        if self._vad_stopped and not self._vad_user_speaking and not self._turn_complete and self._has_latest_words:
            # The words are in but the verdict is not: answer them meanwhile.
            await self._speculate(" ".join(self._segments))
        await self._maybe_start_grace()

    async def _reset(self):
        self._segments = []
        self._utterances = self._transcripts = self._reported = 0
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
        if self._vad_stopped and self._resumed:
            return  # the user may be speaking again; the VAD will say
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
        # The transcript of every utterance of the turn so far is in. An STT
        # that reports each utterance says so; for others, the STT's time for
        # the last one running out stands in (it may have held no words).
        if self._stt_reports:
            return self._reported >= self._utterances
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
        secs = samples.size / (frame.sample_rate * frame.num_channels)
        level = 20 * np.log10(np.sqrt(np.mean(samples**2)) / 32768.0 + 1e-9)
        self._last_audio_wall = time.time()
        self._floor_dbfs = min(level, self._floor_dbfs + FLOOR_RISE_DB_PER_SEC * secs)
        if not self._vad_stopped:
            return
        self._silence_audio_secs += secs
        quiet_for = self._silence_audio_secs - self._last_loud_audio_secs
        if level > max(ONSET_DBFS, self._floor_dbfs + ABOVE_FLOOR_DB):
            if quiet_for >= NOISE_END_SECS:
                self._sound_secs = 0.0  # a new sound
            self._last_loud_audio_secs = self._silence_audio_secs
            self._loud_run_secs += secs
            self._sound_secs += secs
            if self._loud_run_secs >= RESUMED_SECS and not self._resumed:
                self._resumed = True
                logger.debug(f"{self}: sound after the pause; the turn waits for the VAD")
        else:
            self._loud_run_secs = 0.0
            noise = self._sound_secs < SPEECH_LIKE_SECS
            if self._resumed and quiet_for >= (NOISE_END_SECS if noise else VAD_LAG_SECS):
                # It stopped and the VAD never called it speech. The statement
                # hold counts again from its end.
                self._resumed = False
                self._hold_from_secs = self._last_loud_audio_secs
                await self._maybe_trigger_user_turn_stopped()
        if self._hold_task is not None:
            await self._check_hold()

    async def _check_hold(self):
        """End the hold once enough quiet audio has come in since the user's last sound."""
        if self._resumed or self._silence_audio_secs - self._hold_from_secs < self._statement_hold_secs:
            return
        if self._silence_audio_secs - self._last_loud_audio_secs < ONSET_WINDOW_SECS:
            return  # maybe the next sentence starting; the VAD will say
        await self._cancel_hold()
        await self._hold_over()

    async def _hold_by_wall_clock(self):
        # Only if audio stops arriving altogether.
        assert self._speech_end is not None
        deadline = self._speech_end + self._statement_hold_secs + VAD_LAG_SECS
        try:
            await asyncio.sleep(max(0.0, deadline + HOLD_WALL_CLOCK_SLACK_SECS - time.time()))
            while time.time() - self._last_audio_wall < HOLD_WALL_CLOCK_SLACK_SECS:
                await asyncio.sleep(HOLD_WALL_CLOCK_SLACK_SECS)  # audio flows: the audio count decides
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
