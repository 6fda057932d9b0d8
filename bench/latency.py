"""The latency yardstick: a real WebRTC peer talks to the bot over loopback.

    .venv/bin/python bench/latency.py [--conversations 4] [--questions 5] [--stack ours|baseline|both]

For each stack it starts the bot in dev-room mode as its own process (ours:
``run.py``; the baseline: ``bench/baseline_bot.py``, stock pipecat services on
the same weights), connects ``bot.devroom_client.DevRoomClient`` (aiortc) on
127.0.0.1, and plays recorded spoken questions as its microphone. Per turn it
measures at the peer the time from the end of the question's speech (found
in the file, not the file's end) to the first audible reply sample, and collects the bot's own stage
timings from its ``conversation.latency`` events. Prints a table (median, p95,
max per stage) and writes bench/results/latency.json.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.devroom_client import DevRoomClient  # noqa: E402
from bot.interactions import STAGES  # noqa: E402

QUESTIONS = [
    "What should I eat in Lisbon?",
    "Where can I watch the sunset?",
    "How do I get to the castle?",
    "Is Sintra worth a day trip?",
    "Where can I hear fado music tonight?",
    "Which neighbourhood is best for a walk?",
]
VOICES = ["en-us", "en-gb", "en-us+m3", "en-gb+f3"]
RESULTS = ROOT / "bench" / "results"


def record_questions(count: int) -> list[Path]:
    """Spoken questions as WAV files (espeak-ng, voices other than the bot's)."""
    folder = RESULTS / "questions"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"q{i}.wav"
        if not path.exists():
            text, voice = QUESTIONS[i % len(QUESTIONS)], VOICES[i % len(VOICES)]
            subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True)
        paths.append(path)
    return paths


def speech_end_s(path: Path, *, threshold_dbfs: float = -40.0) -> float:
    """Where speech ends in a recording: the end of its last 10 ms louder than the threshold."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    hop = int(rate * 0.01)
    loud = [
        i for i in range(0, len(mono) - hop, hop)
        if 20 * np.log10(np.sqrt(np.mean(mono[i : i + hop] ** 2)) + 1e-9) > threshold_dbfs
    ]
    return (loud[-1] + hop) / rate if loud else len(mono) / rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_stack(
    stack: str, persona: str, log: Path | None = None, log_level: str = "DEBUG"
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if stack == "ours":
        cmd = [sys.executable, "run.py", "--host", "127.0.0.1", "--port", str(port), "--persona", persona]
    else:
        cmd = [sys.executable, "bench/baseline_bot.py", "--port", str(port), "--persona", persona]
    env = dict(os.environ)
    out = subprocess.DEVNULL
    if log is not None:
        env["CVI_LOG_LEVEL"] = log_level
        out = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{stack} bot exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/health", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"{stack} bot not ready in 180 s")


async def settle(client: DevRoomClient, *, since: float, quiet_s: float = 1.5, timeout_s: float = 30.0) -> None:
    """Wait until the bot has been silent for ``quiet_s`` (after its greeting, if any)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now - since > quiet_s and client.first_audible(after=now - quiet_s) is None:
            return
        await asyncio.sleep(0.2)


async def one_conversation(url: str, questions: list[Path], conversation: int) -> list[dict]:
    turns = []
    # Like a browser on loopback, the peer plays received audio without a long cushion.
    async with DevRoomClient(url, audio_jitter_prefetch=1) as client:
        await client.connect()
        await settle(client, since=time.monotonic())
        for i, question in enumerate(questions):
            playback = await client.play_wav(question)
            # The user's last word, not the end of the file (which trails off in silence).
            spoken_until = playback.started_at + speech_end_s(question)
            turn = {"conversation": conversation, "turn": i, "question": question.name}
            try:
                heard = await client.wait_for_audio(after=spoken_until, timeout_s=30)
                turn["utterance_to_utterance"] = round((heard - spoken_until) * 1000, 1)
                event = await client.wait_for_message("conversation.latency", after=playback.started_at, timeout_s=10)
                turn["bot"] = event.data["properties"]["timings_ms"]
                await client.wait_for_message("conversation.replica.stopped_speaking", after=heard, timeout_s=60)
            except TimeoutError as e:
                turn["error"] = str(e)
            turns.append(turn)
            print(f"  conversation {conversation} turn {i}: {turn.get('utterance_to_utterance', 'timeout')} ms", flush=True)
            await asyncio.sleep(1.0)
    return turns


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summarise(turns: list[dict]) -> dict[str, dict[str, float]]:
    rows: dict[str, list[float]] = {"utterance_to_utterance": []}
    for t in turns:
        if "utterance_to_utterance" in t:
            rows["utterance_to_utterance"].append(t["utterance_to_utterance"])
        for stage in STAGES:
            value = (t.get("bot") or {}).get(stage)
            if value is not None:
                rows.setdefault(f"bot {stage}", []).append(value)
    return {
        name: {"n": len(v), "median": statistics.median(v), "p95": percentile(v, 0.95), "max": max(v)}
        for name, v in rows.items() if v
    }


def print_table(summaries: dict[str, dict]) -> None:
    stacks = list(summaries)
    names = list(dict.fromkeys(n for s in stacks for n in summaries[s]))
    header = f"{'stage (ms after the question ends)':36}" + "".join(f"{s + ' med':>14}{'p95':>8}{'max':>8}" for s in stacks)
    print(header)
    for name in names:
        line = f"{name:36}"
        for s in stacks:
            row = summaries[s].get(name)
            line += f"{row['median']:14.0f}{row['p95']:8.0f}{row['max']:8.0f}" if row else f"{'-':>14}{'-':>8}{'-':>8}"
        print(line)
    if {"ours", "baseline"} <= set(stacks):
        ours = summaries["ours"]["utterance_to_utterance"]["median"]
        base = summaries["baseline"]["utterance_to_utterance"]["median"]
        print(f"\nbaseline / ours at the median: {base / ours:.2f}x")


async def run_stack(stack: str, args, questions: list[Path]) -> list[dict]:
    print(f"{stack}: starting the bot", flush=True)
    log = args.bot_log.with_suffix(f".{stack}.log") if args.bot_log else None
    proc, url = start_stack(stack, args.persona, log, args.bot_log_level)
    try:
        turns = []
        for c in range(args.conversations):
            turns += await one_conversation(url, questions, c)
        return turns
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--questions", type=int, default=5, help="questions per conversation")
    parser.add_argument("--stack", choices=["ours", "baseline", "both"], default="both")
    parser.add_argument("--persona", default="ava")
    parser.add_argument("--bot-log", type=Path, help="keep each bot's log in PATH.<stack>.log")
    parser.add_argument(
        "--bot-log-level", default="DEBUG", help="its level (TRACE adds llama-server's own lines, and slows the bot)"
    )
    args = parser.parse_args()
    questions = record_questions(args.questions)
    stacks = ["ours", "baseline"] if args.stack == "both" else [args.stack]
    results = {stack: await run_stack(stack, args, questions) for stack in stacks}
    summaries = {stack: summarise(turns) for stack, turns in results.items()}
    print()
    print_table(summaries)
    for stack, turns in results.items():
        firsts = [t["utterance_to_utterance"] for t in turns if t["turn"] == 0 and "utterance_to_utterance" in t]
        if firsts:
            print(f"{stack}: first turns of a conversation, median {statistics.median(firsts):.0f} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps({"turns": results, "summary": summaries}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
