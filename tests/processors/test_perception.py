"""Perception on real photographs: cues, their debouncing, gestures, and the processor's events.

The face is scikit-image's astronaut (a real photograph, public domain), as
she is, mirrored, darkened, turned in 3-D by warping her own face mesh, with
nobody in the frame, and two people side by side (see ``tests/face_images``).
Everything goes through the real packaged models.
"""

import base64

import cv2
import numpy as np
import pytest
from pipecat.frames.frames import LLMContextFrame, OutputTransportMessageUrgentFrame, UserImageRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from processors.faces.landmarks import FaceLandmarker
from processors.perception.cues import CueTracker, FrameReading, expression_of, face_measures, read_frame
from processors.perception.processor import (
    CUE_LINE_PREFIX,
    PerceptionContextProcessor,
    PerceptionParams,
    PerceptionProcessor,
    add_cue_line,
)
from tests import face_images

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def finder(settings) -> FaceLandmarker:
    return face_images.packaged_face_finder(settings)


@pytest.fixture(scope="module")
def scenes(finder) -> dict[str, np.ndarray]:
    """The test scenes, made once (the 3-D turns take a second or two each)."""
    face = face_images.astronaut()
    return {
        "face": face,
        "mirrored": face_images.mirrored(face),
        "dark": face_images.darkened(face, 0.12),
        "nobody": face_images.no_one(),
        "two": face_images.two_people(face),
        "close_up": cv2.resize(face_images.cropped_face(face), (320, 320)),
        "turned_right": face_images.head_turned(finder, face, yaw=35),
        "turned_left": face_images.head_turned(finder, face, yaw=-35),
        "head_down": face_images.head_turned(finder, face, pitch=18),
    }


@pytest.mark.parametrize(
    ("scene", "faces", "looking", "expression", "dark"),
    [
        ("face", 1, True, "smiling", False),
        ("mirrored", 1, True, "smiling", False),
        ("close_up", 1, True, "smiling", False),
        ("dark", 1, None, None, True),
        ("nobody", 0, None, None, False),
        ("two", 2, True, "smiling", False),
        ("turned_right", 1, False, None, False),
        ("turned_left", 1, False, None, False),
    ],
)
def test_one_frame_reads_as_expected(finder, scenes, scene, faces, looking, expression, dark):
    reading = read_frame(finder, scenes[scene], at=0.0)
    assert reading.faces == faces
    assert reading.dark is dark
    if looking is not None:
        assert reading.looking is looking, reading.measures
    if expression is not None:
        assert reading.expression == expression, reading.measures


def test_a_turned_head_reads_as_turned_the_right_way(finder, scenes):
    right = read_frame(finder, scenes["turned_right"], at=0.0)
    left = read_frame(finder, scenes["turned_left"], at=0.0)
    down = read_frame(finder, scenes["head_down"], at=0.0)
    assert right.yaw > 15 and left.yaw < -15
    assert down.pitch > 10 and abs(down.yaw) < 8


def _moved(points: np.ndarray, eyes: float, moves: dict[tuple[int, ...], tuple[float, float]]) -> np.ndarray:
    out = points.copy()
    for indices, (dx, dy) in moves.items():
        for i in indices:
            out[i, 0] += dx * eyes
            out[i, 1] += dy * eyes
    return out


def test_expressions_from_the_real_mesh_moved(finder, scenes):
    """Smiling is her real face; frowning, surprise and neutral move her real mesh's points."""
    mesh = finder.find(scenes["face"])[0].mesh
    p = mesh.points
    eyes = float(np.linalg.norm(p[263, :2] - p[33, :2]))
    assert expression_of(face_measures(p, mesh.irises)) == "smiling"
    lips_y = (p[13, 1] + p[14, 1]) / 2
    neutral = p.copy()
    cx = (p[61, 0] + p[291, 0]) / 2
    for i in (61, 291):
        neutral[i, 1] = lips_y
        neutral[i, 0] = cx + (p[i, 0] - cx) * 0.78
    assert expression_of(face_measures(neutral, mesh.irises)) == "neutral"
    frown = _moved(neutral, eyes, {(61, 291): (0, 0.08)})
    assert expression_of(face_measures(frown, mesh.irises)) == "frowning"
    knit = _moved(neutral, eyes, {(107,): (0.04, 0.08), (336,): (-0.04, 0.08)})
    assert expression_of(face_measures(knit, mesh.irises)) == "frowning"
    surprise = _moved(neutral, eyes, {(14, 17, 152): (0, 0.3), (105, 334, 107, 336): (0, -0.1)})
    assert expression_of(face_measures(surprise, mesh.irises)) == "surprised"


