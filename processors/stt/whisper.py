"""Whisper speech recognition on a model loaded once per process.

Whisper is trained on 30-second windows, and faster-whisper pads every
utterance to one; on two CPU cores the encoder then costs about 0.8 s for a
3 s question, whatever its length. CTranslate2's encoder also takes shorter
inputs, so ``transcribe_trimmed`` encodes only the utterance plus a second of
silence and decodes greedily: the same words, about five times sooner. Audio
longer than 28 s takes faster-whisper's own path.

Greedy decoding on a short window sometimes falls into Whisper's repetition
failure ("I love seafood I love seafood I love seafood ..."). It is guarded
the way faster-whisper guards its own decoding: a decode that runs into its
length limit, compresses too well (``COMPRESSION_RATIO_THRESHOLD``) or
repeats itself is decoded again, on a window with more silence after the
speech (where Whisper knows the speech has ended), and the better of the two
is kept; except a loop of whole sentences (the utterance read, then read
again into the trailing silence), which is kept once at no extra cost. (A
decode that is merely unsure, ``LOG_PROB_THRESHOLD``, is not:
``RETRY_LOW_CONFIDENCE``.) Whatever is kept has any span that still repeats
back to back collapsed to one (``collapse_repeats``).
"""

import asyncio
import re
import threading
import zlib
from dataclasses import dataclass

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from loguru import logger
from pipecat.frames.frames import EagerTranscriptionFrame, ErrorFrame, TranscriptionFrame
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from processors.frames import UtteranceTranscribedFrame

SAMPLE_RATE = 16000
# Speculative transcription: once the user has been quiet this long (before
# the VAD is sure the utterance ended), transcribe what we have.
SPECULATE_AFTER_QUIET_SECS = 0.04
# In a pause, sound this short does not count as speech resuming.
RESUME_AFTER_LOUD_SECS = 0.04
QUIET_DBFS = -42.0
TAIL_SILENCE_SECS = 1.0
MAX_TRIMMED_SECS = 28.0
# The repetition guard (faster-whisper's defaults for the first two).
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
FALLBACK_TAIL_SILENCE_SECS = 3.0
# Decode again (more silence) when the first decode merely has a low average
# log-probability, not only when it loops. Off: on the bot's pauses that
# retry gave back the same words (an unfinished sentence, an unusual voice)
# and doubled the time (bench/whisper_guard.py measures both).
RETRY_LOW_CONFIDENCE = False
# A loop that repeats whole sentences ("Is Sintra worth a day trip? Is Sintra
# worth a day trip") is kept once, without the second decode: Whisper read
# the utterance, then read it again into the trailing silence.
KEEP_WHOLE_SENTENCE_LOOPS = True
SENTENCE_END = re.compile(r"[.?!][\"')\]]*$")
# Longest transcript for an utterance: fast speech is about 5 tokens a second;
# a loop stops here instead of at max_tokens.
MIN_TOKEN_LIMIT = 16
TOKENS_PER_SEC = 8.0

_models: dict[tuple[str, str, int], WhisperModel] = {}
_models_lock = threading.Lock()


def shared_whisper_model(model: str, *, compute_type: str = "int8", cpu_threads: int = 2) -> WhisperModel:
    """Load ``model`` (a folder or a hub name) once; later calls share it.

    CTranslate2 models are safe to call from several threads, so every
    conversation in the process uses the same instance.
    """
    key = (model, compute_type, cpu_threads)
    with _models_lock:
        if key not in _models:
            logger.debug(f"Loading Whisper model {model} ({compute_type}, {cpu_threads} threads)")
            _models[key] = WhisperModel(model, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)
        return _models[key]


def _words_key(word: str) -> str:
    return re.sub(r"[^\w']+", "", word.lower())


