"""The embedded LLM (llama.cpp server, OpenAI protocol) answers as the persona."""

import asyncio
import inspect
import json

import pytest
from pipecat.frames.frames import LLMContextFrame, LLMTextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from bot.engines import build_llm, spoken_text_transforms
from personas import load_persona
from personas.model import Layers, LLMLayer, Persona

pytestmark = pytest.mark.models

LISBON_WORDS = ("lisbon", "nata", "pastel", "sardine", "alfama", "belem", "belém", "tram", "fado", "sintra", "castle", "miradouro", "seafood", "bacalhau", "custard")


async def ask(llm, question: str) -> str:
    context = LLMContext(messages=[{"role": "user", "content": question}])
    down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context=context)])
    return "".join(f.text for f in down if isinstance(f, LLMTextFrame)).strip()


async def test_ava_answers_a_lisbon_question_on_topic(settings, embedded_models):
    ava = load_persona("ava")
    await embedded_models.prepare(ava)
    reply = await ask(build_llm(ava, settings, embedded_models), "What should I eat while I'm here?")
    print(f"Ava: {reply!r}")
    assert reply
    assert any(word in reply.lower() for word in LISBON_WORDS), reply
    # The 0.5B model sometimes answers with a markdown list despite the
    # prompt; what reaches the voice has none of it.
    spoken = reply
    for _, transform in spoken_text_transforms():
        spoken = transform(spoken, "sentence")
        if inspect.isawaitable(spoken):
            spoken = await spoken
    assert "*" not in spoken, f"markdown in a spoken reply: {spoken!r}"
    assert not any(line.lstrip().startswith("#") for line in spoken.splitlines()), spoken


async def test_the_openai_engine_speaks_to_any_compatible_base_url(settings, embedded_models):
    """The cloud LLM path, with its network seam pointed at the local OpenAI-compatible server."""
    ava = load_persona("ava")
    base_url = await embedded_models.start_llm(ava)
    persona = Persona(
        persona_name="compat",
        system_prompt="You are a helpful assistant. Answer in one short sentence.",
        layers=Layers(llm=LLMLayer(engine="openai", base_url=base_url, model="local", max_tokens=30)),
    )
    llm = build_llm(persona, settings, embedded_models)
    assert str(llm._client.base_url).rstrip("/") == base_url.rstrip("/")
    reply = await ask(llm, "What is the capital of France?")
    assert "paris" in reply.lower(), reply


@pytest.mark.parametrize("slot", [None, 1])
async def test_between_turns_the_start_of_the_users_next_message_is_already_in_the_cache(settings, embedded_models, slot):
    """After a reply, the next request processes only the user's words and the assistant's header.

    Also for a conversation pinned to the server's second slot: its requests
    and its warm-up go there (the other slot holds another conversation).
    """
    import httpx

    from bot.engines import build_next_turn_warmer

    ava = load_persona("ava")
    await embedded_models.prepare(ava)
    llm = build_llm(ava, settings, embedded_models, slot=slot)
    warmer = build_next_turn_warmer(ava, llm)
    assert warmer is not None
    context = LLMContext(messages=[{"role": "user", "content": "What should I eat while I'm here?"}])
    down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context=context)])
    context.add_message({"role": "assistant", "content": "".join(f.text for f in down if isinstance(f, LLMTextFrame))})
    assert await warmer.warm(context) is not None
    # One connection for the call, made once off the event loop (a new client costs 50-170 ms of TLS set-up).
    client = warmer._client
    assert client is not None and await warmer.warm(context) is not None and warmer._client is client
    # What the warm-up asks the server for: the conversation's slot, when it has one.
    sent = []

    async def _record(request):
        if request.url.path == "/completion":
            sent.append(json.loads(request.content))

    client.event_hooks["request"].append(_record)
    assert await warmer.warm(context) is not None
    assert [body.get("id_slot") for body in sent] == [slot]

    question = "Where can I watch the sunset?"
    context.add_message({"role": "user", "content": question})
    messages = (await llm.invocation_params(context))["messages"]
    body = {"messages": messages, "max_tokens": 1, "temperature": 0.0, "cache_prompt": True, **llm._settings.extra.get("extra_body", {})}
    assert body.get("id_slot") == slot
    root = str(llm._client.base_url).rstrip("/").removesuffix("/v1")
    async with httpx.AsyncClient(timeout=60) as client:
        words = len((await client.post(f"{root}/tokenize", json={"content": question})).json()["tokens"])
        timings = (await client.post(f"{root}/v1/chat/completions", json=body)).json()["timings"]
    await warmer.close()
    assert client.is_closed
    print(f"next turn: {timings['prompt_n']} prompt tokens processed, the question is {words}")
    # The question, then "<|im_end|>\n<|im_start|>assistant\n" (without the warm-up also the
    # end of the reply and the user's header: about 5 more).
    assert timings["prompt_n"] <= words + 6


