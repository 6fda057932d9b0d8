"""A replica from a short video: the idle loop, the mouth bank, the rig, the refusals, the CLI.

The video is filmed by the test (``tests/replica/talking_video.py``): the
stock portrait talking for 60 % of 11 s, then listening. Mouths are judged
on the rendered pixels by the packaged face mesh, independently of what the
rig chose.
"""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from processors.replica.assets import ReplicaCreationError, list_replicas, load_replica
from processors.replica.face import FacePose
from processors.replica.mesh import open_mesh_finder
from processors.replica.renderer import ReplicaRendererProcessor
from processors.replica.video_file import render_talking_frames
from processors.replica.video_replica import (
    MAX_DURATION_S,
    MIN_VIDEO_FACE_PX,
    create_video_replica,
    mouth_measures,
    upright,
)
from processors.replica.video_rig import VideoRig, make_rig
from processors.replica.visemes import Viseme
from tests.replica.measure import best_lag, rms_envelope
from tests.replica.talking_video import portrait_frames, write_video

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FPS = 25  # the renderer's
VIDEO_FPS = 25  # the filmed videos'


@pytest.fixture(scope="module")
def finder(settings):
    finder = open_mesh_finder(cache_dir=settings.cvi_cache_dir)
    if finder is None:
        pytest.fail("face models missing: run scripts/setup.sh")
    return finder


@pytest.fixture(scope="module")
def talking_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "eileen-talking.mp4", portrait_frames(11, VIDEO_FPS), VIDEO_FPS)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, talking_video, finder):
    folder = tmp_path_factory.mktemp("replicas")
    create_video_replica(talking_video, "Eileen Video", folder, mesh_finder=finder)
    return folder


@pytest.fixture(scope="module")
def replica(replicas):
    return load_replica("eileen-video", replicas)


def _mouth(finder, frame) -> np.ndarray:
    """``[inner-lip gap, mouth width]`` (eye distances) the face mesh sees in a frame."""
    faces = finder.find(frame, mesh_faces=1)
    assert faces and faces[0].mesh is not None
    return mouth_measures(faces[0].mesh.points[:, :2])


def test_the_folder_is_a_replica_like_any_other(replicas, replica, talking_video, finder):
    assert list_replicas(replicas) == ["eileen-video"]
    assert sorted(p.name for p in replicas.iterdir()) == ["eileen-video"]  # no staging folder left
    assert replica.name == "Eileen Video"
    assert replica.portrait.shape == (512, 512, 3)
    assert replica.mesh is not None and "video" in replica.mesh.detector
    lm = replica.landmarks
    assert lm.eye_left[0] < lm.mouth[0] < lm.eye_right[0]
    assert lm.eye_left[1] < lm.mouth[1] < lm.chin[1]
    video = replica.metadata["video"]
    assert video["fps"] == VIDEO_FPS
    assert 3 * VIDEO_FPS <= video["loop_frames"] <= 6 * VIDEO_FPS
    assert replica.metadata["image_source"] == "eileen-talking.mp4"
    assert isinstance(make_rig(replica), VideoRig)
    assert not isinstance(make_rig(load_replica("eileen")), VideoRig)
    with pytest.raises(ReplicaCreationError, match="replica 'eileen-video' already exists"):
        create_video_replica(talking_video, "Eileen Video", replicas, mesh_finder=finder)


def test_the_idle_loop_is_the_person_listening_and_loops_without_a_seam(replica, finder):
    rig = VideoRig(replica)
    n = rig.frame_count
    frames = [rig.render(FacePose(), t=i / VIDEO_FPS) for i in range(n + 2)]
    steps = [np.abs(frames[i + 1].astype(np.int16) - frames[i]).mean() for i in range(n - 1)]
    seam = np.abs(frames[n - 1].astype(np.int16) - frames[n]).mean()  # the last frame, then the first again
    print(f"loop {n} frames: consecutive frames differ by {np.median(steps):.2f} (median), the seam by {seam:.2f}")
    assert np.array_equal(frames[n], frames[0])
    assert max(steps) > 0.3  # it moves: head sway, breathing, blinks
    assert seam < 2.0 * np.median(steps) + 0.5
    # The frames fading into the start are not two heads on top of each other: as sharp as the rest.
    sharpness = np.array([cv2.Laplacian(cv2.cvtColor(f[100:420, 120:400], cv2.COLOR_RGB2GRAY), cv2.CV_32F).var()
                          for f in frames[:n]])
    fade = replica.metadata["video"]["seam_fade_frames"]
    print(f"sharpness of the fading frames: {np.round(sharpness[-fade:] / np.median(sharpness), 2).tolist()}")
    assert sharpness.min() > 0.75 * np.median(sharpness)
    # Chosen from the listening part, and the person blinks in it (their own blink).
    start, end = replica.metadata["video"]["loop_source_s"]
    print(f"loop from {start} to {end} s of the video")
    assert start >= 0.6 * 11 - 0.5
    lids = []
    for frame in frames[:n]:
        pts = finder.find(frame, mesh_faces=1)[0].mesh.points[:, :2]
        lids.append(np.linalg.norm(pts[145] - pts[159]) + np.linalg.norm(pts[374] - pts[386]))
    assert min(lids) < 0.8 * np.median(lids)
    gap_rest = replica.metadata["video"]["mouth_shapes"]["gap_rest"]
    assert max(_mouth(finder, f)[0] for f in frames[:n:5]) < gap_rest + 0.05  # the mouth stays shut


