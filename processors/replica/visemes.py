"""Mouth shapes: espeak IPA phonemes to visemes, and visemes to smooth curves.

A mouth shape is five numbers (see :class:`MouthShape`). Phoneme timing
becomes a list of keyframes, one target shape per phoneme, and the shape at
any time is a smooth (ease-in-out) blend between the two keyframes around it,
so the mouth glides from one phoneme to the next instead of snapping.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from enum import Enum

import numpy as np


@dataclass(frozen=True)
class MouthShape:
    """Mouth pose, each value in a fixed range.

    Parameters:
        open: Jaw and lip opening, 0 (closed) to 1 (wide open).
        width: Lip corners, -1 (rounded, pursed) to 1 (spread, smile).
        teeth: How much of the upper teeth shows, 0 to 1.
        tongue: How much tongue shows at the front, 0 to 1.
        press: Lips pressed together (p, b, m), 0 to 1: closes even a
            portrait's open smile.
    """

    open: float = 0.0
    width: float = 0.0
    teeth: float = 0.0
    tongue: float = 0.0
    press: float = 0.0

    def as_array(self) -> np.ndarray:
        """The shape as a float32 vector ``[open, width, teeth, tongue, press]``."""
        return np.array([self.open, self.width, self.teeth, self.tongue, self.press], dtype=np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> MouthShape:
        """Build a shape from a ``[open, width, teeth, tongue(, press)]`` vector."""
        press = float(values[4]) if len(values) > 4 else 0.0
        return cls(float(values[0]), float(values[1]), float(values[2]), float(values[3]), press)


REST = MouthShape()


class Viseme(Enum):
    """Visible mouth classes, each with its target shape."""

    REST = MouthShape(0.0, 0.0, 0.0, 0.0)
    PBM = MouthShape(0.0, -0.05, 0.0, 0.0, 1.0)  # lips pressed
    FV = MouthShape(0.12, 0.15, 0.9, 0.0, 0.3)  # lower lip under upper teeth
    TH = MouthShape(0.22, 0.1, 0.7, 0.8)  # tongue between teeth
    DNL = MouthShape(0.28, 0.15, 0.6, 0.4)  # tongue behind teeth
    SZ = MouthShape(0.14, 0.45, 1.0, 0.0)  # teeth nearly together, spread
    KG = MouthShape(0.38, 0.05, 0.4, 0.0)  # back of the mouth, mid open
    SH = MouthShape(0.22, -0.55, 0.8, 0.0)  # rounded, teeth showing
    R = MouthShape(0.24, -0.4, 0.3, 0.0)
    W = MouthShape(0.12, -0.9, 0.0, 0.0)  # small rounded opening
    AA = MouthShape(0.95, 0.05, 0.5, 0.1)  # wide open
    E = MouthShape(0.55, 0.35, 0.6, 0.1)
    I = MouthShape(0.3, 0.75, 0.8, 0.0)  # noqa: E741 (the viseme's usual name)
    O = MouthShape(0.65, -0.7, 0.2, 0.0)


# Single espeak IPA symbols as piper aligns them (one symbol per entry;
# diphthongs and affricates come as two entries).
_IPA_TO_VISEME: dict[str, Viseme] = {}
for _symbols, _viseme in [
    ("pbm", Viseme.PBM),
    ("fv", Viseme.FV),
    ("θð", Viseme.TH),
    ("tdnlɾɫ", Viseme.DNL),
    ("sz", Viseme.SZ),
    ("kgŋhxʔ", Viseme.KG),
    ("ʃʒ", Viseme.SH),
    ("ɹɚɝr", Viseme.R),
    ("wʍuʊ", Viseme.W),
    ("ɑaæʌɐ", Viseme.AA),
    ("ɛeəɜᵻ", Viseme.E),
    ("iɪjy", Viseme.I),
    ("oɔɒ", Viseme.O),
]:
    for _symbol in _symbols:
        _IPA_TO_VISEME[_symbol] = _viseme

# Symbols that change the neighbouring phoneme instead of being one.
_STRESS_MARKS = frozenset("ˈˌ")
_LENGTH_MARKS = frozenset("ːˑ")
# Piper's sentence markers and padding.
_SILENCE_SYMBOLS = frozenset("^$_ ")


def viseme_for_phoneme(phoneme: str) -> Viseme:
    """Map one espeak IPA phoneme to its viseme.

    Spaces, punctuation, piper's ``^ $ _`` markers and empty strings are
    silence (``REST``). An IPA symbol outside the table gets a neutral,
    half-open shape (``E``) so that speech never freezes the mouth.
    """
    if not phoneme or phoneme in _SILENCE_SYMBOLS:
        return Viseme.REST
    first = phoneme[0]
    if first in _IPA_TO_VISEME:
        return _IPA_TO_VISEME[first]
    if not first.isalpha():
        return Viseme.REST
    return Viseme.E


def phoneme_segments(
    phonemes: list[tuple[str, int]], sample_rate: int
) -> list[tuple[float, float, Viseme]]:
    """Turn ``(phoneme, num_samples)`` pairs into ``(start_s, end_s, viseme)``.

    Stress marks give their time to the phoneme after them and length marks
    to the phoneme before them; neighbouring entries with the same viseme are
    merged.
    """
    segments: list[list] = []
    t = 0.0
    carry = 0.0  # time of stress marks waiting for the next phoneme
    for phoneme, num_samples in phonemes:
        duration = float(num_samples) / sample_rate
        if phoneme and phoneme[0] in _STRESS_MARKS:
            carry += duration
            continue
        if phoneme and phoneme[0] in _LENGTH_MARKS and segments:
            segments[-1][1] += duration
            t += duration
            continue
        viseme = viseme_for_phoneme(phoneme)
        start = t
        t += carry + duration
        carry = 0.0
        if segments and segments[-1][2] is viseme:
            segments[-1][1] = t
        else:
            segments.append([start, t, viseme])
    if carry and segments:
        segments[-1][1] += carry
    return [(s, e, v) for s, e, v in segments]


class MouthCurve:
    """Mouth shape over time for one run of phonemes.

    Keyframes sit at each phoneme's centre (long phonemes and pauses hold
    their shape between two keyframes); between keyframes the shape eases in
    and out (smoothstep), so it has no jumps.

    Args:
        segments: ``(start_s, end_s, viseme)`` as from :func:`phoneme_segments`.
    """

    _HOLD_S = 0.05

    def __init__(self, segments: list[tuple[float, float, Viseme]]):
        times: list[float] = []
        shapes: list[np.ndarray] = []
        for start, end, viseme in segments:
            target = viseme.value.as_array()
            if viseme is not Viseme.REST and end - start < 0.07:
                # A short phoneme only gets part of the way to its shape.
                target = target * (0.55 + 0.45 * (end - start) / 0.07)
            if end - start > 2 * self._HOLD_S + 0.02:
                points = [start + self._HOLD_S, end - self._HOLD_S]
            else:
                points = [(start + end) / 2]
            for p in points:
                times.append(p)
                shapes.append(target)
        self.start = segments[0][0] if segments else 0.0
        self.end = segments[-1][1] if segments else 0.0
        self._times = np.asarray(times, dtype=np.float64)
        self._shapes = np.asarray(shapes, dtype=np.float32).reshape(-1, 5)

    def shape_at(self, t: float) -> np.ndarray:
        """The ``[open, width, teeth, tongue, press]`` vector at ``t`` seconds."""
        if len(self._times) == 0:
            return REST.as_array()
        i = bisect.bisect_right(self._times, t)
        if i == 0:
            return self._ease(self.start, self._times[0], REST.as_array(), self._shapes[0], t)
        if i == len(self._times):
            return self._ease(self._times[-1], self.end, self._shapes[-1], REST.as_array(), t)
        return self._ease(self._times[i - 1], self._times[i], self._shapes[i - 1], self._shapes[i], t)

    @staticmethod
    def _ease(t0: float, t1: float, a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
        if t1 <= t0:
            return b.copy() if t >= t1 else a.copy()
        x = min(1.0, max(0.0, (t - t0) / (t1 - t0)))
        w = x * x * (3.0 - 2.0 * x)
        return (a * (1.0 - w) + b * w).astype(np.float32)
