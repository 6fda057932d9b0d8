"""Expression with the voice: brows on a stressed syllable, a glance away as a long reply begins."""

import numpy as np
import pytest

from processors.replica.assets import load_replica
from processors.replica.face import FacePose, FaceRig, IdleMotion
from processors.replica.renderer import ReplicaRendererParams, ReplicaRendererProcessor

pytestmark = pytest.mark.models

FPS = 25
MOUTH = np.zeros(5, np.float32)


def _brows(loudness_at, seconds: float = 6.0, seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, brow lift of a talking IdleMotion and of its silent twin (same seed)."""
    talker, twin = IdleMotion(seed=seed), IdleMotion(seed=seed)
    times = np.arange(int(seconds * FPS)) / FPS
    talking = np.array([talker.pose_at(t, MOUTH, loudness_at(t)).brow for t in times])
    silent = np.array([twin.pose_at(t, MOUTH, 0.0).brow for t in times])
    return times, talking, silent


def _phrases(t: float) -> float:
    """Even speech: 1.5 s phrases at loudness 0.55 with 0.5 s pauses."""
    return 0.55 if (t % 2.0) < 1.5 else 0.0


def _stressed(t: float) -> float:
    """The same speech with one stressed syllable (150 ms, clearly louder) at 3.0 s."""
    return 0.95 if 3.0 <= t < 3.15 else _phrases(t)


def test_brows_lift_briefly_on_a_stressed_syllable_and_not_on_even_speech():
    times, talking, silent = _brows(_stressed)
    assert not silent.any()
    assert not talking[times < 3.0].any()
    lifted = times[talking > 0.05]
    assert lifted.size, "no brow lift on the stressed syllable"
    assert 3.0 <= lifted[0] <= 3.1  # with the syllable
    assert 0.3 <= lifted[-1] - lifted[0] + 1 / FPS <= 0.5  # brief
    assert talking.max() > 0.9
    assert np.all(np.diff(lifted) < 1.5 / FPS)  # one lift, eased up and down
    # Even speech, with phrases starting from silence: no lift at all.
    _, even, _ = _brows(_phrases)
    assert not even.any()


def test_a_stressed_syllable_also_dips_the_head_a_little():
    talker, plain = IdleMotion(seed=4), IdleMotion(seed=4)
    dips = []
    for t in np.arange(5 * FPS) / FPS:
        extra = talker.pose_at(t, MOUTH, _stressed(t)).head[1] - plain.pose_at(t, MOUTH, _phrases(t)).head[1]
        dips.append(extra + 1.5 * (_stressed(t) - _phrases(t)))  # less the louder voice's own lift
    assert max(dips) == pytest.approx(IdleMotion.EMPHASIS_NOD_PX, abs=0.05)


def _brow_row(frame: np.ndarray, x: int, y0: int, y1: int) -> float:
    """The brow's darkest row (columns ``x`` +-6, rows ``y0:y1``)."""
    return float(y0 + np.argmin(frame[y0:y1, x - 6 : x + 6].mean(axis=(1, 2))))


@pytest.mark.parametrize("replica_id", ["ada", "eileen"])
def test_the_rig_lifts_the_brows_and_leaves_the_eyes_and_mouth(replica_id):
    replica = load_replica(replica_id)
    rig = FaceRig(replica)
    rest, lifted = rig.render(FacePose()), rig.render(FacePose(brow=1.0))
    lm = rig.landmarks
    ew, eh = lm.eye_half_size
    for (ex, ey), brow in zip((lm.eye_left, lm.eye_right), rig._brows):
        # The brow above the eye's middle moves up by the lift.
        lift = brow["lift_px"]
        region = brow["region"]
        full = np.flatnonzero(brow["weight"][:, int(ex) - region.x0] >= 0.9) + region.y0  # rows that move by all of it
        y0, y1 = int(full[0]), int(full[-1] + 1)
        moved = _brow_row(rest, int(ex), y0, y1) - _brow_row(lifted, int(ex), y0, y1)
        assert 3.0 <= lift and 0.7 * lift <= moved <= 1.3 * lift, f"brow moved {moved:.1f} px for a lift of {lift:.1f}"
        # The eye itself (lid down) is untouched.
        eye = (slice(int(ey - eh + 1), int(ey + 2 * eh)), slice(int(ex - 1.2 * ew), int(ex + 1.2 * ew)))
        assert np.array_equal(rest[eye], lifted[eye])
    below = int(max(lm.eye_left[1], lm.eye_right[1]) + 2 * eh)
    assert np.array_equal(rest[below:], lifted[below:])


def _gazes(speech_s: float, start: float = 2.0, seconds: float = 5.0, seed: int = 6):
    """Times, gaze of an IdleMotion whose reply of ``speech_s`` (all queued) starts at ``start``, and its twin's."""
    talker, twin = IdleMotion(seed=seed), IdleMotion(seed=seed)
    times = np.arange(int(seconds * FPS)) / FPS
    talking, silent = [], []
    for t in times:
        left = start + speech_s - t if t >= start else 0.0
        talking.append(talker.pose_at(t, MOUTH, 0.0, speech_left_s=max(left, 0.0)).gaze)
        silent.append(twin.pose_at(t, MOUTH, 0.0).gaze)
    return times, np.array(talking), np.array(silent)


def test_a_long_reply_begins_with_a_glance_up_and_away_and_a_short_one_does_not():
    times, talking, silent = _gazes(speech_s=4.0)
    away = np.abs(talking - silent).max(axis=1) > 0.05
    assert not away[times < 2.0].any()
    seen = times[away]
    assert 2.0 <= seen[0] <= 2.05
    assert 0.6 <= seen[-1] - seen[0] + 1 / FPS <= 1.0  # brief, then back to the camera
    peak = talking[(times > 2.2) & (times < 2.6)]
    gx, gy = IdleMotion.GLANCE_GAZE
    assert np.allclose(np.abs(peak[:, 0]), gx) and np.allclose(peak[:, 1], gy)  # up and to one side
    assert np.array_equal(talking[times > 3.0], silent[times > 3.0])
    # A short reply ("Sure, go ahead."): the gaze does as it would have.
    _, short, twin = _gazes(speech_s=1.2)
    assert np.array_equal(short, twin)


def test_the_glance_moves_the_irises_up_and_to_the_side():
    rig = FaceRig(load_replica("ada"))
    gx, gy = IdleMotion.GLANCE_GAZE
    ahead, away = rig.render(FacePose()), rig.render(FacePose(gaze=(gx, gy)))
    lm = rig.landmarks
    ew, eh = lm.eye_half_size
    for ex, ey in (lm.eye_left, lm.eye_right):
        # Inside the eye, clear of the lash lines: the iris and pupil are what is dark.
        box = (slice(int(ey - 0.6 * eh), int(ey + 0.9 * eh)), slice(int(ex - 0.8 * ew), int(ex + 0.8 * ew)))

        def iris(frame):
            """The iris's mean column and its lowest row (its top goes under the lid)."""
            dark = frame[box].astype(int).sum(axis=2) < 400
            ys, xs = np.nonzero(dark)
            return xs.mean(), ys.max()

        (x0, bottom0), (x1, bottom1) = iris(ahead), iris(away)
        assert abs(x1 - x0) > 0.1 * ew and bottom1 <= bottom0 - 1


def _syllables(seconds: float, rate: int, stressed_at: float | None = None) -> np.ndarray:
    """A voice-like tone: four syllables a second at one loudness, one of them 8 dB louder if asked."""
    t = np.arange(int(seconds * rate)) / rate
    amplitude = 3000 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    if stressed_at is not None:
        amplitude[(t >= stressed_at) & (t < stressed_at + 0.25)] *= 2.5
    return (amplitude * np.sin(2 * np.pi * 160 * t)).astype(np.int16)


def test_through_the_renderer_a_long_reply_glances_a_short_one_does_not_and_a_stressed_syllable_lifts_the_brows(speech):
    audio, rate, _ = speech

    def run(samples: np.ndarray) -> IdleMotion:
        """The replica listens, then speaks ``samples`` (all queued at 1.0 s), drawn 25 frames a second."""
        renderer = ReplicaRendererProcessor(
            replica=load_replica("ada"), params=ReplicaRendererParams(seed=2), clock=lambda: 0.0
        )
        renderer._origin = 0.0
        renderer.render_at(0.5)  # listening
        renderer.speech_track.add_audio(samples.tobytes(), rate, 1, now=1.0)
        for i in range(int((len(samples) / rate + 0.5) * FPS)):
            renderer.render_at(1.0 + i / FPS)
        return renderer._idle

    assert len(audio) / rate > 3.0
    assert [start for start, _ in run(audio)._glances] == [pytest.approx(1.0)]
    assert run(audio[: int(1.2 * rate)])._glances == []  # a short reply
    # Even syllables: no lift; one stressed syllable at 2.0 s: one lift, with it.
    assert run(_syllables(4.0, rate))._lifts == []
    lifts = run(_syllables(4.0, rate, stressed_at=2.0))._lifts
    assert len(lifts) == 1 and 3.0 <= lifts[0] <= 3.25
