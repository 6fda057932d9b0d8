"""Whisper on real human speech (LibriVox clips from pocketsphinx-testdata)."""

import numpy as np
import pytest
import soundfile
from pipecat.frames.frames import TranscriptionFrame

from processors.stt.whisper import LocalWhisperSTTService, shared_whisper_model
from processors.weights import whisper_model
from tests.speech import word_error_rate

pytestmark = pytest.mark.models


async def transcribe(service: LocalWhisperSTTService, path) -> str:
    audio, rate = soundfile.read(str(path), dtype="int16")
    assert rate == 16000
    texts = [f.text async for f in service.run_stt(audio.tobytes()) if isinstance(f, TranscriptionFrame)]
    return " ".join(texts)


async def test_whisper_base_word_error_rate_on_read_speech(settings, librivox):
    service = LocalWhisperSTTService(model=whisper_model(None, cache_dir=settings.cvi_cache_dir))
    refs, hyps = [], []
    for path, reference in librivox.items():
        refs.append(reference)
        hyps.append(await transcribe(service, path))
    wer = word_error_rate(refs, hyps)
    print(f"Whisper base WER on {len(refs)} LibriVox clips: {wer:.1%}")
    assert wer < 0.08, list(zip(refs, hyps))


def test_models_are_loaded_once_per_process(settings):
    path = whisper_model(None, cache_dir=settings.cvi_cache_dir)
    assert shared_whisper_model(path) is shared_whisper_model(path)
    first = LocalWhisperSTTService(model=path)
    second = LocalWhisperSTTService(model=path)
    assert first._model is second._model


async def test_silence_gives_no_transcript(settings):
    service = LocalWhisperSTTService(model=whisper_model(None, cache_dir=settings.cvi_cache_dir))
    silence = np.zeros(16000 * 2, dtype=np.int16).tobytes()
    assert [f async for f in service.run_stt(silence) if isinstance(f, TranscriptionFrame)] == []


def _frames(audio: np.ndarray, chunk: int = 320):
    from pipecat.frames.frames import InputAudioRawFrame

    return [
        InputAudioRawFrame(audio=audio[i : i + chunk].tobytes(), sample_rate=16000, num_channels=1)
        for i in range(0, len(audio) - chunk + 1, chunk)
    ]


async def _segment(service, *parts: np.ndarray) -> str:
    from pipecat.frames.frames import VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame
    from pipecat.tests.utils import run_test

    frames = [VADUserStartedSpeakingFrame(start_secs=0.2)]
    for part in parts:
        frames += _frames(part)
    frames.append(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    down, _ = await run_test(service, frames_to_send=frames)
    return " ".join(f.text for f in down if isinstance(f, TranscriptionFrame))


async def test_a_pause_starts_a_transcription_that_becomes_the_final_one(settings, librivox):
    from tests.speech import word_error_rate

    service = LocalWhisperSTTService(model=whisper_model(None, cache_dir=settings.cvi_cache_dir))
    path = next(p for p in librivox if p.name.endswith("0930.wav"))
    speech, _ = soundfile.read(str(path), dtype="int16")
    pause = np.zeros(16000 * 3 // 10, dtype=np.int16)
    text = await _segment(service, speech, pause)
    assert service.speculative_hits == 1
    assert word_error_rate([librivox[path]], [text]) < 0.1, text


async def test_speech_after_the_pause_discards_the_speculation(settings, librivox):
    service = LocalWhisperSTTService(model=whisper_model(None, cache_dir=settings.cvi_cache_dir))
    first = next(p for p in librivox if p.name.endswith("0880.wav"))
    second = next(p for p in librivox if p.name.endswith("0930.wav"))
    a, _ = soundfile.read(str(first), dtype="int16")
    b, _ = soundfile.read(str(second), dtype="int16")
    pause = np.zeros(16000 * 15 // 100, dtype=np.int16)
    text = await _segment(service, a, pause, b, pause)
    # The last pause's speculation covers all of it; the first one's was dropped.
    assert "disposed" in text.lower() and "amiable" in text.lower(), text


async def test_a_blip_in_the_pause_keeps_the_speculation(settings, librivox):
    # A plosive's release or a click: 20 ms of sound after the pause began.
    service = LocalWhisperSTTService(model=whisper_model(None, cache_dir=settings.cvi_cache_dir))
    path = next(p for p in librivox if p.name.endswith("0930.wav"))
    speech, _ = soundfile.read(str(path), dtype="int16")
    blip = (np.random.default_rng(0).normal(0, 3000, 320)).astype(np.int16)
    # The VAD stop comes 20 ms after the blip: too soon for a second speculation.
    text = await _segment(service, speech, np.zeros(1600, dtype=np.int16), blip, np.zeros(320, dtype=np.int16))
    assert service.speculative_hits == 1, "the blip should not have discarded the speculation"
    assert text


async def test_no_repetition_loops_on_short_questions_in_several_voices(settings):
    # Greedy decoding on a trimmed window looped on about one in ten of these
    # ("I love seafood I love seafood I love seafood ..."); guarded, none may.
    from processors.stt.whisper import transcribe_trimmed
    from tests.bot.test_multi_sentence_turns import HELD_OUT, TUNING, repeated
    from tests.voices import VOICES, spoken

    model = shared_whisper_model(whisper_model(None, cache_dir=settings.cvi_cache_dir))
    sentences = sorted({s for question, _, _ in TUNING + HELD_OUT for s in question})
    voices = list(VOICES.items())
    looped = []
    for i, sentence in enumerate(sentences):
        for name, voice in voices[i % 2 :: 2]:  # four voices each, alternating
            audio = spoken([sentence], voice, pause_secs=0).astype(np.float32) / 32768.0
            text = transcribe_trimmed(model, audio, prompt="Lisbon, Alfama, Belem, Sintra")
            if repeated(text) or len(text.split()) > 2 * len(sentence.split()) + 2:
                looped.append((name, sentence, text))
    print(f"{len(sentences) * len(VOICES) // 2} transcriptions, {len(looped)} looping")
    assert not looped, looped
