"""Whisper speech recognition on a model loaded once per process."""

import threading

from faster_whisper import WhisperModel
from loguru import logger
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language

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
            _models[key] = WhisperModel(
                model, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads
            )
        return _models[key]


class LocalWhisperSTTService(WhisperSTTService):
    """pipecat's Whisper service on a shared, already-resolved local model.

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
        settings = WhisperSTTService.Settings(
            model=model,
            language=Language(language) if language else None,
            hotwords=" ".join(hotwords) if hotwords else None,
        )
        super().__init__(device="cpu", compute_type=compute_type, settings=settings, **kwargs)

    def _load(self):
        self._model = shared_whisper_model(
            self._model_name, compute_type=self._compute_type, cpu_threads=self._cpu_threads
        )
        unsupported = self._unsupported_language()
        if unsupported:
            raise ValueError(unsupported)
