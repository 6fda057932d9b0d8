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
