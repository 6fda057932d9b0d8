"""LlamaServer on the real llama-server binary (built by scripts/setup.sh) and the packaged GGUF."""

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from bot.settings import get_settings
from processors.llm.llama_server import (
    LlamaServer,
    LlamaServerError,
    LlamaServerNotBuiltError,
    find_llama_server,
    llama_server_cache_path,
)
from processors.weights import llm_gguf

pytestmark = pytest.mark.integration

# About 150 tokens each; they differ from the first word so neither is a prefix of the other.
TUTOR_PROMPT = (
    "You are Ava, a friendly conversational English tutor on a video call. You speak with "
    "learners who are practising everyday conversation. Answer in one or two short spoken "
    "sentences, never lists, markdown, emoji or code. Be warm and encouraging, ask one simple "
    "follow-up question to keep the learner talking, and gently correct a mistake by repeating "
    "the sentence correctly. If the learner asks about grammar, give a short example instead of "
    "a rule. Keep a relaxed, natural tone, use contractions, and avoid long words. If you do not "
    "understand, say so briefly and ask the learner to say it again. Never mention that you are "
    "a language model. Stay on the topic the learner chooses, and praise real effort."
)
COACH_PROMPT = (
    "Max is your name, and you coach people on public speaking over a video call. Your replies "
    "are spoken aloud, so keep them to one or two short sentences with no lists or formatting. "
    "Be direct but kind: point out one thing that worked and one thing to try next. Ask the "
    "speaker a single question at the end of each reply so they keep practising. Use plain "
    "everyday words, contractions, and a calm voice. When the speaker seems nervous, suggest a "
    "breathing or pacing trick in a few words. Do not lecture, do not repeat yourself, and never "
    "say you are an AI. If a question is off topic, answer it in one sentence and steer back to "
    "speaking practice with a friendly question about their next talk or presentation."
)


@pytest.fixture(scope="module")
def cache_dir() -> Path:
    return get_settings().cvi_cache_dir.expanduser()


@pytest.fixture(scope="module")
def binary(cache_dir: Path) -> Path:
    return find_llama_server(cache_dir)


@pytest.fixture(scope="module")
def model(cache_dir: Path) -> Path:
    return llm_gguf(None, cache_dir=cache_dir)


def _processes_with(needle: str) -> list[int]:
    """Pids whose command line mentions ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle.encode() in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _first_token(base_url: str, system: str, user: str) -> tuple[float, str, dict]:
    """Seconds until the first streamed content token, the whole answer, and the server's timings."""
    body = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": 40,
        "temperature": 0.0,
        "stream": True,
    }
    started = time.monotonic()
    first = None
    text = []
    timings: dict = {}
    async with httpx.AsyncClient(timeout=60.0) as client:
        async with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                timings = chunk.get("timings") or timings
                delta = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                if delta:
                    first = first or time.monotonic() - started
                    text.append(delta)
    assert first is not None, "no content streamed"
    return first, "".join(text), timings


async def test_serves_chat_completions_and_stops_without_leftovers(binary: Path, model: Path):
    server = LlamaServer(binary=binary, model=model)
    await server.start()
    pid = server.pid
    try:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        async with httpx.AsyncClient(timeout=60.0) as client:
            health = await client.get(server.base_url.removesuffix("/v1") + "/health")
            assert health.json() == {"status": "ok"}
            response = await client.post(
                f"{server.base_url}/chat/completions",
                json={
                    "messages": [{"role": "user", "content": "What is the capital of France? One word."}],
                    "max_tokens": 10,
                    "temperature": 0.0,
                },
            )
        answer = response.json()["choices"][0]["message"]["content"]
        assert "paris" in answer.lower()
    finally:
        await server.stop()
    assert pid is not None and _gone(pid)
    assert server.pid is None
    await server.stop()  # a second stop is harmless


