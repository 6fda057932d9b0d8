"""Piper with phoneme timing: synthesise, check the timing, transcribe it back."""

import time

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from processors.frames import PhonemeTimingFrame
from processors.stt.whisper import LocalWhisperSTTService
from processors.tts.piper import QUIET_DBFS, PiperPhonemeTTSService
from processors.weights import piper_voice, whisper_model
from tests.speech import word_error_rate

pytestmark = pytest.mark.models

PASSAGE = (
    "The old city is built on seven hills above the river. "
    "Take the yellow tram up to the castle, then walk down the narrow streets for grilled fish and fresh bread."
)


async def synthesise(settings, text: str, **voice_settings) -> tuple[np.ndarray, int, list[PhonemeTimingFrame]]:
    tts = PiperPhonemeTTSService(voice_path=piper_voice(None, cache_dir=settings.cvi_cache_dir), **voice_settings)
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame(text)])
    audio_frames = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    timing = [f for f in down if isinstance(f, PhonemeTimingFrame)]
    assert audio_frames, "no audio came out"
    rate = audio_frames[0].sample_rate
    audio = np.frombuffer(b"".join(f.audio for f in audio_frames), dtype=np.int16)
    return audio, rate, timing


async def test_round_trip_through_whisper(settings):
    audio, rate, timing = await synthesise(settings, PASSAGE)
    assert timing, "piper gave no phoneme timing"
    # Phoneme timing covers the audio it precedes (resampled from piper's rate).
    timed_secs = sum(n for f in timing for _, n in f.phonemes) / timing[0].sample_rate
    # Within 0.1 s over ~9 s (the streaming resampler keeps the last few ms of
    # each utterance; 50-73 ms has been seen): well under one video frame per sentence.
    assert timed_secs == pytest.approx(len(audio) / rate, abs=0.1)
    speech16k = soxr.resample(audio.astype(np.float32) / 32768, rate, 16000)
    stt = LocalWhisperSTTService(model=whisper_model(None, cache_dir=settings.cvi_cache_dir))
    pcm = (speech16k * 32767).astype(np.int16).tobytes()
    heard = " ".join([f.text async for f in stt.run_stt(pcm) if isinstance(f, TranscriptionFrame)])
    wer = word_error_rate([PASSAGE], [heard])
    print(f"piper -> whisper round trip WER {wer:.1%}: {heard!r}")
    assert wer <= 0.1


async def test_the_voice_runs_on_two_onnx_threads_that_sleep_when_idle(settings):
    # On two busy cores spinning threads slowed the first chunk (bench/tts_contention.py).
    tts = PiperPhonemeTTSService(voice_path=piper_voice(None, cache_dir=settings.cvi_cache_dir))
    options = tts._voice.session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # And it still gives phoneme timing.
    audio, rate, timing = await synthesise(settings, "Good morning.")
    assert len(audio) > 0.3 * rate and timing and timing[0].phonemes


async def test_speed_setting_changes_the_duration(settings):
    normal, rate, _ = await synthesise(settings, "Seven hills above the river.")
    slow, _, _ = await synthesise(settings, "Seven hills above the river.", speed=0.8)
    assert len(slow) / len(normal) == pytest.approx(1 / 0.8, rel=0.15)


def test_bad_speed_is_refused(settings):
    with pytest.raises(ValueError, match="speed"):
        PiperPhonemeTTSService(voice_path=piper_voice(None, cache_dir=settings.cvi_cache_dir), speed=0)


def first_and_last_sound_ms(audio: np.ndarray, rate: int, *, quiet_dbfs: float = -45.0) -> tuple[float, float]:
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].astype(np.float32).reshape(-1, hop) / 32768
    loud = np.flatnonzero(20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9) > quiet_dbfs)
    return loud[0] * 10.0, (len(frames) - loud[-1] - 1) * 10.0


async def test_speech_starts_at_once_and_a_mid_sentence_piece_runs_on(settings):
    # Piper itself leads this with ~170 ms of near-silence.
    audio, rate, timing = await synthesise(settings, "I'd love to recommend pastel de nata")
    # (A soft onset may stay between -50 and -45 dBFS for a while: it is sound, and is kept.)
    lead, _ = first_and_last_sound_ms(audio, rate, quiet_dbfs=QUIET_DBFS)
    assert lead <= 50, f"{lead} ms of silence before the first sound"  # piper leads with ~170 ms; 40 ms seen once
    _, tail = first_and_last_sound_ms(audio, rate)
    assert tail <= 90, f"{tail} ms of silence after a piece cut mid-sentence"
    # The phoneme timing lost the cut lead too: it covers the audio plus at
    # most the cut tail (it would run ~0.17 s long had it kept the lead).
    timed_secs = sum(n for f in timing for _, n in f.phonemes) / timing[0].sample_rate
    assert 0 <= timed_secs - len(audio) / rate <= 0.15
    # A finished sentence keeps its pause.
    audio, rate, _ = await synthesise(settings, "Lisbon is lovely.")
    assert first_and_last_sound_ms(audio, rate)[1] >= 100  # piper varies: 110-170 ms seen


