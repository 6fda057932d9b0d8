"""How long piper takes for a reply's first chunk while the LLM writes and the browser draws: ONNX Runtime settings side by side.

On two cores a reply's first chunk is synthesised while llama-server writes
the rest of the reply (one thread, nice 5, as the bot starts it) and the
browser decodes the replica's video. On an idle machine piper makes a
7-word chunk in about 0.2 s; inside a browser visit it took 0.5-1.5 s.

Each setting is its own ONNX Runtime session of the same voice, in this
process (which stands in for the bot). Loads, in turn: none; the LLM writing
a long reply; the LLM writing plus one process spinning at normal priority
(the browser); and those plus the replica rendered and VP8-encoded at 25
frames a second in a thread of this process, as the bot does while it speaks. Rounds alternate the settings' order. Each measurement is
the wall time of ``voice.synthesize`` for one short chunk, as the bot's TTS
does it in a worker thread. Prints median / p95 / max per setting and load,
and this machine's LLM speed, and writes ``bench/results/tts_contention.json``.

    python bench/tts_contention.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engines import LLM_NICENESS  # noqa: E402
from bot.settings import get_settings  # noqa: E402
from processors import weights  # noqa: E402
from processors.llm.llama_server import LlamaServer, cpu_summary, find_llama_server, prove  # noqa: E402
from processors.tts.piper import load_piper_voice, piper_session_options  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tts_contention.json"
CHUNKS = (
    "Shodai Dyn Lisbon",
    "The best time to visit",
    "You should try the pastel de nata",
    "Tram 28 climbs through Alfama",
    "I would start at the castle,",
    "Sintra is a short train ride",
)
LOADS = ("idle", "LLM writing", "LLM writing + 1 spinning", "LLM + 1 spinning + replica video",
         "LLM paused + 1 spinning + replica video")


SETTINGS = {
    "piper's default (all cores, spinning)": None,
    "2 threads, no spin (the bot's)": (2, False),
    "1 thread": (1, True),
    "1 thread, no spin": (1, False),
}


def _spin() -> None:
    while True:
        pass


def _replica_video(stop: threading.Event) -> None:
    """The bot's own video while it speaks: the replica rendered and VP8-encoded at 25 frames a second, in this process."""
    import fractions

    import av

    from bot.webrtc_video import ReplicaVp8Encoder
    from processors.replica.assets import load_replica
    from processors.replica.face import FaceRig, IdleMotion

    rig, idle, encoder = FaceRig(load_replica("eileen")), IdleMotion(seed=1), ReplicaVp8Encoder()
    i, start = 0, time.monotonic()
    while not stop.is_set():
        t = i / 25
        mouth = np.array([0.3 + 0.3 * np.sin(7 * t), 0.1, 0.2, 0.0, 0.0], np.float32)
        frame = av.VideoFrame.from_ndarray(rig.render(idle.pose_at(t, mouth, 0.5, 2.0)), format="rgb24")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90000)
        encoder.encode(frame, force_keyframe=i == 0)
        i += 1
        time.sleep(max(0.0, start + i / 25 - time.monotonic()))


def _voices(voice_path: Path) -> dict:
    """One voice per setting, each on its own ONNX Runtime session."""
    from piper import PiperVoice

    voices = {}
    for name, setting in SETTINGS.items():
        if setting is None:
            voices[name] = PiperVoice.load(voice_path, include_alignments=True)
        else:
            voices[name] = load_piper_voice(voice_path, piper_session_options(*setting))
    return voices


def _synth_s(voice, text: str) -> float:
    start = time.perf_counter()
    for _ in voice.synthesize(text, include_alignments=True):
        pass
    return time.perf_counter() - start


async def _writer(client: httpx.AsyncClient, server: LlamaServer, stop: asyncio.Event) -> list[float]:
    """Keep the LLM writing until ``stop``; its decode speeds."""
    speeds = []
    while not stop.is_set():
        body = {"prompt": "Tell me about Lisbon.\n", "n_predict": 64, "temperature": 0.0, "cache_prompt": False,
                "ignore_eos": True}  # fmt: skip
        response = await client.post(f"{server._root_url}/completion", json=body)
        speeds.append(float(response.json()["timings"]["predicted_per_second"]))
    return speeds