def test_the_bank_holds_distinct_mouths_of_the_person(replica):
    rig = VideoRig(replica)
    shapes = replica.metadata["video"]["mouth_shapes"]
    bank = rig._bank_shapes / rig._scale
    print(f"bank: {len(bank)} mouths, gap {bank[:, 0].min():.3f}-{bank[:, 0].max():.3f}, "
          f"width {bank[:, 1].min():.3f}-{bank[:, 1].max():.3f} eye distances")
    assert len(bank) >= 12
    assert bank[:, 0].max() - bank[:, 0].min() > 0.12
    assert bank[:, 1].max() - bank[:, 1].min() > 0.08
    assert shapes["gap_rest"] < shapes["gap_max"] and shapes["width_min"] < shapes["width_rest"] < shapes["width_max"]


def test_speech_opens_the_mouth_rounds_and_spreads_it_and_rest_gives_the_loop_back(replica, finder):
    rig = VideoRig(replica)
    t = 1.0
    loop = rig.loop_frame(rig.frame_index(t))
    rest = rig.render(FacePose(), t)
    assert np.array_equal(rest, loop)
    seen = {v: _mouth(finder, rig.render(FacePose(mouth=v.value.as_array()), t)) for v in Viseme}
    gap_rest, width_rest = _mouth(finder, rest)
    print({v.name: np.round(m, 3).tolist() for v, m in seen.items()}, "rest", round(gap_rest, 3))
    shapes = replica.metadata["video"]["mouth_shapes"]
    opened = shapes["gap_max"] - shapes["gap_rest"]  # the widest the person opened (eye distances)
    assert opened > 0.1
    # Measured again on the pasted frame, the widest mouth comes out 0.5-0.9 of what it measured in
    # its own frame; with one bank mouth for every viseme it would be 0.35.
    assert seen[Viseme.AA][0] > gap_rest + 0.45 * opened
    assert seen[Viseme.PBM][0] < seen[Viseme.AA][0] - 0.45 * opened
    assert seen[Viseme.E][0] > seen[Viseme.PBM][0]
    assert seen[Viseme.O][1] < seen[Viseme.I][1] - 0.03  # rounded narrower than spread
    # The mouth sits where the face is: the rest of the frame is the loop's.
    aa = rig.render(FacePose(mouth=Viseme.AA.value.as_array()), t)
    changed = np.nonzero(np.abs(aa.astype(np.int16) - loop).max(axis=2) > 12)
    lm = replica.landmarks
    assert changed[0].min() > lm.eye_left[1] and abs(np.median(changed[1]) - lm.mouth[0]) < 15


def _cheeks(frame, lm) -> float:
    """Mean brightness of the skin just outside the mouth corners (inside the pasted lower face)."""
    u = lm.mouth_half_width
    mx, my = lm.mouth
    y0, y1 = int(my - 0.2 * u), int(my + 0.2 * u)
    left = frame[y0:y1, int(mx - 1.35 * u) : int(mx - 1.1 * u)]
    right = frame[y0:y1, int(mx + 1.1 * u) : int(mx + 1.35 * u)]
    return float(np.concatenate([left.reshape(-1, 3), right.reshape(-1, 3)]).mean())


