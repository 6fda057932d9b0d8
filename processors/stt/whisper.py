"""Whisper speech recognition on a model loaded once per process.

Whisper is trained on 30-second windows, and faster-whisper pads every
utterance to one; on two CPU cores the encoder then costs about 0.8 s for a
3 s question, whatever its length. CTranslate2's encoder also takes shorter
inputs, so ``transcribe_trimmed`` encodes only the utterance plus a second of
silence and decodes greedily: the same words, about five times sooner. Audio
longer than 28 s takes faster-whisper's own path.
"""

import threading

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from loguru import logger
from pipecat.frames.frames import ErrorFrame, TranscriptionFrame
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

SAMPLE_RATE = 16000
TAIL_SILENCE_SECS = 1.0
MAX_TRIMMED_SECS = 28.0

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
        The text, stripped; empty for silence or noise.
    """
    if len(audio) / SAMPLE_RATE > MAX_TRIMMED_SECS:
        segments, _ = model.transcribe(audio, language=language, initial_prompt=prompt, beam_size=1)
        return " ".join(s.text.strip() for s in segments if s.no_speech_prob < no_speech_threshold)
    padded = np.concatenate([audio.astype(np.float32), np.zeros(int(TAIL_SILENCE_SECS * SAMPLE_RATE), np.float32)])
    features = model.feature_extractor(padded)
    frames = features.shape[-1] - features.shape[-1] % 2  # the encoder's convolution halves it
    features = np.ascontiguousarray(features[np.newaxis, :, :frames], dtype=np.float32)
    multilingual = model.model.is_multilingual
    if language is None and multilingual:
        encoded = model.encode(features)
        language = model.model.detect_language(encoded)[0][0][0].strip("<|>")
    else:
        encoded = model.encode(features)
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
        return_no_speech_prob=True,
        suppress_blank=True,
        repetition_penalty=1.05,
        no_repeat_ngram_size=0,
    )[0]
    if result.no_speech_prob > no_speech_threshold:
        return ""
    ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    return tokenizer.decode(ids).strip()


class LocalWhisperSTTService(WhisperSTTService):
    """Whisper on a shared local model, transcribing each utterance with a trimmed window.

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

    def _load(self):
        self._model = shared_whisper_model(
            self._model_name, compute_type=self._compute_type, cpu_threads=self._cpu_threads
        )
        unsupported = self._unsupported_language()
        if unsupported:
            raise ValueError(unsupported)

    async def run_stt(self, audio: bytes):
        """Transcribe one VAD-bounded utterance (16-bit PCM at 16 kHz)."""
        import asyncio

        if self._model is None:
            yield ErrorFrame("Whisper model not available")
            return
        await self.start_processing_metrics()
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        text = await asyncio.to_thread(
            transcribe_trimmed, self._model, samples, language=self._language_code, prompt=self._prompt
        )
        await self.stop_processing_metrics()
        if text:
            logger.debug(f"{self}: transcription [{text}]")
            language = Language(self._language_code) if self._language_code else None
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), language)
