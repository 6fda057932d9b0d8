"""Does the replica say what the camera shows when asked? The LLM given the cue line, against the cues' own answer.

    .venv/bin/python bench/perception_replies.py [--models 0.5b,1.5b] [--persona ava] [--tries 3]

A visitor smiling at the camera asks about their own picture ("Can you see
me?", "Am I smiling?", "How do I look?", ...). Each question goes to
llama-server as the bot sent it before ``CueAnswerProcessor``: the persona's
system prompt, the greeting, and the question with perception's cue line
before it ("(What you see on camera: the user is smiling and looking at
you.)"), at the persona's temperature, ``--tries`` seeds each. A reply is
right when it tells the visitor they are smiling or looking at the replica
(you/you're ... smiling, happy, looking at me) and wrong when it says so of
itself ("Yes, I am smiling!"), denies it, or talks of something else. The
same questions answered by the cues (what the bot says now with the embedded
LLM) are scored by the same rule. Prints a table; JSON in
``bench/results/perception_replies.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import zlib
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.answer_quality import MODELS, machine_speed  # noqa: E402
from bot.settings import Settings  # noqa: E402
from personas import load_persona  # noqa: E402
from processors import weights  # noqa: E402
from processors.llm.llama_server import LlamaServer, find_llama_server  # noqa: E402
from processors.perception.answers import answer_from_cues, camera_question  # noqa: E402
from processors.perception.processor import CUE_LINE_PREFIX  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "perception_replies.json"
LINE = "the user is smiling and looking at you"
CUES = {"faces": {"value": 1}, "expression": {"value": "smiling"}, "attention": {"value": "looking"},
        "lighting": {"value": "ok"}}  # fmt: skip
QUESTIONS = (
    "Can you see me?",
    "How do I look?",
    "Am I smiling?",
    "Do I look happy today?",
    "What do you see?",
    "Am I looking at the camera?",
)
# Told of the visitor: "you're smiling", "you look happy", "the visitor is smiling", "looking at me".
RIGHT = re.compile(
    r"\b(you|you're|you are|visitor|they|they're)\b[^.?!]{0,30}\b(smil\w*|happy|cheerful|looking (right )?at (me|the camera))"
    r"|\bsee (you|a visitor|the visitor)[^.?!]{0,20}\b(smil\w*|looking at me)",
    re.IGNORECASE,
)
# Said of itself, or denied.
WRONG = re.compile(r"\bI(?:'m| am)\b[^.?!]{0,12}\b(smil\w*|happy|looking)|\bnot smil|\bcan(?:'t|not) see", re.IGNORECASE)


def right(reply: str) -> bool:
    return bool(RIGHT.search(reply)) and not WRONG.search(reply)


async def ask_llm(client: httpx.AsyncClient, base_url: str, system: str, greeting: str, question: str, persona, seed: int) -> str:
    messages = [
        {"role": "system", "content": system},
        {"role": "assistant", "content": greeting},
        {"role": "user", "content": f"{CUE_LINE_PREFIX}{LINE}.)\n{question}"},
    ]
    body = {"messages": messages, "temperature": persona.layers.llm.temperature,
            "max_tokens": persona.layers.llm.max_tokens, "seed": seed, "cache_prompt": True}  # fmt: skip
    response = await client.post(f"{base_url}/chat/completions", json=body)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"].strip()


async def run(models: list[str], persona_key: str, tries: int, threads: int) -> dict:
    settings = Settings()
    persona = load_persona(persona_key)
    system = persona.full_system_prompt()
    greeting = persona.custom_greeting or "Hi."
    rows = []
    cue_replies = []
    for question in QUESTIONS:
        kind, asked = camera_question(question)
        reply = answer_from_cues(kind, asked, CUES)
        cue_replies.append({"question": question, "reply": reply, "right": right(reply)})
    rows.append({"answered_by": "the cues (the bot now, embedded LLM)", "model": "-", "speed": None,
                 "right": sum(r["right"] for r in cue_replies), "asked": len(cue_replies), "replies": cue_replies})  # fmt: skip
    for key in models:
        config = MODELS[key]
        gguf = weights.llm_gguf(config.model, cache_dir=settings.cvi_cache_dir, allow_download=False)
        server = LlamaServer(binary=find_llama_server(settings.cvi_cache_dir, explicit=settings.cvi_llama_server_bin),
                             model=gguf, threads=threads, parallel=1)  # fmt: skip
        replies = []
        async with server, httpx.AsyncClient(timeout=300.0) as client:
            speed = await machine_speed(client, server.base_url)
            await server.warm(system, [{"role": "assistant", "content": greeting}])
            for question in QUESTIONS:
                for t in range(tries):
                    reply = await ask_llm(client, server.base_url, system, greeting, question, persona,
                                          seed=zlib.crc32(question.encode()) + t)  # fmt: skip
                    replies.append({"question": question, "reply": reply, "right": right(reply)})
                    print(f"  [{key}] {'ok ' if right(reply) else 'NO '} {question!r:32} {reply[:100]!r}", flush=True)
        rows.append({"answered_by": "the LLM, given the cue line", "model": key, "speed": speed,
                     "right": sum(r["right"] for r in replies), "asked": len(replies), "replies": replies})  # fmt: skip
    return {"persona": persona_key, "line": LINE, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="0.5b", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--persona", default="ava")
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run([m for m in args.models.split(",") if m], args.persona, args.tries, args.threads))
    print(f"\npersona {result['persona']}, the visitor smiling at the camera, {len(QUESTIONS)} questions about it\n")
    print("| answered by | model | right | prefill / decode tok/s |")
    print("|---|---|---|---|")
    for row in result["rows"]:
        speed = row["speed"]
        tps = f"{speed['prefill_tps']:.0f} / {speed['decode_tps']:.1f}" if speed else "-"
        print(f"| {row['answered_by']} | {row['model']} | {row['right']}/{row['asked']} "
              f"({100 * row['right'] / row['asked']:.0f} %) | {tps} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
