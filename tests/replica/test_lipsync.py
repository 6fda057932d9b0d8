"""Lip sync measured on rendered pixels against the real voice's loudness."""

import av
import numpy as np
import pytest

from processors.replica.assets import load_replica
from processors.replica.face import FaceRig
from processors.replica.video_file import render_talking_frames, write_talking_video
from tests.replica.measure import best_lag, librivox_speech, mouth_opening, rms_envelope

pytestmark = pytest.mark.models

ANALYSIS_FPS = 100  # 10 ms resolution for the lag
MAX_LAG_S = 0.040


def _openings(replica, audio, rate, phonemes, fps):
    landmarks = FaceRig(replica).landmarks
    return np.array(
        [mouth_opening(f, landmarks) for _, f in render_talking_frames(replica, audio, rate, phonemes, fps=fps)]
    )


@pytest.mark.parametrize("replica_id", ["ada", "eileen"])
def test_mouth_follows_voice_with_phoneme_timing(speech, replica_id):
    audio, rate, phonemes = speech
    replica = load_replica(replica_id)
    opening = _openings(replica, audio, rate, phonemes, ANALYSIS_FPS)
    envelope = rms_envelope(audio, rate, ANALYSIS_FPS, len(opening))
    lag, corr = best_lag(opening, envelope, max_lag=20)
    print(f"{replica_id}: lag {lag * 10:.1f} ms, correlation {corr:.2f}")
    assert corr > 0.5
    assert abs(lag / ANALYSIS_FPS) < MAX_LAG_S
    # The mouth really opens while speaking and is closed after.
    rig = FaceRig(replica)
    at_rest = mouth_opening(rig.base, rig.landmarks)
    assert opening.max() > at_rest + 150
    assert np.abs(opening[-5:] - at_rest).max() < 0.15 * (opening.max() - at_rest)


def test_mouth_follows_recorded_human_voice_without_phonemes(librivox_dir):
    audio, rate = librivox_speech()
    audio = audio[: rate * 6]
    opening = _openings(load_replica("leo"), audio, rate, None, ANALYSIS_FPS)
    envelope = rms_envelope(audio, rate, ANALYSIS_FPS, len(opening))
    lag, corr = best_lag(opening, envelope, max_lag=20)
    print(f"loudness-driven: lag {lag * 10:.1f} ms, correlation {corr:.2f}")
    assert corr > 0.5
    assert abs(lag / ANALYSIS_FPS) < MAX_LAG_S


def test_mp4_is_lip_synced_and_playable(speech, tmp_path):
    audio, rate, phonemes = speech
    replica = load_replica("ada")
    path = write_talking_video(tmp_path / "talk.mp4", replica, audio, rate, phonemes)

    with av.open(str(path)) as container:
        streams = {s.type: s.codec_context.name for s in container.streams}
        assert streams == {"video": "h264", "audio": "aac"}
        video = container.streams.video[0]
        assert (video.width, video.height) == (512, 512)
        assert video.average_rate == 25
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        decoded_audio = sum(f.samples for f in container.decode(audio=0))
    assert abs(decoded_audio / rate - len(audio) / rate) < 0.1

    landmarks = FaceRig(replica).landmarks
    opening = np.array([mouth_opening(f, landmarks) for f in frames], dtype=float)
    envelope = rms_envelope(audio, rate, 25, len(opening))
    lag, corr = best_lag(opening, envelope, max_lag=5)
    print(f"mp4: lag {lag * 40:.1f} ms, correlation {corr:.2f}")
    assert corr > 0.5
    assert abs(lag / 25) < MAX_LAG_S
