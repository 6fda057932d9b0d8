"""Spoken test questions in several synthetic voices, none of them the bot's own.

Each sentence is synthesized on its own, trimmed of its leading and trailing
silence, and the sentences are joined with exactly the pause asked for, so a
"0.6 s pause" in a test is 0.6 s of silence between the last and the first
voiced sample. A faint noise floor (as from a real microphone) runs under all of it.
"""

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
NOISE_DBFS = -66.0
# Leading/trailing samples quieter than this are silence, not speech.
SILENCE_DBFS = -50.0


@dataclass(frozen=True)
class Voice:
    """A command line that writes ``text`` as a WAV file (``{text}``/``{out}`` are filled in)."""

    name: str
    command: tuple[str, ...]

    def synthesize(self, text: str) -> np.ndarray:
        """``text`` spoken in this voice: float32 mono at 16 kHz, silence trimmed."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "speech.wav"
            if self.command[0] == "text2wave":
                source = Path(tmp) / "text.txt"
                source.write_text(text + "\n")
                args = [a.format(text=str(source), out=str(out)) for a in self.command]
            else:
                args = [a.format(text=text, out=str(out)) for a in self.command]
            subprocess.run(args, check=True, capture_output=True, timeout=60)
            audio, rate = soundfile.read(str(out), dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        if rate != SAMPLE_RATE:
            mono = soxr.resample(mono, rate, SAMPLE_RATE)
        return trim_silence(mono)


VOICES = {
    voice.name: voice
    for voice in (
        Voice("espeak-us", ("espeak-ng", "-v", "en-us", "-s", "165", "-w", "{out}", "{text}")),
        Voice("espeak-gb-f3", ("espeak-ng", "-v", "en-gb+f3", "-s", "150", "-w", "{out}", "{text}")),
        Voice("espeak-scotland-m7", ("espeak-ng", "-v", "en-gb-scotland+m7", "-s", "175", "-w", "{out}", "{text}")),
        Voice("espeak-rp-f5", ("espeak-ng", "-v", "en-gb-x-rp+f5", "-s", "140", "-w", "{out}", "{text}")),
        Voice("flite-slt", ("flite", "-voice", "slt", "-t", "{text}", "-o", "{out}")),
        Voice("flite-awb", ("flite", "-voice", "awb", "-t", "{text}", "-o", "{out}")),
        Voice("flite-rms", ("flite", "-voice", "rms", "-t", "{text}", "-o", "{out}")),
        Voice("festival-slt-hts", ("text2wave", "-eval", "(voice_cmu_us_slt_arctic_hts)", "{text}", "-o", "{out}")),
    )
}


def trim_silence(audio: np.ndarray, *, frame: int = 160) -> np.ndarray:
    """``audio`` without its leading and trailing silence (10 ms frames under ``SILENCE_DBFS``)."""
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(rms + 1e-9) > SILENCE_DBFS)
    if loud.size == 0:
        return audio[:0]
    return audio[loud[0] * frame : (loud[-1] + 1) * frame]


def spoken(sentences: list[str], voice: Voice, *, pause_secs: float, seed: int = 0) -> np.ndarray:
    """``sentences`` in ``voice``, ``pause_secs`` of silence between them, as int16 at 16 kHz."""
    gap = np.zeros(int(pause_secs * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    for i, sentence in enumerate(sentences):
        if i:
            parts.append(gap)
        parts.append(voice.synthesize(sentence))
    audio = np.concatenate(parts)
    peak = np.abs(audio).max()
    audio = audio * (0.5 / peak)  # a comfortable microphone level
    noise = np.random.default_rng(seed).normal(0.0, 10 ** (NOISE_DBFS / 20), len(audio)).astype(np.float32)
    return (np.clip(audio + noise, -1.0, 1.0) * 32767).astype(np.int16)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    """Write int16 mono 16 kHz audio to ``path``."""
    soundfile.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")
    return path
