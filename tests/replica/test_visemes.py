"""Phonemes to mouth shapes, and the playback clock of queued speech."""

import numpy as np
import pytest

from processors.replica.speech_track import SpeechTrack
from processors.replica.visemes import MouthCurve, Viseme, phoneme_segments, viseme_for_phoneme

pytestmark = pytest.mark.unit

# A sentence as piper aligns it (espeak IPA, one symbol per entry, 22050 Hz).
PIPER_PHONEMES = [
    ("^", 768), ("h", 512), ("ə", 1280), ("l", 512), ("ˈ", 1024), ("o", 1024), ("ʊ", 1280), (" ", 768),
    ("ð", 1792), ("ˈ", 1536), ("ɛ", 1280), ("ɹ", 1792), (",", 2048), ("m", 768), ("a", 1024), ("ɪ", 768),
    (" ", 512), ("f", 1024), ("ˈ", 512), ("ɑ", 1024), ("ː", 768), ("ʃ", 1536), ("w", 512), ("i", 1024),
    ("k", 512), ("s", 1024), ("ŋ", 768), ("b", 512), ("u", 1536), ("$", 512),
]


def test_phonemes_map_to_at_least_eight_visemes():
    visemes = {viseme_for_phoneme(p) for p, _ in PIPER_PHONEMES}
    assert len(visemes - {Viseme.REST}) >= 8
    assert viseme_for_phoneme("m") is Viseme.PBM
    assert viseme_for_phoneme("ɑ") is Viseme.AA
    assert viseme_for_phoneme(" ") is Viseme.REST
    assert viseme_for_phoneme("?") is Viseme.REST


def test_stress_and_length_marks_join_their_phonemes():
    segments = phoneme_segments([("ˈ", 100), ("ɑ", 200), ("ː", 50), ("p", 100)], 1000)
    assert [v for _, _, v in segments] == [Viseme.AA, Viseme.PBM]
    assert [t for s, e, _ in segments for t in (s, e)] == pytest.approx([0.0, 0.35, 0.35, 0.45])


def test_mouth_glides_between_phonemes():
    curve = MouthCurve(phoneme_segments(PIPER_PHONEMES, 22050))
    t = np.arange(0, curve.end, 0.001)
    shapes = np.array([curve.shape_at(x) for x in t])
    step = np.abs(np.diff(shapes, axis=0)).max()
    assert step < 0.06  # per millisecond: no snapping
    assert shapes[:, 0].max() > 0.6  # but it does open wide
    assert np.allclose(curve.shape_at(curve.end + 0.1), 0)


def test_audio_handed_over_fast_plays_back_to_back():
    rate = 16000
    track = SpeechTrack()
    loud = (np.sin(np.arange(rate // 2) * 0.3) * 12000).astype(np.int16).tobytes()
    quiet = np.zeros(rate // 2, np.int16).tobytes()
    # Three half-second chunks handed over within 30 ms play from 10.0 s to 11.5 s.
    track.add_audio(loud, rate, 1, now=10.0)
    track.add_audio(quiet, rate, 1, now=10.01)
    track.add_audio(loud, rate, 1, now=10.03)
    assert track.playback_end == pytest.approx(11.5)
    assert track.shape_at(10.25)[0][0] > 0.3
    assert track.shape_at(10.75)[0][0] < 0.05
    assert track.shape_at(11.25)[0][0] > 0.3
    assert not track.is_speaking(11.6)
    # The transport reports playback started 80 ms late: the clock follows.
    track.playback_started(10.08)
    assert track.playback_end == pytest.approx(11.58)
    track.clear()
    assert not track.is_speaking(10.5)
