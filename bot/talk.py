"""One turn, headless: a recorded utterance in, the replica's spoken reply out.

The same pipeline and engines as a live call run on a file transport: the
input plays the recording in real time (so VAD and turn taking behave as
they do live), the output records what the bot says instead of sending it.
"""

import asyncio
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
import soxr
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMFullResponseEndFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from bot.engines import EmbeddedModels, check_persona
from bot.pipeline import AUDIO_IN_SAMPLE_RATE, AUDIO_OUT_SAMPLE_RATE, Conversation, ConversationBot
from bot.settings import Settings
from personas import load_persona
from processors.frames import PhonemeTimingFrame

CHUNK_SECS = 0.02


class TalkInputError(ValueError):
    """The input recording cannot be used; the message says why."""


def read_speech(path: Path, *, sample_rate: int = AUDIO_IN_SAMPLE_RATE) -> np.ndarray:
    """Read any soundfile-readable recording as mono int16 at ``sample_rate``."""
    path = Path(path)
    if not path.is_file():
        raise TalkInputError(f"--wav {path}: no such file")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
        raise TalkInputError(f"--wav {path}: not a readable audio file ({e})") from e
    if data.shape[0] == 0:
        raise TalkInputError(f"--wav {path}: the recording is empty")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate)
    return (np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)


class WavInputTransport(BaseInputTransport):
    """Plays a recording as the user's microphone, in real time, then silence.

    A short silence goes first, as from a microphone that is open before the
    user speaks: a recording whose first word starts at once (espeak-ng's do)
    would otherwise lose it while the VAD takes its first reading.
    """

    def __init__(
        self, speech: np.ndarray, params: TransportParams, *, lead_secs: float = 0.5, tail_secs: float = 30.0
    ):
        super().__init__(params)
        self._speech = speech
        self._lead_secs = lead_secs
        self._tail_secs = tail_secs
        self._feed_task = None

    async def start(self, frame: StartFrame):
        """Start feeding audio once the pipeline starts."""
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._feed_task = self.create_task(self._feed())

    async def _feed(self):
        chunk = int(AUDIO_IN_SAMPLE_RATE * CHUNK_SECS)
        lead = np.zeros(int(AUDIO_IN_SAMPLE_RATE * self._lead_secs), dtype=np.int16)
        tail = np.zeros(int(AUDIO_IN_SAMPLE_RATE * self._tail_secs), dtype=np.int16)
        audio = np.concatenate([lead, self._speech, tail])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, offset in enumerate(range(0, len(audio), chunk)):
            piece = audio[offset : offset + chunk]
            await self.push_audio_frame(
                InputAudioRawFrame(audio=piece.tobytes(), sample_rate=AUDIO_IN_SAMPLE_RATE, num_channels=1)
            )
            delay = start + (i + 1) * CHUNK_SECS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def cleanup(self):
        """Stop feeding."""
        if self._feed_task is not None:
            await self.cancel_task(self._feed_task)
            self._feed_task = None
        await super().cleanup()


@dataclass
class Recording:
    """What the bot said: 24 kHz mono audio and phoneme timing at that rate."""

    pcm: bytearray = field(default_factory=bytearray)
    phonemes: list[tuple[str, int]] = field(default_factory=list)
    timed_samples: int = 0

    @property
    def samples(self) -> int:
        """Audio length in samples."""
        return len(self.pcm) // 2

    def add_timing(self, frame: PhonemeTimingFrame) -> None:
        """Append a sentence's phonemes, rescaled to the output rate.

        Audio without timing (before this sentence) is padded as a pause so
        the timeline stays aligned with the audio.
        """
        if self.samples > self.timed_samples:
            self.phonemes.append((" ", self.samples - self.timed_samples))
            self.timed_samples = self.samples
        scale = AUDIO_OUT_SAMPLE_RATE / frame.sample_rate
        total_in = 0
        for phoneme, count in frame.phonemes:
            start = round(total_in * scale)
            total_in += count
            n = round(total_in * scale) - start
            self.phonemes.append((phoneme, n))
            self.timed_samples += n