def collapse_repeats(text: str) -> str:
    """``text`` with every span repeated back to back kept once.

    A span of three or more words said twice in a row, or of two words said
    three times, is Whisper looping rather than a person talking ("very very"
    and "no, no" stay). A loop cut off by the length limit leaves a partial
    copy at the end ("What can we do indoors? What can we"); that goes too.
    """
    words = text.split()
    keys = [_words_key(w) for w in words]
    out: list[str] = []
    i = 0
    n = len(words)

    def cut_off_copy(start: int, span: int, min_words: int) -> bool:
        # keys[start:] is the beginning of one more copy of the span before it, and nothing follows.
        rest, copy = keys[start:], keys[start - span : start]
        return (
            min_words <= len(rest) < span
            and rest[:-1] == copy[: len(rest) - 1]
            and copy[len(rest) - 1].startswith(rest[-1])
        )

    while i < n:
        for span in range(2, min(n - i, 40) + 1):  # the shortest period first
            if not any(keys[i : i + span]):
                continue
            copies = 1
            while keys[i + copies * span : i + (copies + 1) * span] == keys[i : i + span]:
                copies += 1
            looped = copies >= (2 if span >= 3 else 3)
            # After a loop any cut-off start goes; after one copy, two words or more.
            if looped or (span >= 3 and cut_off_copy(i + span, span, 2)):
                out.extend(words[i : i + span])
                i += copies * span
                if cut_off_copy(i, span, 1):
                    i = n
                break
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def compression_ratio(text: str) -> float:
    """How well ``text`` compresses (faster-whisper's measure: loops compress well)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class _Decoded:
    text: str
    avg_logprob: float
    hit_limit: bool
    no_speech_prob: float

    @property
    def looping(self) -> bool:
        """Whisper's repetition failure: the length limit hit, or words repeated back to back."""
        return (
            self.hit_limit
            or compression_ratio(self.text) > COMPRESSION_RATIO_THRESHOLD
            or collapse_repeats(self.text) != self.text
        )

    @property
    def degenerate(self) -> bool:
        """Worth decoding again with more silence after the speech."""
        return self.looping or (RETRY_LOW_CONFIDENCE and self.avg_logprob < LOG_PROB_THRESHOLD)


def _decode_trimmed(
    model: WhisperModel,
    audio: np.ndarray,
    *,
    tail_secs: float,
    language: str | None,
    prompt: str | None,
    max_tokens: int,
    beam_size: int,
) -> _Decoded:
    padded = np.concatenate([audio.astype(np.float32), np.zeros(int(tail_secs * SAMPLE_RATE), np.float32)])
    features = model.feature_extractor(padded)
    frames = features.shape[-1] - features.shape[-1] % 2  # the encoder's convolution halves it
    features = np.ascontiguousarray(features[np.newaxis, :, :frames], dtype=np.float32)
    multilingual = model.model.is_multilingual
    encoded = model.encode(features)
    if language is None and multilingual:
        language = model.model.detect_language(encoded)[0][0][0].strip("<|>")
    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=language or "en")
    tokens: list[int] = []
    if prompt:
        tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-200:]]
    tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    result = model.model.generate(
        encoded,
        [tokens],
        beam_size=beam_size,
        max_length=max_tokens,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        repetition_penalty=1.05,
        no_repeat_ngram_size=0,
    )[0]
    ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    return _Decoded(
        text=tokenizer.decode(ids).strip(),
        avg_logprob=result.scores[0],
        hit_limit=len(result.sequences_ids[0]) >= max_tokens - 1,
        no_speech_prob=result.no_speech_prob,
    )