def test_a_cue_counts_only_after_it_held_a_second_and_says_when_it_began(finder, scenes):
    face = read_frame(finder, scenes["face"], at=0.0)
    nobody = read_frame(finder, scenes["nobody"], at=0.0)
    tracker = CueTracker(hold_s=1.0)

    def at(reading: FrameReading, t: float) -> FrameReading:
        return FrameReading(**{**reading.__dict__, "at": t})

    assert tracker.update(at(face, 0.0)) == [] and tracker.line() is None
    assert tracker.update(at(face, 0.5)) == []
    changes = {c.cue: c for c in tracker.update(at(face, 1.0))}
    assert changes["faces"].value == 1 and changes["faces"].at == 0.0
    assert tracker.line() == "the user is smiling and looking at you"
    # A blink of absence (one frame) changes nothing.
    assert tracker.update(at(nobody, 1.5)) == []
    assert tracker.update(at(face, 2.0)) == []
    assert tracker.value("faces") == 1
    # Gone for a second: absent, dated from the first frame without a face.
    tracker.update(at(nobody, 2.5))
    tracker.update(at(nobody, 3.0))
    changes = {c.cue: c for c in tracker.update(at(nobody, 3.5))}
    assert changes["faces"].value == 0 and changes["faces"].at == 2.5
    assert tracker.line() == "the user is not in view of the camera"
    # Expression and gaze are kept while no face is seen; the line says nobody is there.
    assert tracker.value("expression") == "smiling"


def test_a_nod_and_a_head_shake_over_half_second_frames(finder, scenes):
    ahead = read_frame(finder, scenes["face"], at=0.0)
    down = read_frame(finder, scenes["head_down"], at=0.0)
    right = read_frame(finder, scenes["turned_right"], at=0.0)
    left = read_frame(finder, scenes["turned_left"], at=0.0)

    def run(sequence: list[FrameReading]) -> list[str]:
        tracker = CueTracker()
        gestures = []
        for i, reading in enumerate(sequence):
            for change in tracker.update(FrameReading(**{**reading.__dict__, "at": i * 0.5})):
                if change.cue == "gesture":
                    gestures.append(change.value)
        return gestures

    assert run([ahead, ahead, down, ahead, ahead]) == ["nodded"]
    assert run([ahead, right, left, ahead, ahead]) == ["shook head"]
    assert run([ahead, right, right, right, right]) == []  # turned away and stayed: no gesture
    assert run([ahead] * 6) == []


def image_frame(rgb: np.ndarray, source: str = "camera") -> UserImageRawFrame:
    frame = UserImageRawFrame(user_id="u", image=rgb.tobytes(), size=(rgb.shape[1], rgb.shape[0]), format="RGB")
    frame.transport_source = source
    return frame


PERSON_LEFT_TOOL = {
    "type": "function",
    "function": {
        "name": "notify_user_left",
        "description": "Call when the user leaves the camera's view.",
        "parameters": {
            "type": "object",
            "properties": {"observation": {"type": "string", "description": "what was seen"}},
            "required": ["observation"],
        },
    },
}


async def test_the_processor_reads_frames_off_the_loop_and_sends_cues_and_tool_calls(settings, finder, scenes):
    small = {k: cv2.resize(v, (320, 240) if k != "close_up" else (240, 240)) for k, v in scenes.items()}
    params = PerceptionParams(
        framerate=2, cache_dir=settings.cvi_cache_dir, conversation_id="c1",
        perception_tools=[PERSON_LEFT_TOOL], perception_analysis_queries=["Was the user smiling?"],
    )
    tap = PerceptionProcessor(params=params, finder=finder)
    frames = []
    for _ in range(4):
        frames += [image_frame(small["face"]), SleepFrame(0.55)]
    for _ in range(4):
        frames += [image_frame(small["nobody"]), SleepFrame(0.55)]
    down, _up = await run_test(tap, frames_to_send=frames, expected_down_frames=None)
    assert not any(isinstance(f, UserImageRawFrame) for f in down), "camera frames go no further"
    events = [f.message for f in down if isinstance(f, OutputTransportMessageUrgentFrame)]
    cues = [e for e in events if e["event_type"] == "conversation.perception_cues"]
    assert cues and all(e["conversation_id"] == "c1" for e in cues)
    assert cues[0]["properties"]["cues"]["faces"]["value"] == 1
    assert "smiling" in cues[0]["properties"]["line"]
    assert cues[-1]["properties"]["cues"]["faces"]["value"] == 0
    calls = [e["properties"] for e in events if e["event_type"] == "conversation.perception_tool_call"]
    assert [c["name"] for c in calls] == ["notify_user_left"]
    assert calls[0]["arguments"] == {"observation": "the user is not in view of the camera"}
    url = calls[0]["frames"][0]
    assert url.startswith("data:image/jpeg;base64,")
    jpeg = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape[:2] == (240, 320)
    analysis = tap.analysis()
    assert analysis["queries"][0]["query"] == "Was the user smiling?"
    assert "smiling" in analysis["queries"][0]["answer"]
    assert tap.readings >= 4