async def run(rounds: int) -> tuple[dict, dict]:
    settings = get_settings()
    binary = find_llama_server(settings.cvi_cache_dir, explicit=settings.cvi_llama_server_bin)
    model = weights.llm_gguf(settings.cvi_llm_model or "qwen2.5-coder-0.5b-instruct", cache_dir=settings.cvi_cache_dir)
    server = LlamaServer(binary=binary, model=model, threads=settings.cvi_llm_threads, parallel=1, ctx_size=1024,
                         niceness=LLM_NICENESS)  # fmt: skip
    voices = _voices(weights.piper_voice(None, cache_dir=settings.cvi_cache_dir))
    for voice in voices.values():  # first-call set-up
        _synth_s(voice, CHUNKS[0])
    times: dict[str, dict[str, list[float]]] = {name: {load: [] for load in LOADS} for name in voices}
    llm: dict[str, list[float]] = {}
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=600) as client:
            for r in range(rounds):
                for load in LOADS:
                    stop = asyncio.Event()
                    writer = asyncio.ensure_future(_writer(client, server, stop)) if "LLM" in load else None
                    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(load.count("spinning"))]
                    for hog in hogs:
                        hog.start()
                    video_stop = threading.Event()
                    if "video" in load:
                        threading.Thread(target=_replica_video, args=(video_stop,), daemon=True).start()
                    await asyncio.sleep(0.5)
                    try:
                        names = list(voices) if r % 2 == 0 else list(voices)[::-1]
                        for text in CHUNKS:
                            for name in names:
                                if "paused" in load:  # the LLM stopped while piper works, as the bot may do
                                    os.kill(server._process.pid, signal.SIGSTOP)
                                try:
                                    times[name][load].append(await asyncio.to_thread(_synth_s, voices[name], text))
                                finally:
                                    if "paused" in load:
                                        os.kill(server._process.pid, signal.SIGCONT)
                    finally:
                        stop.set()
                        video_stop.set()
                        for hog in hogs:
                            hog.terminate()
                        if writer is not None:
                            llm.setdefault(load, []).extend(await writer)
                    print(f"  round {r + 1}, {load}: " + ", ".join(
                        f"{k.split(' (')[0]} {statistics.median(v[load][-len(CHUNKS):]) * 1000:.0f} ms" for k, v in times.items()
                    ), flush=True)  # fmt: skip
    finally:
        await server.stop()
    speed = f"{await prove(binary, model, threads=settings.cvi_llm_threads)} on {settings.cvi_llm_threads} thread(s)"
    return times, {"decode_tokens_per_s_while_measuring": {k: round(statistics.median(v), 1) for k, v in llm.items()},
                   "llm_speed": speed}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    times, llm = asyncio.run(run(args.rounds))
    n = args.rounds * len(CHUNKS)
    print(f"\npiper first-chunk synthesis, ms, median / p95 / max over {n} chunks of 3-7 words; "
          f"{os.cpu_count()} CPUs; {cpu_summary()}")  # fmt: skip
    print(f"LLM on this machine: {llm['llm_speed']}")
    print(f"LLM decode while measuring (tokens/s, median): {llm['decode_tokens_per_s_while_measuring']}")
    print(f"{'setting':<40} " + " ".join(f"{load:>30}" for load in LOADS))
    table = {}
    for name, by_load in times.items():
        cells, table[name] = [], {}
        for load in LOADS:
            a = np.asarray(by_load[load]) * 1000
            row = {"median": round(float(np.median(a))), "p95": round(float(np.percentile(a, 95))), "max": round(float(a.max()))}
            table[name][load] = row
            cells.append(f"{row['median']:>16} / {row['p95']:>5} / {row['max']:>5}")
        print(f"{name:<40} " + " ".join(cells))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu": cpu_summary(), "rounds": args.rounds, "llm": llm, "ms": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
