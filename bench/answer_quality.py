"""Answer quality of the embedded LLM, per model x prompt setup, beside its speed on this machine.

    .venv/bin/python bench/answer_quality.py [--models 0.5b,1.5b,1.5b+draft]
        [--setups original,shipped,...] [--personas ava,max] [--split tune|held_out|all]

Every question of ``bench/answer_questions.py`` goes to llama-server as the
bot sends it: the persona's system prompt, the greeting as the first
assistant turn (both warm in the prompt cache, as in a call), the question,
the persona's temperature and ``max_tokens``, streamed over the OpenAI chat
protocol. What would be spoken is the stream passed through the same
``SpokenReplyShaper`` the bot runs between LLM and TTS (setup ``original``:
no shaper, as the bot was before it). Each reply is scored automatically:

- ``error``: HTTP error, empty reply, or garbage (not English words);
- ``cut``: the spoken reply stops mid-sentence;
- ``long``: more than 3 sentences or 45 words, too long for speech;
- ``markup``: lists, markdown or emoji in what is spoken, or a reply written as a list;
- ``name``: the persona's name used for the user;
- ``missing``: a required fact is absent; ``wrong``: a forbidden claim is present.

A reply passes when none of these hold. Timings per reply: time to first
token and to the first whole sentence (what the TTS needs to speak the first
sentence; it starts on the first clause, sooner). The machine's prefill and
decode speed for each model (tokens/s, a fixed 400-token prompt and 64 tokens
out, no cache) is printed beside them. Prints a table and writes
``bench/results/answer_quality.json``.

Replies past the sentence limit are not read to the end (the stream is
closed), which changes no figure here. Sampling uses a fixed seed per
question, so reruns on one machine give the same replies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.answer_questions import QUESTION_SETS, Question, QuestionSet  # noqa: E402
from bot.settings import Settings  # noqa: E402
from personas import load_persona  # noqa: E402
from personas.model import Persona  # noqa: E402
from processors import weights  # noqa: E402
from processors.llm.llama_server import LlamaServer, find_llama_server  # noqa: E402
from processors.llm.spoken_reply import (  # noqa: E402
    SpokenReplyShaper,
    addresses_by_name,
    ends_whole,
    has_markup,
    is_list,
)
from processors.perception.processor import CUE_LINE_PREFIX  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "answer_quality.json"
MAX_SPOKEN_SENTENCES = 3
MAX_SPOKEN_WORDS = 45
CHECKS = ("error", "cut", "long", "markup", "name", "missing", "wrong")
# The LLM's share of the reply-latency budget (issue 8: reply audible within
# 1.2 s median of the end of speech; STT, turn decision, TTS and transport
# take ~0.6 s of it on two cores).
TTFT_BUDGET_MS = 400
FIRST_SENTENCE_BUDGET_MS = 1000


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelConfig:
    key: str
    model: str  # a packaged name (processors.weights) or a .gguf path
    draft: str | None = None
    extra_args: tuple[str, ...] = ()


MODELS = {
    "0.5b": ModelConfig("0.5b", "qwen2.5-coder-0.5b-instruct"),
    "1.5b": ModelConfig("1.5b", "qwen2.5-coder-1.5b-instruct"),
    "1.5b+draft": ModelConfig(
        "1.5b+draft",
        "qwen2.5-coder-1.5b-instruct",
        draft="qwen2.5-coder-0.5b-instruct",
        extra_args=("--spec-draft-n-max", "8", "--spec-draft-n-min", "0"),
    ),
}


# --------------------------------------------------------------------------- prompt setups


@dataclass(frozen=True)
class PromptSetup:
    """How the system prompt is built, and how many sentences are spoken (None: the shaper is off)."""

    key: str
    description: str
    prompts: dict[str, str] = field(default_factory=dict)  # persona -> system prompt; empty: the shipped one
    max_sentences: int | None = MAX_SPOKEN_SENTENCES
    shaped: bool = True
    # What perception sees, put before each question as the bot puts it (None: perception off).
    camera_line: str | None = None

    def system_prompt(self, persona_key: str, persona: Persona) -> str:
        return self.prompts.get(persona_key) or persona.full_system_prompt()


# The cue line perception gives most turns of a call (someone at their camera, smiling at the replica).
CAMERA_LINE = "the user is smiling and looking at you"

# The personas' prompts before this bench (commit 34573f0), for comparison.
ORIGINAL = {
    "ava": (
        "You are Ava, a friendly local travel guide for Lisbon, Portugal, talking "
        "with a visitor on a live video call. Your replies are spoken aloud, so "
        "answer in one or two short, natural sentences with no lists, no markdown "
        "and no emojis. Be warm and specific: name real places, dishes and "
        "neighbourhoods of Lisbon.\n\n"
        "Things you love to recommend: pastel de nata at a bakery in Belem, "
        "grilled sardines in Alfama, tram 28 up to the castle, sunset at a "
        "miradouro, fado music at night, day trips to Sintra."
    ),
    "max": (
        "You are Max, a patient maths tutor on a live video call with a student. "
        "Your replies are spoken aloud: keep them to one or two short sentences, "
        "say numbers and symbols in words, never use lists or markdown. Guide the "
        "student with a hint or a question instead of giving the whole answer.\n\n"
        "The student is practising arithmetic, fractions and simple algebra."
    ),
}

# The shipped personas' own rules (system prompt) and facts (context): read from personas/, never copied.
_SHIPPED = {key: load_persona(key) for key in ORIGINAL}
RULES = {key: persona.system_prompt for key, persona in _SHIPPED.items()}
FACTS = {key: persona.context for key, persona in _SHIPPED.items()}

EXAMPLES = {
    "ava": (
        "How you talk, for example:\n"
        "Visitor: Hello!\n"
        "Ava: Hi there, welcome to Lisbon! Are you in the mood for food, views or music?\n"
        "Visitor: What should I see first?\n"
        "Ava: Ride tram 28 up to the castle, then watch the sunset from a miradouro.\n"
        "Visitor: When does the Time Out Market close tonight?\n"
        "Ava: I'm not sure of tonight's hours, so check their website before you go.\n"
        "Visitor: Can you fix my laptop?\n"
        "Ava: That's not something I can help with, but I know a quiet cafe where you could work.\n"
        "Visitor: That's all for now.\n"
        "Ava: Lovely talking with you, enjoy your time in Lisbon!"
    ),
    "max": (
        "How you talk, for example:\n"
        "Student: What's nine times six?\n"
        "Max: Think of it as ten sixes minus one six; what do you get?\n"
        "Student: Is it fifty-five?\n"
        "Max: Not quite, check the last step: sixty minus six.\n"
        "Student: Can you write my essay?\n"
        "Max: That's not my area, but I'd love to give you a fraction puzzle instead.\n"
        "Student: I hate algebra.\n"
        "Max: That's okay, we'll take it one small step at a time.\n"
        "Student: See you!\n"
        "Max: Great work today, see you next time!"
    ),
}


def _join(*parts: dict[str, str]) -> dict[str, str]:
    return {key: "\n\n".join(part[key] for part in parts) for key in parts[0]}


SETUPS = {
    "original": PromptSetup("original", "prompts before this bench, reply as the LLM wrote it (cut by max_tokens)",
                            ORIGINAL, max_sentences=None, shaped=False),
    "original+shaper": PromptSetup("original+shaper", "prompts before this bench, spoken through the shaper (3 sentences)",
                                   ORIGINAL),
    "rules": PromptSetup("rules", "explicit rules (no name for the user, say when unsure, stay on topic)",
                         _join(RULES, {k: ORIGINAL[k].split("\n\n")[1] for k in ORIGINAL})),
    "rules+facts": PromptSetup("rules+facts", "rules + the persona's context as short facts", _join(RULES, FACTS)),
    "rules+facts+examples": PromptSetup("rules+facts+examples", "rules + facts + five example exchanges",
                                        _join(RULES, FACTS, EXAMPLES)),
    "rules+facts+examples/2": PromptSetup("rules+facts+examples/2", "as above, at most 2 sentences spoken",
                                          _join(RULES, FACTS, EXAMPLES), max_sentences=2),
    "shipped": PromptSetup("shipped", "the personas as they are in personas/ (3 sentences)"),
    "shipped+camera": PromptSetup("shipped+camera", "as shipped, with perception's line before each question",
                                  camera_line=CAMERA_LINE),
}


# --------------------------------------------------------------------------- scoring


def is_garbage(text: str) -> bool:
    """Not English speech: foreign scripts, symbol soup, or words without vowels."""
    if not text.strip():
        return True
    odd = sum(1 for ch in text if ord(ch) > 0x24F and ch not in "‘’“”–—…°€£")
    words = re.findall(r"\S+", text)
    wordlike = [w for w in words if re.fullmatch(r"[\"'(]*[A-Za-z][A-Za-z'’-]*[.,!?;:\"')]*|[\d.,:%°€$-]+[.,!?]?", w)]
    voweled = [w for w in wordlike if re.search(r"[aeiouyAEIOUY\d]", w)]
    return odd / len(text) > 0.05 or len(voweled) < 0.7 * len(words)


def score(question: Question, persona_name: str, raw: str, spoken: str, error: str | None) -> dict[str, bool]:
    """Which checks fail for this reply (True: fails)."""
    if error or is_garbage(spoken):
        return {check: check == "error" for check in CHECKS}
    text = spoken.lower()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", spoken.strip()) if s]
    return {
        "error": False,
        "cut": not ends_whole(spoken),
        "long": len(sentences) > MAX_SPOKEN_SENTENCES or len(spoken.split()) > MAX_SPOKEN_WORDS,
        "markup": has_markup(spoken) or is_list(raw),
        "name": addresses_by_name(spoken, persona_name),
        "missing": any(not re.search(need, text, re.IGNORECASE) for need in question.need),
        "wrong": any(re.search(forbid, text, re.IGNORECASE) for forbid in question.forbid),
    }


# --------------------------------------------------------------------------- running


@dataclass
class Reply:
    persona: str
    question: str
    held_out: bool
    raw: str
    spoken: str
    error: str | None
    ttft_ms: float | None
    first_sentence_ms: float | None
    prompt_tokens: int | None
    predicted_tokens: int | None
    fails: dict[str, bool]

    @property
    def passed(self) -> bool:
        return not any(self.fails.values())


@contextlib.asynccontextmanager
async def _stream_retrying_stale(client: httpx.AsyncClient, url: str, body: dict):
    """POST and stream; once more if the server had closed the pooled keep-alive connection
    (the OpenAI client the bot uses retries such connection errors too)."""
    try:
        async with client.stream("POST", url, json=body) as response:
            yield response
            return
    except httpx.RemoteProtocolError:
        pass
    async with client.stream("POST", url, json=body) as response:
        yield response


async def ask(
    client: httpx.AsyncClient,
    base_url: str,
    *,
    system: str,
    greeting: str | None,
    question: Question,
    persona: Persona,
    setup: PromptSetup,
) -> Reply:
    """One turn, streamed, timed and scored."""
    messages = [{"role": "system", "content": system}]
    if greeting:
        messages.append({"role": "assistant", "content": greeting})
    text = question.text
    if setup.camera_line:
        text = f"{CUE_LINE_PREFIX}{setup.camera_line}.)\n{text}"
    messages.append({"role": "user", "content": text})
    body = {
        "messages": messages,
        "temperature": persona.layers.llm.temperature,
        "max_tokens": persona.layers.llm.max_tokens,
        "stream": True,
        "cache_prompt": True,
        "seed": zlib.crc32(question.id.encode()),
    }
    shaper = SpokenReplyShaper(
        persona_name=persona.persona_name, max_sentences=setup.max_sentences, max_tokens=persona.layers.llm.max_tokens
    )
    ttft = first_sentence = None
    error = None
    timings: dict = {}
    spoken_parts: list[str] = []
    started = time.perf_counter()
    try:
        async with _stream_retrying_stale(client, f"{base_url}/chat/completions", body) as response:
            if response.status_code != 200:
                error = f"HTTP {response.status_code}: {(await response.aread()).decode(errors='replace')[:200]}"
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        error = f"stream error: {chunk['error']}"
                        break
                    timings = chunk.get("timings") or timings
                    for choice in chunk.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if not piece:
                            continue
                        now = time.perf_counter()
                        if ttft is None:
                            ttft = (now - started) * 1000
                        if setup.shaped:
                            spoken_parts.append(shaper.feed(piece))
                            if first_sentence is None and shaper.sentences:
                                first_sentence = (now - started) * 1000
                        else:
                            shaper.feed(piece)  # only to time the first sentence of the raw reply
                            if first_sentence is None and shaper.sentences:
                                first_sentence = (now - started) * 1000
                    if setup.shaped and shaper.done:
                        break  # the rest would not be spoken
    except httpx.HTTPError as e:
        error = f"{type(e).__name__}: {e}"
    raw = shaper.raw
    if setup.shaped:
        spoken_parts.append(shaper.finish())
        spoken = "".join(spoken_parts).strip()
    else:
        spoken = raw.strip()
    if first_sentence is None and ends_whole(spoken):
        first_sentence = (time.perf_counter() - started) * 1000
    return Reply(
        persona=persona.persona_name,
        question=question.id,
        held_out=question.held_out,
        raw=raw,
        spoken=spoken,
        error=error,
        ttft_ms=ttft,
        first_sentence_ms=first_sentence,
        prompt_tokens=timings.get("prompt_n"),
        predicted_tokens=timings.get("predicted_n"),
        fails=score(question, persona.persona_name, raw, spoken, error),
    )


async def machine_speed(client: httpx.AsyncClient, base_url: str) -> dict[str, float]:
    """Prefill and decode tokens/s of the served model: 400 new prompt tokens, 64 out."""
    root = base_url.removesuffix("/v1")
    words = " ".join(f"word{i % 97} and" for i in range(200))  # ~400 tokens, unique per call below
    out = {}
    for attempt in range(2):
        body = {
            "prompt": f"[{attempt}-{time.time()}] {words}",
            "n_predict": 64,
            "cache_prompt": False,
            "ignore_eos": True,
            "temperature": 0.0,
        }
        response = await client.post(f"{root}/completion", json=body)
        response.raise_for_status()
        t = response.json()["timings"]
        out = {"prefill_tps": t["prompt_per_second"], "decode_tps": t["predicted_per_second"],
               "prompt_tokens": t["prompt_n"]}  # fmt: skip
    return out


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _p95(values: list[float | None]) -> float | None:
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    return present[min(len(present) - 1, round(0.95 * (len(present) - 1)))]


def summarize(replies: list[Reply]) -> dict:
    out: dict = {"replies": len(replies)}
    for split, chosen in (("all", replies), ("tune", [r for r in replies if not r.held_out]),
                          ("held_out", [r for r in replies if r.held_out])):  # fmt: skip
        if chosen:
            out[f"pass_{split}"] = sum(r.passed for r in chosen) / len(chosen)
            out[f"n_{split}"] = len(chosen)
    out["fails"] = {check: sum(r.fails[check] for r in replies) for check in CHECKS}
    out["ttft_ms_median"] = _median([r.ttft_ms for r in replies])
    out["ttft_ms_p95"] = _p95([r.ttft_ms for r in replies])
    out["first_sentence_ms_median"] = _median([r.first_sentence_ms for r in replies])
    out["first_sentence_ms_p95"] = _p95([r.first_sentence_ms for r in replies])
    return out


def chosen_questions(qset: QuestionSet, split: str, limit: int | None) -> list[Question]:
    """The questions of ``split``; with ``limit``, that many spread evenly over the set."""
    questions = [
        question for question in qset.questions
        if split == "all" or question.held_out == (split == "held_out")
    ]  # fmt: skip
    if limit is not None and limit < len(questions):
        step = len(questions) / limit
        questions = [questions[int(i * step)] for i in range(limit)]
    return questions


async def run_model(
    config: ModelConfig,
    setups: list[PromptSetup],
    sets: list[QuestionSet],
    *,
    split: str,
    settings: Settings,
    threads: int,
    limit: int | None = None,
) -> dict:
    cache_dir = settings.cvi_cache_dir
    gguf = weights.llm_gguf(config.model, cache_dir=cache_dir, allow_download=False)
    extra = list(config.extra_args)
    if config.draft:
        extra = ["--model-draft", str(weights.llm_gguf(config.draft, cache_dir=cache_dir, allow_download=False)), *extra]
    server = LlamaServer(
        binary=find_llama_server(cache_dir, explicit=settings.cvi_llama_server_bin),
        model=gguf,
        threads=threads,
        parallel=1,
        extra_args=extra,
    )
    result: dict = {"model": config.key, "gguf": gguf.name, "draft": config.draft, "setups": {}}
    async with server:
        async with httpx.AsyncClient(timeout=600.0) as client:
            result["speed"] = await machine_speed(client, server.base_url)
            print(f"{config.key}: prefill {result['speed']['prefill_tps']:.0f} tok/s, "
                  f"decode {result['speed']['decode_tps']:.1f} tok/s", flush=True)  # fmt: skip
            for setup in setups:
                replies: list[Reply] = []
                for qset in sets:
                    persona = load_persona(qset.persona)
                    system = setup.system_prompt(qset.persona, persona)
                    greeting = persona.custom_greeting
                    await server.warm(system, [{"role": "assistant", "content": greeting}] if greeting else [])
                    for question in chosen_questions(qset, split, limit):
                        reply = await ask(client, server.base_url, system=system, greeting=greeting,
                                          question=question, persona=persona, setup=setup)  # fmt: skip
                        replies.append(reply)
                        mark = "ok " if reply.passed else ",".join(k for k, v in reply.fails.items() if v)
                        print(f"  [{config.key} {setup.key}] {question.id} {mark:>14} | {reply.spoken[:110]!r}"
                              f"{' ' + reply.error if reply.error else ''}", flush=True)  # fmt: skip
                summary = summarize(replies)
                for qset in sets:
                    mine = [r for r in replies if r.persona == load_persona(qset.persona).persona_name]
                    summary[qset.persona] = summarize(mine)
                result["setups"][setup.key] = {
                    "description": setup.description,
                    "max_sentences": setup.max_sentences,
                    "summary": summary,
                    "replies": [asdict(r) for r in replies],
                }
    return result


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def table(results: list[dict], personas: list[str]) -> str:
    head = ["model", "prompt setup", "pass (tune)", "pass (held out)"]
    head += [f"{p} pass" for p in personas]
    head += ["cut", "name", "markup", "long", "missing", "wrong", "error",
             "TTFT ms med / p95", "1st sentence ms med / p95", "prefill / decode tok/s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        speed = result["speed"]
        for key, setup in result["setups"].items():
            s = setup["summary"]
            row = [result["model"], key, _pct(s.get("pass_tune")), _pct(s.get("pass_held_out"))]
            row += [_pct(s[p].get("pass_all")) for p in personas if p in s]
            row += [str(s["fails"][c]) for c in ("cut", "name", "markup", "long", "missing", "wrong", "error")]
            row += [f"{_ms(s['ttft_ms_median'])} / {_ms(s['ttft_ms_p95'])}",
                    f"{_ms(s['first_sentence_ms_median'])} / {_ms(s['first_sentence_ms_p95'])}",
                    f"{speed['prefill_tps']:.0f} / {speed['decode_tps']:.1f}"]  # fmt: skip
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="0.5b,1.5b,1.5b+draft", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--setups", default="original,shipped", help=f"comma-separated: {', '.join(SETUPS)}")
    parser.add_argument("--personas", default=",".join(QUESTION_SETS), help="comma-separated")
    parser.add_argument("--split", choices=("tune", "held_out", "all"), default="all")
    parser.add_argument("--limit", type=int, default=None, help="at most this many questions per persona")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        models = [MODELS[m] for m in args.models.split(",")]
        setups = [SETUPS[s] for s in args.setups.split(",")]
        sets = [QUESTION_SETS[p] for p in args.personas.split(",")]
    except KeyError as e:
        parser.error(f"unknown name {e}; models: {', '.join(MODELS)}; setups: {', '.join(SETUPS)}; "
                     f"personas: {', '.join(QUESTION_SETS)}")  # fmt: skip
    settings = Settings()
    results = []
    for config in models:
        try:
            results.append(asyncio.run(run_model(config, setups, sets, split=args.split, settings=settings,
                                                 threads=args.threads, limit=args.limit)))  # fmt: skip
        except weights.WeightsNotInstalledError as e:
            print(f"{config.key}: skipped ({e})", flush=True)
    personas = [s.persona for s in sets]
    print()
    print(table(results, personas))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
          f"split: {args.split}{f', {args.limit} per persona' if args.limit else ''}; budget: TTFT <= {TTFT_BUDGET_MS} ms, first sentence <= {FIRST_SENTENCE_BUDGET_MS} ms (median)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": cpu, "split": args.split, "limit": args.limit, "results": results,
                                    "budget_ms": {"ttft": TTFT_BUDGET_MS, "first_sentence": FIRST_SENTENCE_BUDGET_MS}},
                                   indent=1))  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
