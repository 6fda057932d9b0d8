"""The LLM stops writing once nothing more of its reply will be spoken.

The bot's own LLM service (``build_llm``) against an OpenAI-compatible server
on loopback that writes one word every 50 ms, as a small LLM on busy cores
does; the spoken-reply shaper (3 sentences at most) and the cue answers
after it, as in the bot.
"""

import asyncio

import pytest
from pipecat.frames.frames import LLMContextFrame, LLMFullResponseEndFrame, LLMTextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from bot.engines import SPOKEN_MAX_SENTENCES, EmbeddedModels, build_llm, build_spoken_reply
from personas import load_persona
from processors.perception.answers import CueAnswerProcessor
from tests.fake_openai import FakeChatServer, Paced

pytestmark = pytest.mark.integration

REPLY = (
    "Lisbon is lovely in spring. Take tram 28 up to the castle. Then watch the sunset from a miradouro. "
    "After that you could walk down through Alfama and find a small place for grilled sardines, "
    "or keep going to the river and take the ferry across for the view back at the city at night."
)


class Said(FrameProcessor):
    def __init__(self):
        super().__init__()
        self.text = ""
        self.ends = 0

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.text += frame.text
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.ends += 1
        await self.push_frame(frame, direction)


async def _reply(settings, *stages, question: str = "What should I do in Lisbon?"):
    ava = load_persona("ava")
    said = Said()
    async with FakeChatServer(lambda _request: Paced(0.05, REPLY)).running() as server:
        llm_layer = ava.layers.llm.model_copy(update={"engine": "openai", "base_url": server.base_url})
        persona = ava.model_copy(update={"layers": ava.layers.model_copy(update={"llm": llm_layer})})
        llm = build_llm(persona, settings, EmbeddedModels(settings))
        context = LLMContext(messages=[{"role": "user", "content": question}])
        await run_test(
            Pipeline([llm, *stages, build_spoken_reply(persona), said]),
            frames_to_send=[LLMContextFrame(context=context), SleepFrame(4.0)],
            expected_down_frames=None,
        )
        await asyncio.sleep(0.1)
        return said, server, llm


async def test_the_llm_stops_once_the_reply_has_its_last_sentence(settings):
    said, server, llm = await _reply(settings)
    assert SPOKEN_MAX_SENTENCES == 3
    assert said.text.strip() == (
        "Lisbon is lovely in spring. Take tram 28 up to the castle. Then watch the sunset from a miradouro."
    )
    assert said.ends == 1
    words = len(REPLY.split(" "))
    # It stopped a word or two after the third sentence, not at the end of the reply.
    assert server.client_left == [True]
    assert server.words_sent[0] <= 22 < words, server.words_sent
    assert llm.stopped_early == 1


async def test_the_llm_stops_when_the_cues_answer_in_its_place(settings):
    answers = CueAnswerProcessor()
    answers.expect("Yes, I can see you.")
    said, server, _llm = await _reply(settings, answers, question="Can you see me?")
    assert said.text.strip() == "Yes, I can see you."
    assert server.client_left == [True]
    assert server.words_sent[0] <= 3, server.words_sent