async def test_slow_synthesis_keeps_its_audio_context(settings):
    """A sentence that takes longer than pipecat's stop-frame timeout still plays, with no error.

    On a busy machine piper can take seconds per sentence; pipecat would close
    the context as one "with no audio" (and, three in a row, call the TTS
    unusable) unless the synthesis keeps it alive. Here the timeout is made far
    shorter than any real synthesis instead of making the machine slow.
    """
    from pipecat.frames.frames import ErrorFrame

    tts = PiperPhonemeTTSService(
        voice_path=piper_voice(None, cache_dir=settings.cvi_cache_dir), stop_frame_timeout_s=0.25
    )
    # One long sentence: ~12 s of speech, far more than 0.25 s to synthesise even on a fast machine.
    long_sentence = " ".join([PASSAGE.replace(".", ",")] * 2).rstrip(",") + "."
    down, up = await run_test(tts, frames_to_send=[TTSSpeakFrame(long_sentence)])
    errors = [f for f in [*down, *up] if isinstance(f, ErrorFrame)]
    assert not errors, errors
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    rate = next(f.sample_rate for f in down if isinstance(f, TTSAudioRawFrame))
    assert len(audio) / 2 / rate > 10.0, "the whole sentence should be spoken"


async def test_text_that_stops_mid_sentence_after_a_full_one(settings):
    """Sentence by sentence: only the unfinished last sentence loses its trailing pause."""
    audio, rate, _ = await synthesise(settings, "Lisbon is lovely. I'd love to recommend pastel de nata")
    _, tail = first_and_last_sound_ms(audio, rate)
    assert tail <= 90, f"{tail} ms of silence after a piece cut mid-sentence"


class _Tap(FrameProcessor):
    """Records when each frame of a kind passes."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.seen: list[tuple[float, Frame]] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, self.kind):
            self.seen.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


async def test_a_whole_sentence_is_spoken_while_the_llm_is_still_writing_the_next(settings):
    """The end of a sentence does not wait for the whole next one (a slow LLM left the voice silent seconds)."""
    from processors.llm.spoken_reply import SpokenReplyProcessor

    llm_out, voice = _Tap(LLMTextFrame), _Tap(PhonemeTimingFrame)
    tts = PiperPhonemeTTSService(voice_path=piper_voice(None, cache_dir=settings.cvi_cache_dir))
    first = "Lisbon is a lovely city to walk in. Sardines are".split()
    rest = "best in Alfama.".split()
    await run_test(
        Pipeline([llm_out, SpokenReplyProcessor(persona_name="Ava", max_tokens=90), tts, voice]),
        frames_to_send=[
            LLMFullResponseStartFrame(),
            *[LLMTextFrame(w + " ") for w in first],
            SleepFrame(3.0),  # the LLM is slow to finish the second sentence
            *[LLMTextFrame(w + " ") for w in rest],
            LLMFullResponseEndFrame(),
        ],
        expected_down_frames=None,
    )
    resumed_at = next(t for t, f in llm_out.seen if f.text == "best ")
    before = [f for t, f in voice.seen if t < resumed_at]
    spoken = "".join(p for f in before for p, _ in f.phonemes)
    # The first clause and the rest of the first sentence, both before the LLM goes on.
    assert len(before) == 2, [len(f.phonemes) for f in before]
    assert len(voice.seen) == 3
    assert "w" in spoken  # "walk"


async def test_each_replys_first_chunk_is_made_under_the_hold_and_the_rest_is_not(settings):
    """The bot pauses the embedded LLM while the words the user waits for are synthesised; only those."""
    import contextlib

    holding = []

    @contextlib.asynccontextmanager
    async def hold():
        holding.append(True)
        try:
            yield
        finally:
            holding.append(False)

    tts = PiperPhonemeTTSService(voice_path=piper_voice(None, cache_dir=settings.cvi_cache_dir), first_chunk_hold=hold)
    voice = tts._voice
    made: list[tuple[str, bool]] = []  # (sentence, made while held)

    class Recording:
        config = voice.config

        def synthesize(self, text, *args, **kwargs):
            for chunk in voice.synthesize(text, *args, **kwargs):
                made.append((text, bool(holding) and holding[-1]))
                yield chunk

    tts._voice = Recording()
    await run_test(tts, frames_to_send=[
        TTSSpeakFrame("Good morning. The castle opens at nine."), TTSSpeakFrame("Take the tram."),
    ])  # fmt: skip
    print(made)
    assert [held for _, held in made] == [True, False, True]
    assert holding == [True, False, True, False]