def transcribe_trimmed(
    model: WhisperModel,
    audio: np.ndarray,
    *,
    language: str | None = "en",
    prompt: str | None = None,
    no_speech_threshold: float = 0.6,
    max_tokens: int = 200,
    beam_size: int = 1,
) -> str:
    """Transcribe one utterance (float32 mono at 16 kHz) with a window cut to its length.

    Args:
        model: A loaded faster-whisper model.
        audio: The utterance, float32 in [-1, 1], 16 kHz mono.
        language: ISO code; ``None`` detects it (multilingual models only).
        prompt: Words to bias recognition towards (hotwords, earlier context).
        no_speech_threshold: Above this no-speech probability the result is empty.
        max_tokens: Longest transcript, in tokens.
        beam_size: 1 decodes greedily (fastest).

    Returns:
        The text, stripped, with no repetition loop; empty for silence or noise.
    """
    secs = len(audio) / SAMPLE_RATE
    if secs > MAX_TRIMMED_SECS:
        # faster-whisper's own path, with its temperature fallbacks; each
        # 30 s window stands alone so one window's loop cannot seed the next.
        segments, _ = model.transcribe(
            audio,
            language=language,
            initial_prompt=prompt,
            beam_size=1,
            condition_on_previous_text=False,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            log_prob_threshold=LOG_PROB_THRESHOLD,
        )
        return collapse_repeats(" ".join(s.text.strip() for s in segments if s.no_speech_prob < no_speech_threshold))
    options = dict(
        language=language,
        prompt=prompt,
        max_tokens=min(max_tokens, MIN_TOKEN_LIMIT + int(TOKENS_PER_SEC * secs)),
        beam_size=beam_size,
    )
    best = _decode_trimmed(model, audio, tail_secs=TAIL_SILENCE_SECS, **options)
    if best.no_speech_prob > no_speech_threshold:
        return ""
    if best.degenerate and KEEP_WHOLE_SENTENCE_LOOPS:
        once = collapse_repeats(best.text)
        if once != best.text and SENTENCE_END.search(once) and compression_ratio(once) <= COMPRESSION_RATIO_THRESHOLD:
            logger.debug(f"Whisper: read twice, kept once: {once[:80]!r}")
            return once
    if best.degenerate:
        # More silence after the speech: Whisper sees where it ends and stops there.
        retry = _decode_trimmed(model, audio, tail_secs=FALLBACK_TAIL_SILENCE_SECS, **options)
        logger.debug(f"Whisper: degenerate decode {best.text[:80]!r}; with more silence: {retry.text[:80]!r}")
        if retry.no_speech_prob > no_speech_threshold:
            return ""
        if not retry.degenerate or retry.avg_logprob > best.avg_logprob:
            best = retry
    return collapse_repeats(best.text)


@dataclass
class _Speculation:
    """A transcription started in a pause, valid while no louder audio follows."""

    last_loud: int
    task: asyncio.Task


