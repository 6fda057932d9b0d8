"""espeak-ng speech synthesis: an offline voice for every language piper's packaged voice does not speak.

Each sentence is spoken by its own ``espeak-ng`` process (Debian's
``espeak-ng`` package), so synthesis never holds the event loop or the GIL;
its WAV comes back on stdout and is streamed on as it arrives.
"""

import asyncio
import shutil
import struct
from collections.abc import AsyncGenerator, AsyncIterator

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

# espeak-ng's default rate, in words per minute; voice_settings.speed scales it.
DEFAULT_WORDS_PER_MINUTE = 175
# Bytes of audio handed on at a time (about 50 ms at espeak's 22050 Hz).
CHUNK_BYTES = 2205 * 2
WAV_HEADER_BYTES = 44


class EspeakUnavailableError(RuntimeError):
    """The ``espeak-ng`` program is missing; retrying will not help."""


def espeak_binary() -> str:
    """The ``espeak-ng`` program on PATH.

    Raises:
        EspeakUnavailableError: naming the Debian package that provides it.
    """
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakUnavailableError(
            "espeak-ng is not installed; it speaks every language but English offline "
            "(Debian package espeak-ng; scripts/setup.sh installs it)"
        )
    return path


def espeak_has_voice(voice: str) -> bool:
    """Whether the installed espeak-ng has ``voice`` (e.g. ``fr-fr``, ``cmn``)."""
    import subprocess

    out = subprocess.run([espeak_binary(), f"--voices={voice}"], capture_output=True, text=True, check=True).stdout
    return any(line.split()[1] == voice for line in out.splitlines()[1:] if len(line.split()) > 1)


class EspeakTTSService(TTSService):
    """Offline TTS through the ``espeak-ng`` program.

    Args:
        voice: An espeak-ng voice (``espeak-ng --voices`` lists them), e.g. ``fr-fr``.
        speed: Speaking rate; 1.0 is espeak-ng's 175 words per minute.
        **kwargs: Passed to ``TTSService``.
    """

    Settings = TTSSettings

    def __init__(self, *, voice: str, speed: float = 1.0, **kwargs):
        if speed <= 0:
            raise ValueError(f"voice_settings.speed must be > 0, got {speed}")
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=self.Settings(model=None, voice=voice, language=None),
            **kwargs,
        )
        self._binary = espeak_binary()
        self._voice = voice
        self._words_per_minute = round(DEFAULT_WORDS_PER_MINUTE * speed)

    def can_generate_metrics(self) -> bool:
        return True

    async def _wav_chunks(self, text: str) -> AsyncIterator[tuple[bytes, int]]:
        """``(pcm, sample_rate)`` pieces of espeak-ng's WAV for ``text`` as it writes them."""
        proc = await asyncio.create_subprocess_exec(
            self._binary, "-v", self._voice, "-s", str(self._words_per_minute), "--stdout",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            # The text goes on stdin: never read as options, whatever it starts with.
            proc.stdin.write(text.encode())
            proc.stdin.close()
            header = await proc.stdout.readexactly(WAV_HEADER_BYTES)
            if header[:4] != b"RIFF" or header[36:40] != b"data":
                raise RuntimeError("espeak-ng wrote no WAV")
            (sample_rate,) = struct.unpack("<I", header[24:28])
            pending = b""
            while chunk := await proc.stdout.read(CHUNK_BYTES):
                pending += chunk
                whole = len(pending) - len(pending) % 2
                if whole:
                    yield pending[:whole], sample_rate
                    pending = pending[whole:]
            if await proc.wait() != 0:
                stderr = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
                raise RuntimeError(f"espeak-ng exited with {proc.returncode}: {stderr[:200]}")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Speak ``text``, streaming espeak-ng's audio as it comes."""
        logger.debug(f"{self}: Generating TTS [{text}]")
        try:
            await self.start_tts_usage_metrics(text)
            async for pcm, sample_rate in self._wav_chunks(text):

                async def one_chunk(data: bytes = pcm) -> AsyncIterator[bytes]:
                    yield data

                async for frame in self._stream_audio_frames_from_iterator(
                    one_chunk(), in_sample_rate=sample_rate, context_id=context_id
                ):
                    await self.stop_ttfb_metrics()
                    yield frame
        except (RuntimeError, OSError, asyncio.IncompleteReadError) as e:
            logger.error(f"{self}: synthesis failed: {e}")
            yield ErrorFrame(error=f"espeak-ng synthesis failed: {e}")
        finally:
            await self.stop_ttfb_metrics()
