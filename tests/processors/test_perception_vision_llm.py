"""The vision LLM perception engine (``perception_model="openai"``) on a real photograph, at the network seam.

The processor is the real one, in a real pipecat pipeline; only the network
is faked: ``FakeChatServer`` answers the OpenAI chat API on loopback, and
what the processor sent is read back from it (model, the JPEG of the frame,
the queries, the key). The frame is scikit-image's astronaut (public domain).
"""

import asyncio
import base64
import re
import time
from contextlib import contextmanager

import cv2
import numpy as np
import pytest
from loguru import logger
from pipecat.frames.frames import LLMContextFrame, OutputTransportMessageUrgentFrame, UserImageRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import SleepFrame, run_test
from pydantic import SecretStr, ValidationError

from bot.engines import check_persona
from bot.perception import build_perception
from bot.settings import MissingKeyError, Settings
from personas.model import Persona
from processors.perception.processor import CUE_LINE_PREFIX, PerceptionContextProcessor
from processors.perception.vision_llm import (
    ANALYSIS_INSTRUCTION,
    VisionLLMParams,
    VisionLLMPerceptionProcessor,
)
from tests import face_images
from tests.fake_openai import FakeChatServer, Failure, Slow, ToolCall
from tests.processors.test_perception import ContextRecorder, image_frame

pytestmark = pytest.mark.cloud

AMBIENT_QUERY = "Is the user holding anything up?"
DESCRIPTION = "One woman in a spacesuit smiles at the camera; (1) no, her hands are not in view."
SHOWN_TOOL = {
    "type": "function",
    "function": {
        "name": "note_object_shown",
        "description": "Call when the user holds an object up to the camera.",
        "parameters": {"type": "object", "properties": {"object": {"type": "string"}}, "required": ["object"]},
    },
}


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return cv2.resize(face_images.astronaut(), (320, 240), interpolation=cv2.INTER_AREA)


def vision(server: FakeChatServer, **params) -> VisionLLMPerceptionProcessor:
    defaults = {"model": "gpt-4o-mini-test", "base_url": server.base_url, "api_key": SecretStr("sk-persona-key"),
                "conversation_id": "c1", "interval_s": 2.0}
    return VisionLLMPerceptionProcessor(params=VisionLLMParams(**{**defaults, **params}))


def decoded(url: str) -> np.ndarray:
    assert url.startswith("data:image/jpeg;base64,")
    jpeg = base64.b64decode(url.split(",", 1)[1])
    assert jpeg[:3] == b"\xff\xd8\xff", "a JPEG"
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def events(frames, event_type: str) -> list[dict]:
    return [f.message for f in frames
            if isinstance(f, OutputTransportMessageUrgentFrame) and f.message["event_type"] == event_type]


@contextmanager
def warnings_logged():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


def is_analysis(request: dict) -> bool:
    return request["messages"][0]["content"] == ANALYSIS_INSTRUCTION


async def test_a_frame_is_described_by_the_vision_llm_and_becomes_the_cue_line(face):
    async with FakeChatServer(lambda _r: DESCRIPTION).running() as server:
        tap = vision(server, ambient_awareness_queries=[AMBIENT_QUERY])
        # The second frame comes after the answer but within the interval: it is not sent.
        frames = [image_frame(face), SleepFrame(0.8), image_frame(face), SleepFrame(0.5)]
        down, _up = await run_test(tap, frames_to_send=frames, expected_down_frames=None)

    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["model"] == "gpt-4o-mini-test" and request["stream"] is False
    assert "tools" not in request
    assert AMBIENT_QUERY in server.system_prompt(0) and "one short sentence" in server.system_prompt(0)
    assert server.headers[0]["Authorization"] == "Bearer sk-persona-key"
    (url,) = server.images(0)
    sent = decoded(url)
    assert sent.shape == face.shape
    assert np.abs(sent.astype(int) - face.astype(int)).mean() < 6, "the JPEG is the frame"

    assert tap.cue_line() == DESCRIPTION.rstrip(".")
    assert not any(isinstance(f, UserImageRawFrame) for f in down), "camera frames go no further"
    (cues,) = events(down, "conversation.perception_cues")
    assert cues["conversation_id"] == "c1"
    properties = cues["properties"]
    assert set(properties) == {"cues", "line", "screen_text", "at_s", "timestamp"}
    assert properties["line"] == DESCRIPTION.rstrip(".")
    assert properties["cues"]["description"]["value"] == properties["line"]