class LocalWhisperSTTService(WhisperSTTService):
    """Whisper on a shared local model, transcribing each utterance with a trimmed window.

    It also transcribes speculatively: when the user has been quiet for
    ``SPECULATE_AFTER_QUIET_SECS`` while the VAD still waits to be sure the
    utterance ended (its stop_secs), it starts transcribing the audio so far.
    If no speech follows, that result is the final transcript, ready about as
    soon as the VAD confirms the stop; if speech follows, it is discarded.
    A speculative transcript finished while the VAD still waits also goes
    downstream at once as an ``EagerTranscriptionFrame``, so the turn strategy
    can start the reply before the turn ends (see
    ``processors.turn.transcript_aware_stop``).

    Args:
        model: Folder holding a CTranslate2 Whisper model (or a hub name).
        language: ISO code such as ``"en"``; ``None`` lets Whisper detect it.
        hotwords: Words to bias recognition towards.
        cpu_threads: Threads CTranslate2 may use.
        compute_type: CTranslate2 compute type; ``int8`` is fastest on CPU.
        **kwargs: Passed to ``WhisperSTTService``.
    """

    def __init__(
        self,
        *,
        model: str,
        language: str | None = "en",
        hotwords: list[str] | None = None,
        cpu_threads: int = 2,
        compute_type: str = "int8",
        **kwargs,
    ):
        self._model_name = model
        self._cpu_threads = cpu_threads
        self._language_code = language
        self._prompt = ", ".join(hotwords) if hotwords else None
        settings = WhisperSTTService.Settings(
            model=model,
            language=Language(language) if language else None,
        )
        super().__init__(device="cpu", compute_type=compute_type, settings=settings, **kwargs)
        self._last_loud = 0
        self._quiet_secs = 0.0
        self._loud_secs = 0.0
        self._speculation: _Speculation | None = None
        self._segments: list[tuple[int, _Speculation | None]] = []
        self.speculative_hits = 0

    def _load(self):
        self._model = shared_whisper_model(
            self._model_name, compute_type=self._compute_type, cpu_threads=self._cpu_threads
        )
        unsupported = self._unsupported_language()
        if unsupported:
            raise ValueError(unsupported)

    def _transcribe(self, pcm: bytes) -> str:
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        return transcribe_trimmed(self._model, samples, language=self._language_code, prompt=self._prompt)

    async def _speculate(self, pcm: bytes, last_loud: int) -> str:
        text = await asyncio.to_thread(self._transcribe, pcm)
        spec = self._speculation
        if text and self._user_speaking and spec is not None and spec.last_loud == last_loud == self._last_loud:
            # Still quiet and the VAD has not called the stop yet: offer these
            # words so the reply can start before the turn ends.
            await self.push_frame(EagerTranscriptionFrame(text, self._user_id, time_now_iso8601()))
        return text

    async def process_audio_frame(self, frame, direction):
        """Buffer audio as pipecat does; start a speculative transcription in pauses."""
        await super().process_audio_frame(frame, direction)
        if not self._user_speaking or self._model is None:
            return
        samples = np.frombuffer(frame.audio, dtype=np.int16).astype(np.float32)
        dbfs = 20 * np.log10(np.sqrt(np.mean(samples**2)) / 32768.0 + 1e-9) if samples.size else -120.0
        secs = samples.size / self.sample_rate
        if dbfs > QUIET_DBFS:
            self._loud_secs += secs
            if self._quiet_secs >= SPECULATE_AFTER_QUIET_SECS and self._loud_secs < RESUME_AFTER_LOUD_SECS:
                # A blip in a pause (a plosive's release, a click) is not the
                # user speaking again: the speculation stays valid.
                return
            self._last_loud = len(self._audio_buffer)
            self._quiet_secs = 0.0
            return
        self._loud_secs = 0.0
        self._quiet_secs += secs
        if self._quiet_secs >= SPECULATE_AFTER_QUIET_SECS and (
            self._speculation is None or self._speculation.last_loud != self._last_loud
        ):
            pcm = bytes(self._audio_buffer)
            self._speculation = _Speculation(
                self._last_loud, self.create_task(self._speculate(pcm, self._last_loud))
            )

    async def _handle_user_stopped_speaking(self, frame):
        # Remember whether the pause's speculation covers this whole segment.
        spec = self._speculation
        valid = spec if spec is not None and spec.last_loud == self._last_loud else None
        self._segments.append((self._last_loud, valid))
        self._last_loud, self._quiet_secs, self._loud_secs, self._speculation = 0, 0.0, 0.0, None
        await super()._handle_user_stopped_speaking(frame)

    async def run_stt(self, audio: bytes):
        """Transcribe one VAD-bounded utterance (16-bit PCM at 16 kHz)."""
        if self._model is None:
            yield ErrorFrame("Whisper model not available")
            return
        _, speculation = self._segments.pop(0) if self._segments else (0, None)
        await self.start_processing_metrics()
        text = None
        if speculation is not None:
            try:
                text = await speculation.task
                self.speculative_hits += 1
            except (RuntimeError, ValueError) as e:
                logger.warning(f"{self}: speculative transcription failed ({e}); transcribing again")
        if text is None:
            text = await asyncio.to_thread(self._transcribe, audio)
        await self.stop_processing_metrics()
        if text:
            logger.debug(f"{self}: transcription [{text}]")
            language = Language(self._language_code) if self._language_code else None
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language)
        yield UtteranceTranscribedFrame(text=text)