def test_mouths_filmed_in_other_light_take_the_loop_frames_colours(tmp_path, finder, replica):
    """The light dims by 20 % while the person talks: the pasted mouths are brightened to the loop's.

    Judged against the same video filmed in even light (the module's replica): the cheeks beside
    each mouth, relative to the cheeks at rest, come out the same.
    """
    video = write_video(tmp_path / "dimmed.mp4", portrait_frames(11, VIDEO_FPS, talking_brightness=0.8), VIDEO_FPS)
    create_video_replica(video, "Dimmed", tmp_path / "replicas", mesh_finder=finder)
    dimmed = load_replica("dimmed", tmp_path / "replicas")
    rigs = (VideoRig(dimmed), VideoRig(replica))
    lm = replica.landmarks
    ratios = []
    for t in (0.0, 0.8, 1.6, 2.4):
        for viseme in (Viseme.AA, Viseme.O, Viseme.I, Viseme.E):
            dim, even = (
                _cheeks(rig.render(FacePose(mouth=viseme.value.as_array()), t), lm) / _cheeks(rig.render(FacePose(), t), lm)
                for rig in rigs
            )
            ratios.append(dim / even)
    print(f"cheeks beside the mouth, dimmed video / even light: {np.round(ratios, 3).tolist()}")
    assert 0.97 < np.mean(ratios) < 1.03
    assert 0.94 < min(ratios) and max(ratios) < 1.06


@pytest.mark.models
def test_the_mouth_follows_the_voice_through_the_renderer_path(replica, finder, speech):
    """The inner-lip gap the face mesh sees against the voice's loudness, beside the photo replica's."""
    audio, rate, phonemes = speech

    def sync(rep):
        frames = [f for _, f in render_talking_frames(rep, audio, rate, phonemes, fps=FPS)]
        gaps = np.array([_mouth(finder, f)[0] for f in frames])
        lag, corr = best_lag(gaps, rms_envelope(audio, rate, FPS, len(gaps)), max_lag=3)
        return gaps, lag, corr

    gaps, lag, corr = sync(replica)
    _, photo_lag, photo_corr = sync(load_replica("eileen"))
    print(f"video replica: lag {lag * 1000 / FPS:.0f} ms, correlation {corr:.2f}; "
          f"the photo replica: lag {photo_lag * 1000 / FPS:.0f} ms, correlation {photo_corr:.2f}")
    assert abs(lag) <= 1
    # This judge (a mesh at 25 fps against loudness) gives the photo replica 0.59-0.67, the video
    # replica filmed from it 0.56-0.64 (its bank holds the mouths the photo rig drew, at 25 fps).
    assert corr > 0.45 and corr > photo_corr - 0.15
    assert gaps[-3:].max() < gaps.max() - 0.1  # closed again after the voice


def test_the_live_renderer_plays_the_loop(replica):
    renderer = ReplicaRendererProcessor(replica=replica)
    a, speaking = renderer.render_at(0.0)
    b, _ = renderer.render_at(0.5)
    assert a.shape == (512, 512, 3) and not speaking
    assert not np.array_equal(a, b)


def test_rendering_is_cheap(replica):
    import time

    rig = VideoRig(replica)
    times = []
    for i in range(100):
        mouth = Viseme.AA.value.as_array() * (i % 4) / 3
        start = time.perf_counter()
        rig.render(FacePose(mouth=mouth), t=i / FPS)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    print(f"VideoRig.render 512x512: median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, "
          f"fastest tenth {np.percentile(ms, 10):.1f} ms")
    # The fastest tenth: what a frame costs when the machine's other work (the suite, the LLM) lets it run.
    assert np.percentile(ms, 10) < 10


def _refused(tmp_path, finder, name, frames, fps, message):
    video = write_video(tmp_path / f"{name}.mp4", frames, fps)
    replicas = tmp_path / "replicas"
    replicas.mkdir()
    with pytest.raises(ReplicaCreationError, match=message) as e:
        create_video_replica(video, "Someone", replicas, mesh_finder=finder)
    assert str(video) in str(e.value)
    assert list(replicas.iterdir()) == []  # nothing half-written
    return str(e.value)


def _interrupted(frames, every: int, gap: int):
    """The frames with the first ``gap`` of every ``every`` blanked (the person leaves the picture)."""
    for i, frame in enumerate(frames):
        yield np.full_like(frame, 128) if i % every < gap else frame


