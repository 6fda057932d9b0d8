"""How fast the embedded LLM writes when other programs want the CPU too: llama.cpp thread settings side by side.

On two cores the LLM shares the CPU with the bot (speech, video), the browser
and whatever else the user runs. llama.cpp's threads wait for each other at
every layer, spinning by default (``--poll 50``): when the OS runs something
else on one core, the thread left on the other spins waiting for it. In one
browser visit the decode speed fell from 27 to 2.9 tokens/s that way.

Each setting runs as its own llama-server (the default model, nice 5 as the
bot starts it), all started at once; rounds alternate the settings and the
load: 0, 1 and 2 processes spinning at normal priority. Each request
prefills a fresh ~200-token prompt and writes 32 tokens. Prints median and
worst prefill and decode speed per setting and load.

    python bench/llm_contention.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engines import LLM_NICENESS  # noqa: E402
from bot.settings import get_settings  # noqa: E402
from processors import weights  # noqa: E402
from processors.llm.llama_server import LlamaServer, cpu_summary, find_llama_server  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "llm_contention.json"
SETTINGS = {
    "2 threads, spin (llama.cpp default)": (2, []),
    "2 threads, no spin (--poll 0)": (2, ["--poll", "0"]),
    "1 thread": (1, []),
    "1 thread writing, 2 reading (-tb 2)": (1, ["--threads-batch", "2"]),
}
LOADS = (0, 1, 2)
PROMPT = (
    "You are Ava, a friendly local travel guide for Lisbon. Visitors ask you about food, trams, "
    "viewpoints, music and day trips, and you answer in one or two short spoken sentences. "
)


def _spin() -> None:
    while True:
        pass


async def _one(client: httpx.AsyncClient, server: LlamaServer, n: int) -> tuple[float, float]:
    prompt = PROMPT * 4 + f"Question {n}: what should I see first in Lisbon, and why?\nAnswer:"
    body = {"prompt": prompt, "n_predict": 32, "temperature": 0.0, "cache_prompt": False, "ignore_eos": True}
    response = await client.post(f"{server._root_url}/completion", json=body)
    timings = response.json()["timings"]
    return float(timings["prompt_per_second"]), float(timings["predicted_per_second"])


async def run(rounds: int) -> dict:
    settings = get_settings()
    binary = find_llama_server(settings.cvi_cache_dir, explicit=settings.cvi_llama_server_bin)
    model = weights.llm_gguf(settings.cvi_llm_model or "qwen2.5-coder-0.5b-instruct", cache_dir=settings.cvi_cache_dir)
    servers = {
        name: LlamaServer(binary=binary, model=model, threads=threads, parallel=1, ctx_size=1024,
                          niceness=LLM_NICENESS, extra_args=extra)  # fmt: skip
        for name, (threads, extra) in SETTINGS.items()
    }
    results: dict[str, dict[int, list[tuple[float, float]]]] = {name: {load: [] for load in LOADS} for name in servers}
    for server in servers.values():
        await server.start()
    n = 0
    try:
        async with httpx.AsyncClient(timeout=600) as client:
            for server in servers.values():
                await _one(client, server, -1)  # warm
            for r in range(rounds):
                for load in LOADS:
                    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(load)]
                    for hog in hogs:
                        hog.start()
                    try:
                        names = list(servers) if r % 2 == 0 else list(servers)[::-1]
                        for name in names:
                            n += 1
                            results[name][load].append(await _one(client, servers[name], n))
                    finally:
                        for hog in hogs:
                            hog.terminate()
                    print(f"  round {r + 1}, {load} spinning: "
                          + ", ".join(f"{k.split(' (')[0]} {v[load][-1][1]:.1f}" for k, v in results.items())
                          + " tokens/s decode", flush=True)  # fmt: skip
    finally:
        for server in servers.values():
            await server.stop()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.rounds))
    print(f"\nLLM speed, tokens/s, median (worst) over {args.rounds} requests; {os.cpu_count()} CPUs; {cpu_summary()}")
    print(f"{'setting':<38} " + " ".join(f"{f'{load} spinning: prefill':>22} {'decode':>13}" for load in LOADS))
    table = {}
    for name, by_load in results.items():
        cells, table[name] = [], {}
        for load in LOADS:
            prefill = [p for p, _ in by_load[load]]
            decode = [d for _, d in by_load[load]]
            table[name][load] = {"prefill": prefill, "decode": decode}
            cells.append(f"{statistics.median(prefill):14.0f} ({min(prefill):4.0f}) "
                         f"{statistics.median(decode):6.1f} ({min(decode):4.1f})")  # fmt: skip
        print(f"{name:<38} " + " ".join(cells))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu": cpu_summary(), "rounds": args.rounds, "results": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
