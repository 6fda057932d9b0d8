"""Where the replica's voice is on the playback clock, and the mouth it needs.

The TTS hands audio over faster than real time; the output transport plays
it at real time, one chunk after another. :class:`SpeechTrack` models that
queue: a chunk handed downstream at time ``now`` starts playing when the
audio before it has finished, or at ``now`` if nothing is playing. Each
piece of audio gets a place on the wall clock, and the mouth for any wall
time is read from the phoneme timing of the audio playing then (or, without
phoneme timing, from the loudness of that audio).

All times are seconds on a clock the caller passes in, so the track can be
driven faster than real time in tests and offline rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.replica.visemes import MouthCurve, REST, phoneme_segments

_ENV_HOP_S = 0.01  # loudness envelope resolution
_QUIET_DB = -48.0  # at or below this, the envelope is 0
_LOUD_DB = -15.0  # at or above this, the envelope is 1


@dataclass
class _PlaybackRun:
    """Audio played back to back: stream seconds ``[stream_start, stream_start + duration)``."""

    stream_start: float
    wall_start: float
    duration: float

    @property
    def wall_end(self) -> float:
        return self.wall_start + self.duration


def loudness_envelope(audio: np.ndarray, sample_rate: int, hop_s: float = _ENV_HOP_S) -> np.ndarray:
    """Loudness of mono int16 audio per hop, mapped to 0..1 on a dB scale."""
    hop = max(1, int(round(sample_rate * hop_s)))
    n = len(audio) // hop
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    frames = audio[: n * hop].astype(np.float32).reshape(n, hop) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1) + 1e-12)
    db = 20.0 * np.log10(rms)
    return np.clip((db - _QUIET_DB) / (_LOUD_DB - _QUIET_DB), 0.0, 1.0).astype(np.float32)


def mouth_from_loudness(envelope: float) -> np.ndarray:
    """Mouth shape for speech whose phonemes are unknown, from its loudness."""
    e = float(envelope)
    return np.array([0.85 * e**1.3, 0.15 - 0.25 * e, min(1.0, 1.6 * e) * 0.55, 0.0, 0.0], dtype=np.float32)


class SpeechTrack:
    """Audio and phoneme timing placed on the playback clock.

    Args:
        latency_s: Time from handing audio downstream to it being heard,
            added to the start of each run of speech.
    """

    def __init__(self, *, latency_s: float = 0.0):
        self._latency_s = latency_s
        self.clear()

    def clear(self) -> None:
        """Forget all queued speech (an interruption, or the end of a turn)."""
        self._runs: list[_PlaybackRun] = []
        self._curves: list[tuple[float, MouthCurve]] = []
        self._envelope = np.zeros(0, dtype=np.float32)
        self._leftover = np.zeros(0, dtype=np.int16)
        self._leftover_rate = 0
        self._stream_end = 0.0
        self._anchored = True

    @property
    def playback_end(self) -> float:
        """Wall time at which the queued audio has finished playing."""
        return self._runs[-1].wall_end if self._runs else float("-inf")

    def is_speaking(self, now: float) -> bool:
        """Whether queued audio is playing at ``now``."""
        return self._run_at(now) is not None

    def add_phonemes(self, phonemes: list[tuple[str, int]], sample_rate: int) -> None:
        """Phoneme timing for the audio that will be added next."""
        segments = phoneme_segments(phonemes, sample_rate)
        if segments:
            self._curves.append((self._stream_end, MouthCurve(segments)))

    def add_audio(self, audio: bytes, sample_rate: int, num_channels: int, now: float) -> None:
        """Audio handed to the output transport at ``now``."""
        samples = np.frombuffer(audio, dtype=np.int16)
        if num_channels > 1:
            samples = samples[: len(samples) // num_channels * num_channels]
            samples = samples.reshape(-1, num_channels).mean(axis=1).astype(np.int16)
        if len(samples) == 0:
            return
        duration = len(samples) / sample_rate
        self._prune(now)
        if self._runs and self._runs[-1].wall_end >= now:
            self._runs[-1].duration += duration
        else:
            self._runs.append(_PlaybackRun(self._stream_end, now + self._latency_s, duration))
            self._anchored = False
        self._stream_end += duration
        self._add_envelope(samples, sample_rate)

    def playback_started(self, now: float) -> None:
        """The transport reports it started playing the newest run of speech.

        Moves that run (never earlier) to start at ``now`` if it was handed
        over less than half a second ago.
        """
        if self._anchored or not self._runs:
            return
        run = self._runs[-1]
        shift = now - run.wall_start
        if 0.0 < shift < 0.5:
            run.wall_start = now
        self._anchored = True

    def shape_at(self, now: float) -> tuple[np.ndarray, float]:
        """Mouth shape ``[open, width, teeth, tongue, press]`` and loudness (0..1) at ``now``."""
        run = self._run_at(now)
        if run is None:
            return REST.as_array(), 0.0
        s = run.stream_start + (now - run.wall_start)
        loudness = self._envelope_at(s)
        for offset, curve in reversed(self._curves):
            if offset <= s < offset + curve.end:
                shape = curve.shape_at(s - offset)
                shape[0] *= 0.55 + 0.6 * loudness
                return np.clip(shape, [0, -1, 0, 0, 0], [1, 1, 1, 1, 1]).astype(np.float32), loudness
        return mouth_from_loudness(loudness), loudness

    def _run_at(self, now: float) -> _PlaybackRun | None:
        for run in reversed(self._runs):
            if run.wall_start <= now < run.wall_end:
                return run
            if run.wall_end <= now:
                return None
        return None

    def _prune(self, now: float) -> None:
        while self._runs and self._runs[0].wall_end < now - 1.0:
            self._runs.pop(0)
        if not self._runs:
            self._reset_stream()

    def _reset_stream(self) -> None:
        # Phoneme timing waiting for its audio stays, moved to the new origin.
        pending = [(o - self._stream_end, c) for o, c in self._curves if o >= self._stream_end]
        self._curves = pending
        self._envelope = np.zeros(0, dtype=np.float32)
        self._leftover = np.zeros(0, dtype=np.int16)
        self._stream_end = 0.0

    def _add_envelope(self, samples: np.ndarray, sample_rate: int) -> None:
        if sample_rate != self._leftover_rate:
            self._leftover = np.zeros(0, dtype=np.int16)
            self._leftover_rate = sample_rate
        joined = np.concatenate([self._leftover, samples])
        hop = max(1, int(round(sample_rate * _ENV_HOP_S)))
        env = loudness_envelope(joined, sample_rate)
        self._leftover = joined[len(env) * hop :]
        self._envelope = np.concatenate([self._envelope, env])

    def _envelope_at(self, s: float) -> float:
        env = self._envelope
        if len(env) == 0:
            return 0.0
        # Triangular smoothing over +-30 ms: the audio ahead is already known.
        total = 0.0
        for dt, w in ((-0.03, 0.25), (-0.015, 0.5), (0.0, 1.0), (0.015, 0.5), (0.03, 0.25)):
            x = (s + dt) / _ENV_HOP_S - 0.5
            i = int(np.floor(x))
            f = x - i
            a = env[min(max(i, 0), len(env) - 1)]
            b = env[min(max(i + 1, 0), len(env) - 1)]
            total += w * (a * (1 - f) + b * f)
        return float(total / 2.5)