class RecordingOutputTransport(BaseOutputTransport):
    """Keeps the bot's audio (and phoneme timing) instead of playing it.

    ``done`` is set when the first full reply has been synthesised.
    """

    def __init__(self, params: TransportParams):
        super().__init__(params)
        self.recording = Recording()
        self.done = asyncio.Event()
        self._reply_ended = False
        self._tts_stopped = False

    async def start(self, frame: StartFrame):
        """Ready at once."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Record audio and timing in the order they arrive, then pass on."""
        if isinstance(frame, TTSAudioRawFrame):
            self.recording.pcm.extend(frame.audio)
        elif isinstance(frame, PhonemeTimingFrame):
            self.recording.add_timing(frame)
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._reply_ended = True
        elif isinstance(frame, TTSStoppedFrame) and self.recording.samples:
            self._tts_stopped = True
        if self._reply_ended and self._tts_stopped:
            self.done.set()
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Take the frame without real-time pacing."""
        return True


class FileTransport(BaseTransport):
    """A recording in, the bot's speech recorded out."""

    def __init__(self, speech: np.ndarray):
        super().__init__()
        params = TransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=AUDIO_IN_SAMPLE_RATE,
            audio_out_enabled=True,
            audio_out_sample_rate=AUDIO_OUT_SAMPLE_RATE,
        )
        self._input = WavInputTransport(speech, params)
        self._output = RecordingOutputTransport(params)

    def input(self) -> WavInputTransport:
        """The microphone side."""
        return self._input

    def output(self) -> RecordingOutputTransport:
        """The speaker side."""
        return self._output


@dataclass
class TalkResult:
    """One turn's outcome."""

    transcript: str
    reply: str
    timings_ms: dict[str, float | None]
    audio: np.ndarray
    phonemes: list[tuple[str, int]]
    sample_rate: int = AUDIO_OUT_SAMPLE_RATE

    def as_json(self) -> dict:
        """The ``--json`` document."""
        return {"transcript": self.transcript, "reply": self.reply, "timings_ms": self.timings_ms}


async def talk_once(
    wav: Path,
    *,
    persona_name: str,
    settings: Settings,
    models: EmbeddedModels,
    timeout_secs: float = 120.0,
) -> TalkResult:
    """Run one recorded utterance through the pipeline and return the reply."""
    speech = read_speech(wav)
    persona = load_persona(persona_name)
    check_persona(persona, settings, name=persona_name)
    if persona.pipeline_mode == "echo":
        raise TalkInputError(
            f"persona {persona_name!r} has pipeline_mode='echo': it hears nothing and says only what "
            "conversation.echo sends; talk needs a persona with pipeline_mode='full'"
        )
    await models.prepare(persona)
    transport = FileTransport(speech)
    bot = ConversationBot(
        conversation=Conversation(persona=persona, persona_name=persona_name, greet=False),
        transport=transport,
        settings=settings,
        models=models,
        render_video=False,
    )
    await bot.build()
    run = asyncio.create_task(bot.run())
    done = asyncio.create_task(transport.output().done.wait())
    try:
        finished, _ = await asyncio.wait({run, done}, timeout=timeout_secs, return_when=asyncio.FIRST_COMPLETED)
        if run in finished:
            run.result()  # surfaces a pipeline crash
        if done not in finished:
            raise TimeoutError(f"no reply within {timeout_secs:.0f} s (was there speech in the recording?)")
    finally:
        done.cancel()
        await bot.stop()
        await asyncio.gather(run, return_exceptions=True)
    turn = bot.turns[0] if bot.turns else None
    if turn is not None and "total" not in turn.marks:
        # No real playback here: the reply "starts" when its first audio exists.
        turn.marks["total"] = turn.marks.get("tts_first_audio", turn.marks.get("end_of_turn", 0.0))
    recording = transport.output().recording
    audio = np.frombuffer(bytes(recording.pcm), dtype=np.int16).copy()
    return TalkResult(
        transcript=turn.transcript if turn else "",
        reply=turn.reply if turn else "",
        timings_ms=turn.timings_ms() if turn else {},
        audio=audio,
        phonemes=recording.phonemes,
    )


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono int16 audio as a WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(audio.astype(np.int16).tobytes())