@pytest.mark.parametrize(
    "case, make, message",
    [
        ("too-short", lambda: portrait_frames(5, 10), r"5\.0 s long; 10-120 s is allowed"),
        ("blank", lambda: (np.full((240, 320, 3), 128, np.uint8) for _ in range(105)),
         r"a face was found in 0 of 105 frames \(0 %\); at least 80 %"),
        ("two-people", lambda: portrait_frames(10.5, 10, face_px=256, copies=2),
         r"2 faces in 105 of 105 frames .*must show one person"),
        ("dark", lambda: portrait_frames(10.5, 10, brightness=0.2),
         r"too dark: the face's mean brightness is \d+ of 255; at least 50"),
        ("small", lambda: portrait_frames(10.5, 10, face_px=160, canvas=(640, 480)),
         rf"the face is \d+ px wide .*at least {MIN_VIDEO_FACE_PX} px"),
        ("silent", lambda: portrait_frames(10.5, 10, talk_until=0.0),
         r"the mouth hardly moves .*must show the person talking"),
        ("interrupted", lambda: _interrupted(portrait_frames(10.5, 10), every=20, gap=2),
         r"the face is seen without a break for at most 1\.8 s; at least 3\.4 s is needed"),
    ],
)
def test_bad_videos_are_refused_by_name_and_value_and_write_nothing(tmp_path, finder, case, make, message):
    print(_refused(tmp_path, finder, case, make(), 10, message))


def test_too_long_and_not_a_video_and_missing(tmp_path, finder):
    frames = (np.full((64, 64, 3), 128, np.uint8) for _ in range(int(MAX_DURATION_S) + 5))
    _refused(tmp_path, finder, "too-long", frames, 1, r"125\.0 s long; 10-120 s is allowed")
    text = tmp_path / "talk.mp4"
    text.write_text("not a video")
    replicas = tmp_path / "others"
    with pytest.raises(ReplicaCreationError, match="not a video FFmpeg can read"):
        create_video_replica(text, "Someone", replicas, mesh_finder=finder)
    with pytest.raises(ReplicaCreationError, match="no such file"):
        create_video_replica(tmp_path / "missing.mp4", "Someone", replicas, mesh_finder=finder)
    with pytest.raises(ReplicaCreationError, match="needs the packaged face models"):
        create_video_replica(text, "Someone", replicas, mesh_finder=None)
    assert not replicas.exists()


def test_a_browser_recording_without_a_duration_in_its_header(tmp_path, finder):
    """MediaRecorder's WebM has no duration in its header (it was written as a stream): it is measured."""
    import io

    class Pipe(io.RawIOBase):
        def __init__(self):
            self.data = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.data += bytes(b)
            return len(b)

    pipe = Pipe()
    with av.open(pipe, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(35):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 100, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = tmp_path / "recording.webm"
    video.write_bytes(pipe.data)
    with av.open(str(video)) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    with pytest.raises(ReplicaCreationError, match=r"the video is 3\.5 s long; 10-120 s is allowed"):
        create_video_replica(video, "Someone", tmp_path / "replicas", mesh_finder=finder)


def test_a_phone_video_is_turned_upright_by_its_display_rotation():
    """Phones store portrait video as landscape frames plus a rotation; the face must be upright."""
    frame = np.zeros((2, 3, 3), np.uint8)
    frame[0, 0] = 255  # top left as stored
    assert upright(frame, 0) is frame
    # -90: the stored frame is shown turned a quarter clockwise, so its top left ends top right.
    assert upright(frame, -90).shape == (3, 2, 3) and upright(frame, -90)[0, 1, 0] == 255
    assert upright(frame, 90)[2, 0, 0] == 255
    assert upright(frame, 180)[1, 2, 0] == 255


def _run_py(*args, replicas_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CVI_REPLICAS_DIR": str(replicas_dir)}
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_creates_a_replica_from_a_video_and_refuses_a_bad_one(tmp_path):
    replicas = tmp_path / "replicas"
    video = write_video(tmp_path / "talking.mp4", portrait_frames(10.5, 12), 12)
    done = _run_py("replica", "create", "--video", str(video), "--name", "Eileen Talking", replicas_dir=replicas)
    assert done.returncode == 0, done.stderr
    assert f"replica created: {replicas / 'eileen-talking'}" in done.stdout
    meta = json.loads((replicas / "eileen-talking" / "replica.json").read_text())
    assert meta["video"]["bank_size"] >= 12 and meta["video"]["fps"] == 12

    short = write_video(tmp_path / "short.mp4", portrait_frames(4, 10), 10)
    refused = _run_py("replica", "create", "--video", str(short), "--name", "Short", replicas_dir=replicas)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {short}: the video is 4.0 s long; 10-120 s is allowed "
        "(the person talking and listening, face to camera)"
    )
    assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in replicas.iterdir()) == ["eileen-talking"]

    both = _run_py("replica", "create", "--video", str(short), "--image", "x.jpg", "--name", "X", replicas_dir=replicas)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