async def test_warm_system_prompt_makes_the_first_token_faster(binary: Path, model: Path):
    async with LlamaServer(binary=binary, model=model) as server:
        _, cold_answer, cold = await _first_token(server.base_url, TUTOR_PROMPT, "Hi! How are you today?")
        await server.warm(COACH_PROMPT)
        _, warm_answer, warm = await _first_token(server.base_url, COACH_PROMPT, "Hi! How are you today?")
    assert cold_answer.strip() and warm_answer.strip()
    # The warmed system prompt is served from the KV cache: only the new turn is processed.
    assert cold["cache_n"] < 10 and cold["prompt_n"] > 150
    assert warm["cache_n"] > 150 and warm["prompt_n"] < 30
    # Time to first token as the server measures it (wall-clock is at the mercy of a busy CI machine).
    assert warm["prompt_ms"] < cold["prompt_ms"], (
        f"prompt {warm['prompt_ms']:.0f} ms warm, {cold['prompt_ms']:.0f} ms cold"
    )


async def test_context_manager_stops_the_process_group(binary: Path, model: Path):
    async with LlamaServer(binary=binary, model=model, parallel=1, ctx_size=1024) as server:
        pid = server.pid
        assert pid is not None and os.getpgid(pid) == pid, "server should lead its own process group"
    assert _gone(pid)


async def test_bogus_model_fails_with_the_servers_own_words_and_leaves_nothing(binary: Path, tmp_path: Path):
    bogus = tmp_path / "bogus-model.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 4096)
    server = LlamaServer(binary=binary, model=bogus, start_timeout=60)
    with pytest.raises(LlamaServerError) as err:
        await server.start()
    message = str(err.value)
    assert "exited with code" in message and "last output" in message
    assert "bogus-model.gguf" in message or "failed to load" in message.lower()
    assert server.pid is None
    assert _processes_with(str(bogus)) == []


async def test_start_timeout_kills_the_server(binary: Path, model: Path):
    server = LlamaServer(binary=binary, model=model, start_timeout=0.01)
    with pytest.raises(LlamaServerError, match="not healthy after"):
        await server.start()
    await asyncio.sleep(0)
    assert server.pid is None
    assert _processes_with(f"--port {server.port}".replace(" ", "\0")) == []


async def test_missing_binary_or_model_are_clear_errors(binary: Path, model: Path, tmp_path: Path):
    with pytest.raises(LlamaServerNotBuiltError, match="run scripts/setup.sh"):
        await LlamaServer(binary=tmp_path / "llama-server", model=model).start()
    with pytest.raises(LlamaServerError, match="does not exist"):
        await LlamaServer(binary=binary, model=tmp_path / "absent.gguf").start()


def test_find_llama_server(binary: Path, cache_dir: Path, tmp_path: Path):
    assert binary == llama_server_cache_path(cache_dir)
    assert find_llama_server(tmp_path, explicit=binary) == binary
    with pytest.raises(LlamaServerNotBuiltError, match="run scripts/setup.sh"):
        find_llama_server(tmp_path)
    with pytest.raises(LlamaServerNotBuiltError, match="not an executable"):
        find_llama_server(tmp_path, explicit=tmp_path / "nope")


async def test_prove_generates_and_measures_the_machine(binary: Path, model: Path):
    """What scripts/setup.sh runs on every binary it builds or finds: one real generation."""
    from processors.llm.llama_server import prove

    result = await prove(binary, model)
    assert result.text.strip()
    assert result.prompt_tokens > 150 and result.decoded_tokens >= 1
    assert result.prefill_tps > 0 and result.decode_tps > 0
    assert "prefill" in str(result) and "tokens/s" in str(result)


def _state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def test_paused_stops_the_server_and_a_stream_waits_for_it(binary: Path, model: Path):
    """While a reply's first words are synthesised the bot pauses the LLM; a stream in flight just waits."""
    async with LlamaServer(binary=binary, model=model, threads=1, ctx_size=512) as server:
        body = {"prompt": "Count from one to a hundred: one, two,", "n_predict": 200, "stream": True,
                "ignore_eos": True, "temperature": 0.0}  # fmt: skip
        arrivals: list[float] = []
        async with httpx.AsyncClient(timeout=60) as client:
            async with client.stream("POST", f"{server._root_url}/completion", json=body) as response:

                async def read():
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            arrivals.append(time.monotonic())

                reader = asyncio.create_task(read())
                while len(arrivals) < 5:
                    await asyncio.sleep(0.02)
                async with server.paused():
                    async with server.paused():  # holds nest
                        await asyncio.sleep(0.1)
                        stopped_at = time.monotonic()
                        assert _state(server.pid) == "T"
                    assert _state(server.pid) == "T"  # the outer hold still holds it
                    await asyncio.sleep(0.8)
                    resumed_at = time.monotonic()
                assert _state(server.pid) != "T"
                while len(arrivals) < len([a for a in arrivals if a < resumed_at]) + 5:
                    await asyncio.sleep(0.02)
                reader.cancel()
        during = [a for a in arrivals if stopped_at + 0.05 < a < resumed_at]
        assert not during, f"{len(during)} tokens arrived while the server was paused"

        # A pause that outlives its limit ends by itself; its holder's exit changes nothing after.
        async with server.paused(max_s=0.2):
            await asyncio.sleep(0.5)
            assert _state(server.pid) != "T"
        assert _state(server.pid) != "T"
        # And a paused server still stops.
        async with server.paused():
            await server.stop()