async def test_each_conversation_gets_the_least_used_slot_of_the_embedded_server(settings, embedded_models):
    ava = load_persona("ava")
    await embedded_models.prepare(ava)
    assert embedded_models._server is not None and embedded_models._server.slots == 2
    first, second = embedded_models.claim_llm_slot(ava), embedded_models.claim_llm_slot(ava)
    assert {first, second} == {0, 1}
    third = embedded_models.claim_llm_slot(ava)  # a third visitor shares one
    embedded_models.release_llm_slot(first)
    embedded_models.release_llm_slot(third)
    assert embedded_models.claim_llm_slot(ava) in (first, third)  # the one left free
    for slot in (0, 1):
        embedded_models.release_llm_slot(slot)
    # A persona whose LLM is not this process's server gets no slot.
    cloud = Persona(
        persona_name="cloud",
        system_prompt="Be brief.",
        layers=Layers(llm=LLMLayer(engine="openai", base_url="http://127.0.0.1:9/v1", model="m")),
    )
    assert embedded_models.claim_llm_slot(cloud) is None


async def test_a_new_persona_is_warmed_only_into_slots_no_conversation_is_using(settings, embedded_models, monkeypatch):
    ava = load_persona("ava")
    await embedded_models.prepare(ava)
    server = embedded_models._server
    asked = []
    warm = server.warm

    async def spy(system_prompt, history=None, *, slots=None):
        asked.append(slots)
        return await warm(system_prompt, history, slots=slots)

    monkeypatch.setattr(server, "warm", spy)
    taken = embedded_models.claim_llm_slot(ava)
    try:
        await embedded_models.warm_llm("You answer in one short sentence. Test prompt A.")
        other = embedded_models.claim_llm_slot(ava)
        await embedded_models.warm_llm("You answer in one short sentence. Test prompt B.")  # none free
        embedded_models.release_llm_slot(other)
    finally:
        embedded_models.release_llm_slot(taken)
    assert asked == [[1 - taken], [0]], asked


def test_cloud_llms_get_no_next_turn_warm_up(settings, embedded_models):
    from bot.engines import build_next_turn_warmer

    persona = Persona(
        persona_name="cloud",
        system_prompt="Be brief.",
        layers=Layers(llm=LLMLayer(engine="openai", base_url="http://127.0.0.1:9/v1", model="m")),
    )
    assert build_next_turn_warmer(persona, build_llm(persona, settings, embedded_models)) is None


async def _built_bot(settings, embedded_models):
    """Persona ava's ConversationBot, built on a transport that is two plain processors."""
    from pipecat.processors.frame_processor import FrameProcessor

    from bot.pipeline import Conversation, ConversationBot

    class NullTransport:
        def input(self):
            return FrameProcessor()

        def output(self):
            return FrameProcessor()

    ava = load_persona("ava")
    await embedded_models.start_llm(ava)
    bot = ConversationBot(conversation=Conversation(persona=ava, persona_name="ava"), transport=NullTransport(),
                          settings=settings, models=embedded_models, render_video=False)  # fmt: skip
    await bot.build()
    return bot


async def test_the_user_aggregator_takes_transcripts_before_queued_audio_and_ends_the_audio(settings, embedded_models):
    from processors.turn.media_order import InputAudioEnd, MediaLastQueue

    bot = await _built_bot(settings, embedded_models)
    names = [type(p).__name__ for p in bot.processors]
    user = names.index("LLMUserAggregator")
    assert isinstance(bot.processors[user]._FrameProcessor__input_queue, MediaLastQueue)
    assert isinstance(bot.processors[user + 1], InputAudioEnd)


async def test_the_next_turn_warm_up_carries_the_camera_lines_the_next_request_will(settings, embedded_models):
    """A reply started early writes its turn without the camera line; the next request puts it back, so the warm-up must."""
    from processors.perception.processor import CUE_LINE_PREFIX

    bot = await _built_bot(settings, embedded_models)
    assert bot.perception is not None and bot._next_turn is not None
    warmed = []
    bot._next_turn.schedule = lambda context: warmed.append([dict(m) for m in context.get_messages()])
    (assistant,) = [p for p in bot.processors if type(p).__name__ == "LLMAssistantAggregator"]
    context = assistant._context
    context.add_message({"role": "user", "content": "Can you see me?"})
    context.add_message({"role": "assistant", "content": "Yes, I can see you smiling."})
    bot.perception.context._given["can you see me"] = "one person, smiling"
    await assistant._call_event_handler("on_assistant_turn_stopped", None)
    for _ in range(50):  # the handler may run as its own task
        if warmed:
            break
        await asyncio.sleep(0.02)
    (messages,) = warmed
    user = [m for m in messages if m["role"] == "user"][-1]
    assert user["content"] == f"{CUE_LINE_PREFIX}one person, smiling.)\nCan you see me?"
