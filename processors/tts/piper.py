"""Piper speech synthesis with phoneme timing for lip-sync."""

import asyncio
import json
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import onnxruntime
from loguru import logger
from piper import PiperConfig, PiperVoice, SynthesisConfig
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from processors.frames import PhonemeTimingFrame, SentenceEndFrame
from processors.tts.first_clause import FirstClauseTextAggregator

# How often (at most) a long synthesis tells pipecat its audio context is still in use.
KEEPALIVE_SECS = 1.0

_voices: dict[Path, PiperVoice] = {}
_voices_lock = threading.Lock()


# ONNX Runtime's threads for piper. Its default (one per core, spinning while
# they wait for work) suits an idle machine; but a reply's first chunk is made
# while llama-server writes the rest of the reply and the browser decodes the
# replica's video, and a spinning thread that loses its core holds up the
# other. bench/tts_contention.py, on two cores with the LLM writing, a
# process spinning and the replica rendered: first chunk 729 ms with the
# default against 587 ms with two threads that sleep (idle: 128 against 146).
PIPER_THREADS = 2
PIPER_SPIN = False


def piper_session_options(threads: int = PIPER_THREADS, spin: bool = PIPER_SPIN) -> onnxruntime.SessionOptions:
    """ONNX Runtime options for a piper voice: ``threads`` intra-op threads, spinning or sleeping when idle."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


def load_piper_voice(voice_path: Path, options: onnxruntime.SessionOptions | None = None) -> PiperVoice:
    """A piper voice (``.onnx`` beside its ``.onnx.json``) that also outputs phoneme alignments.

    As ``PiperVoice.load(include_alignments=True)`` (the model patched in
    memory), on a session with ``options`` (default ``piper_session_options()``).
    """
    import onnx
    from piper.patch_voice_with_alignment import add_alignment_output

    voice_path = Path(voice_path)
    config = json.loads(Path(f"{voice_path}.json").read_text(encoding="utf-8"))
    model: str | bytes = str(voice_path)
    proto = onnx.load(str(voice_path))
    try:
        add_alignment_output(proto)
        model = proto.SerializeToString()
    except ValueError:  # already patched on disk
        pass
    session = onnxruntime.InferenceSession(
        model, sess_options=options or piper_session_options(), providers=["CPUExecutionProvider"]
    )
    return PiperVoice(config=PiperConfig.from_dict(config), session=session)


def shared_piper_voice(voice_path: Path) -> PiperVoice:
    """Load a piper voice (``load_piper_voice``) once per process."""
    voice_path = Path(voice_path)
    with _voices_lock:
        if voice_path not in _voices:
            logger.debug(f"Loading piper voice {voice_path.name}")
            _voices[voice_path] = load_piper_voice(voice_path)
        return _voices[voice_path]


def synthesize_with_timing(voice_path: Path, text: str):
    """Whole-text synthesis off the pipeline: int16 audio, its sample rate, and
    ``(phoneme, num_samples)`` timing for all of it (for offline rendering,
    benchmarks and tests)."""
    import numpy as np

    voice = shared_piper_voice(voice_path)
    audio, phonemes, rate = [], [], voice.config.sample_rate
    for chunk in voice.synthesize(text, include_alignments=True):
        rate = chunk.sample_rate
        audio.append(chunk.audio_int16_array)
        phonemes += [(a.phoneme, int(a.num_samples)) for a in chunk.phoneme_alignments or []]
    return np.concatenate(audio), rate, phonemes


# Text ending in punctuation is followed by a pause in speech.
SPOKEN_PAUSE = re.compile(r"[.,;:!?…][\"')\]]*\s*$")

# Piper pads each utterance with 40-170 ms of near-silence before the first
# sound; at the start of a reply that is pure latency.
QUIET_DBFS = -50.0
KEEP_LEAD_S = 0.01
# A piece cut mid-sentence (no punctuation at its end) keeps this much of its
# trailing silence, so the next piece follows like the rest of the sentence.
KEEP_TAIL_MID_SENTENCE_S = 0.06


def silence_to_trim(audio, sample_rate: int, *, mid_sentence: bool) -> tuple[int, int]:
    """Samples of near-silence to cut from the start and the end of ``audio`` (int16)."""
    import numpy as np

    hop = max(1, sample_rate // 200)  # 5 ms
    usable = len(audio) - len(audio) % hop
    if usable == 0:
        return 0, 0
    frames = audio[:usable].astype(np.float32).reshape(-1, hop) / 32768.0
    dbfs = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    loud = np.flatnonzero(dbfs > QUIET_DBFS)
    if loud.size == 0:
        return 0, 0
    lead = max(0, int(loud[0]) * hop - int(KEEP_LEAD_S * sample_rate))
    tail = 0
    if mid_sentence:
        end = (int(loud[-1]) + 1) * hop + int(KEEP_TAIL_MID_SENTENCE_S * sample_rate)
        tail = max(0, len(audio) - end)
    return lead, tail


def shift_phonemes(phonemes: list[tuple[str, int]], cut: int) -> list[tuple[str, int]]:
    """Phoneme timing after ``cut`` samples were removed from the start."""
    out = []
    for phoneme, samples in phonemes:
        take = min(cut, samples)
        cut -= take
        if samples - take > 0:
            out.append((phoneme, samples - take))
    return out


class PiperPhonemeTTSService(TTSService):
    """Local piper TTS that also reports when each phoneme is spoken.

    For every sentence it pushes a ``PhonemeTimingFrame`` followed by the
    sentence's audio, so the replica renderer can shape the mouth exactly.

    Args:
        voice_path: The voice's ``.onnx`` file.
        speed: Speaking rate; 1.0 is the voice's own, 1.2 is 20 % faster.
        noise_scale: Piper's phoneme noise (expressiveness); ``None`` keeps the voice's.
        noise_w: Piper's phoneme width noise; ``None`` keeps the voice's.
        first_chunk_hold: Called for each reply's first chunk, an async
            context manager that is held while piper makes it (the embedded
            LLM server pauses then: on two busy cores a first chunk took
            615 ms beside the LLM writing and 360 ms with it paused,
            ``bench/tts_contention.py``). ``None``: nothing is held.
        **kwargs: Passed to ``TTSService``.
    """

    Settings = TTSSettings

    def __init__(
        self,
        *,
        voice_path: Path,
        speed: float = 1.0,
        noise_scale: float | None = None,
        noise_w: float | None = None,
        first_chunk_hold: Callable[[], AbstractAsyncContextManager] | None = None,
        **kwargs,
    ):
        if speed <= 0:
            raise ValueError(f"voice_settings.speed must be > 0, got {speed}")
        voice_path = Path(voice_path)
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=self.Settings(model=None, voice=voice_path.stem, language=None),
            **kwargs,
        )
        # Speak the first clause of each reply as soon as the LLM has written it.
        self._text_aggregator = FirstClauseTextAggregator(aggregation_type=self._text_aggregation_mode)
        self._voice = shared_piper_voice(voice_path)
        self._syn_config = SynthesisConfig(
            length_scale=1.0 / speed, noise_scale=noise_scale, noise_w_scale=noise_w
        )
        self._first_chunk_hold = first_chunk_hold
        self._held_context: str | None = None  # the reply whose first chunk was made under the hold

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """As ``TTSService``; a whole sentence vouched for by the reply's shaper is spoken without lookahead."""
        if isinstance(frame, SentenceEndFrame) and direction == FrameDirection.DOWNSTREAM:
            sentence = self._text_aggregator.take_sentence()
            if sentence is not None:
                await self.stop_text_aggregation_metrics()
                await self._handle_aggregated_text(self._aggregated_text_frame(sentence))
        await super().process_frame(frame, direction)

    def can_generate_metrics(self) -> bool:
        """Piper reports TTFB and usage metrics."""
        return True

    async def _sentences(self, text: str, context_id: str) -> AsyncIterator[tuple[object, bool]]:
        """Piper's audio for ``text`` one sentence at a time, each with whether it is the last.

        Each sentence is synthesised in a worker thread as soon as the one
        before it is handed on, so the first sentence plays while the next is
        made. While piper works, the audio context is kept alive: on a busy
        machine a sentence can take longer than pipecat's stop-frame timeout,
        which would otherwise close the context as one "with no audio".
        """
        sentences = iter(self._voice.synthesize(text, self._syn_config, include_alignments=True))

        keepalive_secs = min(KEEPALIVE_SECS, self._stop_frame_timeout_s / 3)

        async def next_sentence():
            work = asyncio.ensure_future(asyncio.to_thread(next, sentences, None))
            while not work.done():
                await asyncio.wait({work}, timeout=keepalive_secs)
                self._refresh_audio_context(context_id)
            return work.result()

        # Only a text that stops mid-sentence needs to know its last sentence
        # (to cut its trailing pause); then look one sentence ahead.
        look_ahead = not SPOKEN_PAUSE.search(text)
        if self._first_chunk_hold is not None and context_id != self._held_context:
            # A reply's first words: the user is waiting for them.
            self._held_context = context_id
            async with self._first_chunk_hold():
                chunk = await next_sentence()
        else:
            chunk = await next_sentence()
        while chunk is not None:
            following = await next_sentence() if look_ahead else None
            last = following is None if look_ahead else False
            yield chunk, last
            chunk = following if look_ahead else await next_sentence()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Synthesize ``text`` sentence by sentence, timing first, then audio."""
        logger.debug(f"{self}: Generating TTS [{text}]")
        try:
            await self.start_tts_usage_metrics(text)
            async for chunk, last in self._sentences(text, context_id):
                audio = chunk.audio_int16_array
                # The first sound starts at once; a piece cut mid-sentence
                # runs straight into the next one.
                mid_sentence = last
                lead, tail = silence_to_trim(audio, chunk.sample_rate, mid_sentence=mid_sentence)
                audio = audio[lead : len(audio) - tail]
                if chunk.phoneme_alignments:
                    phonemes = [(a.phoneme, int(a.num_samples)) for a in chunk.phoneme_alignments]
                    yield PhonemeTimingFrame(
                        phonemes=shift_phonemes(phonemes, lead),
                        sample_rate=chunk.sample_rate,
                        context_id=context_id,
                    )

                async def one_chunk(data: bytes = audio.tobytes()) -> AsyncIterator[bytes]:
                    yield data

                async for frame in self._stream_audio_frames_from_iterator(
                    one_chunk(), in_sample_rate=chunk.sample_rate, context_id=context_id
                ):
                    await self.stop_ttfb_metrics()
                    yield frame
        except (RuntimeError, ValueError, OSError) as e:
            logger.error(f"{self}: synthesis failed: {e}")
            yield ErrorFrame(error=f"piper synthesis failed: {e}")
        finally:
            await self.stop_ttfb_metrics()