async def test_two_slots_keep_their_own_prompt_caches_and_warm_fills_both(binary: Path, model: Path):
    """Two conversations pinned to their slots: neither clears the other's cache, and both start warm.

    In one KV buffer shared by the slots (``--kv-unified``) a request to one
    slot cleared the other's cache: its next request processed its whole
    prompt again (347 tokens, 7 s here).
    """
    async with LlamaServer(binary=binary, model=model, parallel=2, ctx_size=1024) as server:
        assert "--kv-unified" not in server.command()
        await server.warm(COACH_PROMPT, [{"role": "assistant", "content": "Hi, what is your next talk about?"}])
        processed = []
        async with httpx.AsyncClient(timeout=120.0) as client:
            for slot, question in ((1, "A wedding toast."), (0, "A job interview."), (1, "And my hands shake."), (0, "I talk too fast.")):
                body = {
                    "messages": [
                        {"role": "system", "content": COACH_PROMPT},
                        {"role": "assistant", "content": "Hi, what is your next talk about?"},
                        {"role": "user", "content": question},
                    ],
                    "max_tokens": 2,
                    "cache_prompt": True,
                    "id_slot": slot,
                }
                response = await client.post(f"{server.base_url}/chat/completions", json=body)
                response.raise_for_status()
                processed.append(response.json()["timings"]["prompt_n"])
        print(f"prompt tokens processed per request: {processed}")
        assert max(processed) < 20, processed


async def test_a_warm_up_for_the_free_slot_leaves_the_busy_one_writing_and_its_cache_whole(binary: Path, model: Path):
    """A persona warmed (slots=[0]) while another conversation writes its reply in slot 1.

    The warm-up does not wait for that reply, and slot 1 keeps its
    conversation's cache: its next request processes only the new words.
    """
    async with LlamaServer(binary=binary, model=model, parallel=2, ctx_size=1024) as server:
        messages = [{"role": "system", "content": TUTOR_PROMPT}, {"role": "user", "content": "Tell me a story."}]
        body = {"messages": messages, "max_tokens": 120, "ignore_eos": True, "id_slot": 1}
        async with httpx.AsyncClient(timeout=120.0) as client:
            writing = asyncio.create_task(client.post(f"{server.base_url}/chat/completions", json=body))
            await asyncio.sleep(1.0)  # slot 1 is writing
            await server.warm(COACH_PROMPT, slots=[0])
            assert not writing.done()
            reply = (await writing).json()
            assert reply["usage"]["completion_tokens"] == 120  # the other conversation's reply went on
            story = reply["choices"][0]["message"]["content"]
            follow_up = {
                "messages": [*messages, {"role": "assistant", "content": story}, {"role": "user", "content": "Nice."}],
                "max_tokens": 1,
                "id_slot": 1,
            }
            again = (await client.post(f"{server.base_url}/chat/completions", json=follow_up)).json()
            coach = {"messages": [{"role": "system", "content": COACH_PROMPT}, {"role": "user", "content": "Hi."}],
                     "max_tokens": 1, "id_slot": 0}
            warmed = (await client.post(f"{server.base_url}/chat/completions", json=coach)).json()
        print(f"slot 1 after the warm-up: {again['timings']['prompt_n']} tokens; slot 0: {warmed['timings']['prompt_n']}")
        assert again["timings"]["prompt_n"] < 20 and warmed["timings"]["prompt_n"] < 20
