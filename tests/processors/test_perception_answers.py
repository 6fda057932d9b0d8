"""Questions about the user's own picture, answered from the cues of real photographs; the line only when it matters.

The cues come from the packaged face models on scikit-image's astronaut
(a real photograph), nobody, two people side by side and a darkened face;
the answers go through a pipecat pipeline shaped as the bot's (context →
LLM stand-in → cue answers → the spoken-reply shaper) with the bot's turn
observer recording what the replica said.
"""

import asyncio
import time

import cv2
import pytest
from pipecat.frames.frames import (
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from processors.llm.spoken_reply import SpokenReplyProcessor
from processors.perception.answers import CueAnswerProcessor, answer_from_cues, camera_question
from processors.perception.cues import CueTracker, read_frame
from processors.perception.processor import (
    CUE_LINE_PREFIX,
    PerceptionContextProcessor,
    PerceptionParams,
    PerceptionProcessor,
)
from tests import face_images

pytestmark = pytest.mark.models

ASKING = {
    "Can you see me?": ("see", None),
    "can you see me okay": ("see", None),
    "What do you see?": ("see", None),
    "Hello! Am I on camera?": ("see", None),
    "How do I look today?": ("look", None),
    "Am I smiling?": ("expression", "smiling"),
    "Do I look happy?": ("expression", "smiling"),
    "Am I frowning right now?": ("expression", "frowning"),
    "Do I look a bit sad?": ("expression", "frowning"),
    "What's my expression?": ("expression", None),
    "Am I looking at the camera?": ("attention", None),
    "How many people do you see?": ("people", None),
    "How many people are there?": ("people", None),
    "Is there anyone else in the room?": ("people", None),
    "Is it too dark?": ("light", None),
    "Is it too dark in here?": ("light", None),
    "Can you read my screen?": ("screen", None),
}
NOT_ASKING = (
    "What should I see in Lisbon?",
    "Can you see the castle from Alfama?",
    "Where should I look for souvenirs?",
    "I feel happy today.",
    "Is there anyone who speaks English?",
    "How many people live in Lisbon?",
    "How many people are there in Portugal?",
    "Do you see what I mean?",
    "What does the screen at the station say about trams?",
    "I'm looking for a good fado house.",
    "Is it too dark to walk in Alfama at night?",
    "Am I alone in thinking trams are fun?",
)


def test_questions_about_the_users_own_picture_are_found_and_others_are_not():
    assert {q: camera_question(q) for q in ASKING} == ASKING
    assert [q for q in NOT_ASKING if camera_question(q) is not None] == []


@pytest.fixture(scope="module")
def finder(settings):
    return face_images.packaged_face_finder(settings)


def cues_of(finder, rgb) -> dict:
    """The cues that hold after a second and a half of the same picture."""
    tracker = CueTracker(hold_s=1.0)
    for i in range(4):
        tracker.update(read_frame(finder, rgb, at=i * 0.5))
    return tracker.current(1.5)


@pytest.fixture(scope="module")
def scenes(finder) -> dict:
    face = face_images.astronaut()
    return {
        "face": cues_of(finder, face),
        "nobody": cues_of(finder, face_images.no_one()),
        "two": cues_of(finder, face_images.two_people(face)),
        "dark": cues_of(finder, face_images.darkened(face, 0.12)),
    }


@pytest.mark.parametrize(
    ("scene", "question", "says", "never"),
    [
        ("face", "Can you see me?", ("Yes, I can see you", "smiling", "looking right at me"), ("can't",)),
        ("face", "Am I smiling?", ("Yes, you're smiling",), ("Not",)),
        ("face", "Am I frowning?", ("Not that I can see", "smiling"), ("Yes",)),
        ("face", "How do I look?", ("happy", "smiling"), ()),
        ("face", "Am I looking at the camera?", ("Yes, you're looking right at me",), ()),
        ("face", "How many people do you see?", ("just you",), ()),
        ("nobody", "Can you see me?", ("can't see anyone",), ("Yes",)),
        ("nobody", "Am I smiling?", ("can't see anyone",), ("smiling",)),
        ("two", "How many people do you see?", ("two people",), ()),
        ("two", "Can you see me?", ("two people",), ()),
        ("dark", "Is it too dark?", ("quite dark",), ("fine",)),
        ("face", "Is it too dark?", ("looks fine",), ("dark where",)),
        ("face", "Can you read my screen?", ("don't see a shared screen",), ()),
    ],
)
def test_the_answer_says_what_the_real_photo_shows(scenes, scene, question, says, never):
    kind, asked = camera_question(question)
    answer = answer_from_cues(kind, asked, scenes[scene])
    assert all(s in answer for s in says), answer
    assert not any(n in answer for n in never), answer


def test_before_any_frame_the_answer_says_the_camera_has_not_come_through():
    assert "camera hasn't come through" in answer_from_cues("see", None, {})


class LLMStandIn(FrameProcessor):
    """Answers every context as the LLM does: its reply's frames are first pushed into the next stage.

    ``finish_s``: how long it takes to write the reply's last words and end it (a small LLM on two busy cores).
    """

    def __init__(self, words: str, finish_s: float = 0.0):
        super().__init__()
        self.words = words
        self.finish_s = finish_s
        self.ended_at: list[float] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            for word in self.words.split():
                await self.push_frame(LLMTextFrame(word + " "))
            if self.finish_s:
                await asyncio.sleep(self.finish_s)
            self.ended_at.append(time.monotonic())
            await self.push_frame(LLMFullResponseEndFrame())


class Spoken(FrameProcessor):
    """After the shaper: when each piece of text leaves for the voice."""

    def __init__(self):
        super().__init__()
        self.said: list[tuple[float, str]] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.said.append((time.monotonic(), frame.text))
        await self.push_frame(frame, direction)


async def run_turns(settings, finder, rgb, questions: list[str], *, every_turn: bool = False, llm=None, spoken=None):
    """The bot's order of stages around the LLM, one context per question, and what the observer recorded."""
    from tests.bot.test_turn_observer_reply_line import observed

    tap = PerceptionProcessor(params=PerceptionParams(framerate=2, cache_dir=settings.cvi_cache_dir), finder=finder)
    answers = CueAnswerProcessor()
    into_context = PerceptionContextProcessor(perception=tap, every_turn=every_turn, answers=answers)
    llm = llm or LLMStandIn("I am smiling and I love pastel de nata.")
    observer, _events = await observed()
    frame = face_images_frame(rgb)
    frames = []
    for _ in range(4):
        frames += [frame, SleepFrame(0.55)]
    contexts = []
    for question in questions:
        context = LLMContext(messages=[{"role": "user", "content": question}])
        contexts.append(context)
        frames += [
            UserStartedSpeakingFrame(), TranscriptionFrame(question, "user", "now"), UserStoppedSpeakingFrame(),
            LLMContextFrame(context=context), SleepFrame(0.2),
        ]
    down, _ = await run_test(
        Pipeline([tap, into_context, llm, answers, SpokenReplyProcessor(persona_name="Ava", max_tokens=90),
                  *([spoken] if spoken else [])]),
        frames_to_send=frames, expected_down_frames=None, observers=[observer],
    )
    return [t.reply for t in observer.turns], contexts, into_context


def face_images_frame(rgb):
    from tests.processors.test_perception import image_frame

    return image_frame(cv2.resize(rgb, (320, 240)))


async def test_a_question_about_the_picture_is_answered_from_the_cues_and_the_next_by_the_llm(settings, finder):
    replies, contexts, _ = await run_turns(
        settings, finder, face_images.astronaut(), ["Can you see me?", "Where can I hear fado?", "Am I smiling?"]
    )
    assert replies == [
        "Yes, I can see you: you're smiling and looking right at me.",
        "I am smiling and I love pastel de nata.",
        "Yes, you're smiling.",
    ]


async def test_the_cues_answer_is_said_without_waiting_for_the_llm_to_finish(settings, finder):
    llm = LLMStandIn("I am smiling and I love pastel de nata.", finish_s=1.5)
    spoken = Spoken()
    replies, _, _ = await run_turns(settings, finder, face_images.astronaut(), ["Can you see me?"], llm=llm, spoken=spoken)
    assert replies == ["Yes, I can see you: you're smiling and looking right at me."]
    (said_at, said), = spoken.said
    assert said.startswith("Yes, I can see you")
    assert said_at < llm.ended_at[0] - 1.0  # it went to the voice at once, not when the LLM was done


async def test_an_ordinary_face_gets_no_line_and_a_change_worth_saying_gets_one(settings, finder):
    # Someone smiling at the camera: nothing worth telling a small LLM each turn.
    _, contexts, into_context = await run_turns(settings, finder, face_images.astronaut(), ["Where can I hear fado?"])
    assert not contexts[0].get_messages()[-1]["content"].startswith(CUE_LINE_PREFIX)
    # Nobody there: said once, then not again while it holds.
    _, contexts, into_context = await run_turns(
        settings, finder, face_images.no_one(), ["Where can I hear fado?", "And sardines?"]
    )
    assert contexts[0].get_messages()[-1]["content"].startswith(f"{CUE_LINE_PREFIX}the user is not in view")
    assert not contexts[1].get_messages()[-1]["content"].startswith(CUE_LINE_PREFIX)
    # A persona that asks for it gets the line every turn.
    _, contexts, _ = await run_turns(
        settings, finder, face_images.astronaut(), ["Where can I hear fado?", "And sardines?"], every_turn=True
    )
    assert all(c.get_messages()[-1]["content"].startswith(f"{CUE_LINE_PREFIX}the user is smiling") for c in contexts)


async def test_a_line_given_with_an_early_reply_is_kept_when_the_turn_is_written_without_it(settings, finder):
    """An early reply runs on a copy of the context; the real context gets the turn without the line.

    The next turn's prompt must start as the LLM saw the last one, or its
    cache of the conversation is lost from that turn on.
    """
    tap = PerceptionProcessor(params=PerceptionParams(framerate=2, cache_dir=settings.cvi_cache_dir), finder=finder)
    into_context = PerceptionContextProcessor(perception=tap, every_turn=True)
    frame = face_images_frame(face_images.astronaut())
    history = [{"role": "assistant", "content": "Hi!"}]
    early = LLMContext(messages=[*history, {"role": "user", "content": "Where can I hear fado?"}])
    real = LLMContext(messages=[*[dict(m) for m in history], {"role": "user", "content": "Where can I hear fado"},
                                {"role": "assistant", "content": "In Alfama."}, {"role": "user", "content": "Thanks!"}])
    frames = []
    for _ in range(4):
        frames += [frame, SleepFrame(0.55)]
    frames += [LLMContextFrame(context=early), SleepFrame(0.1), LLMContextFrame(context=real)]
    await run_test(Pipeline([tap, into_context]), frames_to_send=frames, expected_down_frames=None)
    seen_early = early.get_messages()[-1]["content"]
    assert seen_early.startswith(CUE_LINE_PREFIX)
    assert real.get_messages()[1]["content"] == seen_early.replace("fado?", "fado")
    assert real.get_messages()[-1]["content"].startswith(CUE_LINE_PREFIX)