async def test_the_next_interval_sends_the_next_frame_and_a_shared_screen_goes_with_it(face):
    screen = np.full((240, 320, 3), 255, np.uint8)
    cv2.putText(screen, "Q3 plan", (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
    answers = iter(["The user looks at the camera", "The user looks at the camera; the screen shows a Q3 plan"])
    async with FakeChatServer(lambda _r: next(answers)).running() as server:
        tap = vision(server, interval_s=0.6)
        frames = [image_frame(face), SleepFrame(0.3), image_frame(screen, source="screenVideo"), SleepFrame(0.5),
                  image_frame(face), SleepFrame(0.6)]
        down, _up = await run_test(tap, frames_to_send=frames, expected_down_frames=None)
    assert len(server.requests) == 2
    first, second = server.images(0), server.images(1)
    assert len(first) == 1 and len(second) == 2, "the screen frame waited for the interval"
    texts = [p["text"] for p in server.requests[1]["messages"][1]["content"] if p["type"] == "text"]
    assert texts == ["The user's camera now:", "The screen the user shares now:"]
    assert decoded(second[1]).mean() > 200, "the white screen"
    assert "shared screen" in server.system_prompt(1)
    assert [e["properties"]["line"] for e in events(down, "conversation.perception_cues")] == [
        "The user looks at the camera", "The user looks at the camera; the screen shows a Q3 plan"]


async def test_a_tool_call_from_the_vision_llm_is_sent_with_the_frame_once_per_cooldown(face):
    call = ToolCall("note_object_shown", {"object": "a helmet"})
    async with FakeChatServer(lambda _r: call).running() as server:
        tap = vision(server, interval_s=0.4, perception_tools=[SHOWN_TOOL],
                     perception_tool_prompt="Call note_object_shown with what the user shows.")
        frames = []
        for _ in range(3):
            frames += [image_frame(face), SleepFrame(0.5)]
        down, _up = await run_test(tap, frames_to_send=frames, expected_down_frames=None)

    assert len(server.requests) == 3
    request = server.requests[0]
    assert request["tools"] == [SHOWN_TOOL] and request["tool_choice"] == "auto"
    assert "Call note_object_shown with what the user shows." in server.system_prompt(0)
    (event,) = events(down, "conversation.perception_tool_call")  # the cooldown holds the next two
    properties = event["properties"]
    assert properties["name"] == "note_object_shown"
    assert properties["arguments"] == {"object": "a helmet"}
    assert decoded(properties["frames"][0]).shape == face.shape
    assert tap.cue_line() is None, "a tool call says nothing for the line"


async def test_the_analysis_answers_the_queries_from_frames_spread_over_the_call(face):
    def reply(request):
        if is_analysis(request):
            return "1. Yes, she smiled through the call.\n2. One person."
        return "One woman smiles at the camera"

    queries = ["Did the user smile?", "How many people were there?"]
    async with FakeChatServer(reply).running() as server:
        tap = vision(server, interval_s=0.2, perception_analysis_queries=queries)
        frames = []
        for _ in range(12):
            frames += [image_frame(face), SleepFrame(0.25)]
        await run_test(tap, frames_to_send=frames, expected_down_frames=None)
        ambient = len(server.requests)
        analysis = await tap.final_analysis()
        again = await tap.final_analysis()

    assert ambient >= 6
    assert len(server.requests) == ambient + 1, "one analysis request, however often it is read"
    request = server.requests[-1]
    assert is_analysis(request) and request["model"] == "gpt-4o-mini-test"
    assert all(q in request["messages"][1]["content"][0]["text"] for q in queries)
    assert "One woman smiles at the camera" in request["messages"][1]["content"][0]["text"]
    images = server.images(-1)
    assert 2 <= len(images) <= 5, "a few frames, kept bounded"
    assert all(decoded(url).shape == face.shape for url in images)
    assert analysis == again
    assert analysis["queries"] == [
        {"query": "Did the user smile?", "answer": "Yes, she smiled through the call"},
        {"query": "How many people were there?", "answer": "One person"},
    ]
    assert analysis["analysis"] == "Did the user smile? Yes, she smiled through the call. How many people were there? One person."
    assert analysis["frames_analysed"] == ambient
    assert tap.analysis() == analysis, "the sync reading gives the same, once it is made"


async def test_a_rejected_key_stops_the_requests_and_is_never_logged(face):
    async with FakeChatServer(lambda _r: Failure(401, "Incorrect API key provided: sk-pers***key")).running() as server:
        tap = vision(server, interval_s=0.3, perception_analysis_queries=["Did the user smile?"])
        frames = []
        for _ in range(5):
            frames += [image_frame(face), SleepFrame(0.35)]
        with warnings_logged() as lines:
            await run_test(tap, frames_to_send=frames, expected_down_frames=None)
            analysis = await tap.final_analysis()
    assert len(server.requests) == 1 and tap.rejected
    assert len(lines) == 1 and "rejected the key (HTTP 401)" in lines[0]
    assert not any("sk-" in line for line in lines)
    assert "rejected the key" in analysis["error"] and analysis["queries"][0]["answer"].startswith("not answered")
    assert len(server.requests) == 1, "the analysis asks nothing with a rejected key"


async def test_a_server_error_and_a_timeout_are_retried_at_the_next_interval(face):
    answers = [Failure(500), Slow(3.0, "too late"), "The user waves at the camera."]
    async with FakeChatServer(lambda _r: answers.pop(0) if len(answers) > 1 else answers[0]).running() as server:
        tap = vision(server, interval_s=0.3, request_timeout_s=0.5)
        frames = []
        for _ in range(16):
            frames += [image_frame(face), SleepFrame(0.1)]
        frames.append(SleepFrame(0.3))
        with warnings_logged() as lines:
            started = time.monotonic()
            down, _up = await run_test(tap, frames_to_send=frames, expected_down_frames=None)
    assert time.monotonic() - started < 4.0, "nothing waited for the slow answer"
    assert 3 <= len(server.requests) <= 6, "one every 0.3 s at most, none while one is in flight"
    assert tap.cue_line() == "The user waves at the camera"
    assert [e["properties"]["line"] for e in events(down, "conversation.perception_cues")] == ["The user waves at the camera"]
    assert len(lines) == 2
    assert "HTTP 500" in lines[0] and "timed out" in lines[1]
    assert all("sk-persona-key" not in line for line in lines)


async def test_a_failed_or_slow_analysis_says_so_and_does_not_raise(face):
    for answer, reason in ((Failure(500), "HTTP 500"), (Slow(3.0, "1. Yes."), "no answer in 0.5 s")):
        async with FakeChatServer(lambda r, a=answer: a if is_analysis(r) else "The user smiles").running() as server:
            tap = vision(server, interval_s=0.3, analysis_timeout_s=0.5, perception_analysis_queries=["Did the user smile?"])
            await run_test(tap, frames_to_send=[image_frame(face), SleepFrame(0.4)], expected_down_frames=None)
            started = time.monotonic()
            analysis = await tap.final_analysis()
            assert time.monotonic() - started < 2.0
        assert reason in analysis["error"], analysis
        assert analysis["analysis"].startswith("The perception analysis failed")
        assert analysis["queries"] == [{"query": "Did the user smile?", "answer": f"not answered ({analysis['error']})"}]


async def test_the_description_reaches_the_turns_llm_context_before_the_users_words(face):
    async with FakeChatServer(lambda _r: DESCRIPTION).running() as server:
        tap = vision(server)
        recorder = ContextRecorder()
        context = LLMContext(messages=[{"role": "user", "content": "What do you see?"}])
        frames = [image_frame(face), SleepFrame(0.6), LLMContextFrame(context=context), SleepFrame(0.1),
                  LLMContextFrame(context=context)]
        await run_test(Pipeline([tap, PerceptionContextProcessor(perception=tap), recorder]),
                       frames_to_send=frames, expected_down_frames=None)
    user = recorder.contexts[-1][-1]["content"]
    assert user == f"{CUE_LINE_PREFIX}{DESCRIPTION.rstrip('.')}.)\nWhat do you see?"


async def test_a_turn_never_waits_for_a_request(face):
    async with FakeChatServer(lambda _r: Slow(2.0, DESCRIPTION)).running() as server:
        tap = vision(server)
        context = LLMContext(messages=[{"role": "user", "content": "Hi"}])
        recorder = ContextRecorder()
        frames = [image_frame(face), SleepFrame(0.2), LLMContextFrame(context=context), SleepFrame(0.1)]
        started = time.monotonic()
        await run_test(Pipeline([tap, PerceptionContextProcessor(perception=tap), recorder]),
                       frames_to_send=frames, expected_down_frames=None)
        took = time.monotonic() - started
    assert took < 1.5, "the end of the call cancelled the request in flight"
    assert tap.requests == 1 and tap.readings == 0
    assert recorder.contexts[-1][-1]["content"] == "Hi", "no line yet, and the turn went on"


# -- the persona and its key ------------------------------------------------------------------------------------

BASE = {"persona_name": "Vision", "system_prompt": "You see.", "layers": {"replica": {"replica_engine": "off"}}}


def vision_persona(**perception) -> Persona:
    return Persona.model_validate({**BASE, "layers": {**BASE["layers"], "perception": {"perception_model": "openai", **perception}}})


async def test_the_key_comes_from_the_environment_when_the_persona_has_none(face):
    async with FakeChatServer(lambda _r: "The user smiles").running() as server:
        persona = vision_persona(base_url=server.base_url, model="llava")
        from_env = Settings(_env_file=None, openai_api_key=SecretStr("sk-from-env"))
        check_persona(persona, from_env, name="vision")
        layer = build_perception(persona, from_env, conversation_id="c2")
        await run_test(layer.tap, frames_to_send=[image_frame(face), SleepFrame(0.5)], expected_down_frames=None)
        # A local server with no key anywhere is sent none.
        no_key = build_perception(persona, Settings(_env_file=None))
        await run_test(no_key.tap, frames_to_send=[image_frame(face), SleepFrame(0.5)], expected_down_frames=None)
    assert server.requests[0]["model"] == "llava"
    assert server.headers[0]["Authorization"] == "Bearer sk-from-env"
    assert "Authorization" not in server.headers[1]
    assert layer.tap.cue_line() == "The user smiles"
    analysis = await layer.analysis()
    assert analysis["analysis"].startswith("Seen over the call: at ") and analysis["analysis"].endswith(", The user smiles")
    assert analysis["queries"] == [] and analysis["frames_analysed"] == 1


def test_openai_itself_without_a_key_fails_at_start_with_the_variable_named():
    persona = vision_persona()
    message = "OPENAI_API_KEY is required by persona 'vision' (perception=openai); set it in .env"
    with pytest.raises(MissingKeyError, match=re.escape(message)):
        check_persona(persona, Settings(_env_file=None), name="vision")
    with pytest.raises(MissingKeyError, match="perception=openai"):
        build_perception(persona, Settings(_env_file=None))
    # The persona's own key is enough.
    check_persona(vision_persona(api_key="sk-own"), Settings(_env_file=None), name="vision")


def test_the_interval_is_bounded():
    assert vision_persona().layers.perception.vision_interval_s == 3.0
    for bad in (0.5, 61):
        with pytest.raises(ValidationError, match="vision_interval_s"):
            vision_persona(vision_interval_s=bad)


def test_frames_kept_for_the_analysis_stay_few_and_spread_over_the_call():
    tap = VisionLLMPerceptionProcessor(params=VisionLLMParams(kept_frames=4))
    tap._started = 0.0
    for i in range(100):
        tap._keep(f"frame-{i}", float(i))
    kept = tap.kept_frames()
    assert [at for at, _url in kept] == [0.0, 32.0, 64.0, 96.0, 99.0]
    assert kept[-1][1] == "frame-99", "the last frame sent is always seen"
    assert asyncio.iscoroutinefunction(tap.final_analysis)
