"""The renderer's I420 frames (what the dev room sends): the RGB frames converted, for less work.

``FaceRig.render_i420`` converts only the boxes of features drawn anew and
warps the three planes for the head motion, only the changed boxes while the
head holds still; ``bench/render.py`` measures what that saves. Here: the
picture is the same as converting ``render``'s frame, for every stock
replica, over speech with blinks (one under lifted brows, whose boxes
overlap), gaze, brows and head motion; and the head's hold stays finer than
what the video encoder loses anyway.
"""

import cv2
import numpy as np
import pytest
from pipecat.frames.frames import OutputImageRawFrame
from pipecat.tests.utils import SleepFrame, run_test

from processors.replica.assets import load_replica
from processors.replica.face import FaceRig, IdleMotion
from processors.replica.renderer import ReplicaRendererParams, ReplicaRendererProcessor
from processors.replica.speech_track import SpeechTrack
from tests.replica.measure import looks_like, mouth_opening
from tests.replica.test_renderer import _speech_frames

pytestmark = pytest.mark.models

FPS = 25


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def _poses(speech, seconds_before: float = 1.0, seconds_after: float = 1.5):
    """Poses of listening, speaking ``speech`` and listening again, with the brows lifted a while."""
    audio, rate, phonemes = speech
    track = SpeechTrack()
    track.add_phonemes(phonemes, rate)
    track.add_audio(audio.tobytes(), rate, 1, now=seconds_before)
    speech_s = len(audio) / rate
    idle = IdleMotion(seed=3)
    poses = []
    for i in range(int((seconds_before + speech_s + seconds_after) * FPS)):
        t = i / FPS
        shape, loudness = track.shape_at(t)
        pose = idle.pose_at(t, shape, loudness, max(0.0, seconds_before + speech_s - t))
        if 0.5 < t < 1.5:
            pose.brow = 1.0
        if 2.0 < t < 2.2 or 1.0 < t < 1.2:
            pose.blink = 1.0
        poses.append(pose)
    return poses


@pytest.mark.parametrize("replica_id", ["eileen", "ada", "leo"])
def test_i420_frames_are_the_rgb_frames_converted(speech, replica_id):
    rig, twin = FaceRig(load_replica(replica_id)), FaceRig(load_replica(replica_id))
    poses = _poses(speech)
    assert any(p.head[0] != 0 for p in poses) and any(p.mouth[0] > 0.3 for p in poses)
    luma, chroma = [], []
    w, h = rig.size
    for pose in poses:
        expected = cv2.cvtColor(twin.render(pose), cv2.COLOR_RGB2YUV_I420)
        got = rig.render_i420(pose)
        assert got.shape == (h * 3 // 2, w) and got.dtype == np.uint8
        luma.append(_psnr(got[:h], expected[:h]))
        chroma.append(_psnr(got[h:], expected[h:]))
    # Rounding apart (the planes are warped after the conversion, not before), the same picture.
    assert min(luma) > 50.0 and min(chroma) > 50.0, (min(luma), min(chroma))


def test_a_head_at_rest_gives_the_portrait_converted():
    rig = FaceRig(load_replica("eileen"))
    pose = IdleMotion(seed=0).pose_at(0.0, np.zeros(6, np.float32))
    pose.head, pose.gaze, pose.blink = (0.0, 0.0, 0.0, 1.0), (0.0, 0.0), 0.0
    expected = cv2.cvtColor(rig.base, cv2.COLOR_RGB2YUV_I420)
    assert np.array_equal(rig.render_i420(pose), expected)


async def test_the_renderer_sends_i420_frames_of_the_speaking_face_when_asked(speech):
    replica = load_replica("ada")
    renderer = ReplicaRendererProcessor(replica=replica, params=ReplicaRendererParams(pixel_format="I420"))
    down, _ = await run_test(renderer, frames_to_send=[*_speech_frames(speech), SleepFrame(len(speech[0]) / speech[1] + 0.5)])

    images = [f for f in down if isinstance(f, OutputImageRawFrame)]
    assert images and all(f.format == "I420" and len(f.image) == 512 * 512 * 3 // 2 for f in images)
    rgb = [
        cv2.cvtColor(np.frombuffer(f.image, np.uint8).reshape(512 * 3 // 2, 512), cv2.COLOR_YUV2RGB_I420) for f in images
    ]
    colour, correlation = looks_like(rgb[0], renderer._rig.base)
    assert colour < 4 and correlation > 0.95, (colour, correlation)
    speaking = [image for image, f in zip(rgb, images) if f.metadata["replica_speaking"]]
    openings = [mouth_opening(image, renderer._rig.landmarks) for image in speaking]
    assert max(openings) - min(openings) > 150


def test_the_head_holds_still_only_in_steps_finer_than_the_video_codec_loses():
    """Slow sway moves the head in steps of at most ``HEAD_STEP_PX``: most listening frames are the last one again.

    Against frames with the head exactly where its pose puts it, every frame
    stays above 41 dB PSNR: closer than VP8 at the dev room's bitrate keeps
    a frame to what it was given (about 39 dB, ``bench/render.py``).
    """
    rig, exact = FaceRig(load_replica("eileen")), FaceRig(load_replica("eileen"))
    exact.HEAD_STEP_PX = 0.0
    idle = IdleMotion(seed=5)
    frames, psnr = [], []
    for i in range(10 * FPS):  # listening: sway, breathing, blinks, glances
        pose = idle.pose_at(i / FPS, np.zeros(5, np.float32))
        frames.append(rig.render_i420(pose))
        psnr.append(_psnr(frames[-1], exact.render_i420(pose)))
    repeated = sum(np.array_equal(a, b) for a, b in zip(frames, frames[1:])) / (len(frames) - 1)
    assert repeated > 0.3, repeated
    assert min(psnr) > 41.0, min(psnr)