async def test_frames_arriving_faster_than_the_rate_are_dropped_not_queued(settings, finder, scenes):
    small = cv2.resize(scenes["face"], (320, 240))
    tap = PerceptionProcessor(params=PerceptionParams(framerate=2, cache_dir=settings.cvi_cache_dir), finder=finder)
    frames = []
    for _ in range(30):  # 30 fps for one second
        frames += [image_frame(small), SleepFrame(1 / 30)]
    await run_test(tap, frames_to_send=frames, expected_down_frames=None)
    # About two a second were analysed; the other 28 were dropped on arrival.
    assert 1 <= tap.readings <= 3


class ContextRecorder(FrameProcessor):
    def __init__(self):
        super().__init__()
        self.contexts: list[list] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.contexts.append([dict(m) for m in frame.context.get_messages()])
        await self.push_frame(frame, direction)


async def test_the_cue_line_reaches_the_llm_context_before_the_users_words(settings, finder, scenes):
    small = cv2.resize(scenes["face"], (320, 240))
    tap = PerceptionProcessor(
        params=PerceptionParams(framerate=2, cache_dir=settings.cvi_cache_dir, ambient_awareness_queries=["Is the user looking at the camera?"]),
        finder=finder,
    )
    into_context = PerceptionContextProcessor(perception=tap)
    recorder = ContextRecorder()
    context = LLMContext(messages=[{"role": "user", "content": "How do I look today?"}])
    frames = []
    for _ in range(4):
        frames += [image_frame(small), SleepFrame(0.55)]
    frames += [LLMContextFrame(context=context), SleepFrame(0.1), LLMContextFrame(context=context)]
    await run_test(Pipeline([tap, into_context, recorder]), frames_to_send=frames, expected_down_frames=None)
    user = recorder.contexts[-1][-1]["content"]
    assert user.startswith(CUE_LINE_PREFIX)
    assert "the user is smiling and looking at you" in user
    assert "Is the user looking at the camera? looking at the camera" in user
    assert user.endswith("\nHow do I look today?")
    assert user.count(CUE_LINE_PREFIX) == 1, "a second pass adds nothing"


def test_no_line_before_any_cue_held():
    context = LLMContext(messages=[{"role": "user", "content": "hi"}])
    assert add_cue_line(context, "the user is in view") is True
    assert add_cue_line(context, "the user is in view") is False
    assert context.get_messages()[0]["content"] == f"{CUE_LINE_PREFIX}the user is in view.)\nhi"


async def test_no_frame_is_read_from_the_end_of_the_turn_to_the_end_of_the_reply(settings, finder, scenes):
    """On two cores the reply (LLM, voice, face) gets the CPU: the camera is not read while it is written and said."""
    from pipecat.frames.frames import BotStoppedSpeakingFrame, TextFrame, UserStoppedSpeakingFrame

    tap = PerceptionProcessor(params=PerceptionParams(framerate=2, cache_dir=settings.cvi_cache_dir), finder=finder)
    face = image_frame(cv2.resize(scenes["face"], (320, 240)))
    counts = []

    class Count(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, TextFrame):
                counts.append(tap.readings)
            await self.push_frame(frame, direction)

    def listening(n):
        return [f for _ in range(n) for f in (face, SleepFrame(0.6))]

    def mark():
        return [SleepFrame(0.3), TextFrame("mark"), SleepFrame(0.1)]

    frames = [*listening(3), *mark(), UserStoppedSpeakingFrame(), *listening(4), *mark(),
              BotStoppedSpeakingFrame(), *listening(3), *mark()]
    await run_test(Pipeline([tap, Count()]), frames_to_send=frames, expected_down_frames=None)
    before, during, after = counts
    assert before >= 2
    assert during == before  # nothing read while the reply was written and said
    assert after >= during + 2
