"""The latency yardstick: a real WebRTC peer talks to the bot over loopback.

    .venv/bin/python bench/latency.py [--conversations 4] [--questions 5] [--stack ours|baseline|both]

For each stack it starts the bot in dev-room mode as its own process (ours:
``run.py``; the baseline: ``bench/baseline_bot.py``, stock pipecat services on
the same weights), connects ``bot.devroom_client.DevRoomClient`` (aiortc) on
127.0.0.1, and plays recorded spoken questions as its microphone. Per turn it
measures at the peer:

- ``utterance_to_utterance``: from the end of the question's speech (found in
  the file, not the file's end) to the first audible reply sample;
- ``mouth_after_audio``: from that first audible sample to the arrival of the
  first video frame whose mouth region moves like speech (negative: the
  mouth moved first; see ``mouth_moves_at``);

and collects the bot's own stage timings from its ``conversation.latency``
events. The peer plays audio with a one-packet cushion and shows each video
frame as soon as it is whole, as a browser on loopback would. Prints a table
(median, p95, max per stage) and writes bench/results/latency.json.
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
from collections.abc import Callable
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


def mouth_probe(persona_name: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """Crops the replica's mouth region (luma) out of each received frame."""
    from bot.settings import get_settings
    from personas import load_persona
    from processors.replica.assets import load_replica
    from processors.replica.face import FaceRig

    persona = load_persona(persona_name)
    layer = persona.layers.replica
    if layer.replica_engine != "local":
        return None
    # The same replica the bot loads (it honours CVI_REPLICAS_DIR).
    replica = load_replica(persona.replica_id, get_settings().cvi_replicas_dir)
    rig = FaceRig(replica, (layer.width, layer.height))
    (mx, my), u = rig.landmarks.mouth, rig.landmarks.mouth_half_width
    x0, x1 = int(mx - 1.4 * u), int(mx + 1.4 * u)
    y0, y1 = int(my - 0.6 * u), int(my + 1.2 * u)

    def probe(rgb: np.ndarray) -> np.ndarray:
        region = rgb[y0:y1, x0:x1].astype(np.float32)
        return (region @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.uint8)

    return probe


def mouth_motion(frames: list) -> list[tuple[float, float]]:
    """(arrival time, motion) per received frame: the mean absolute change of
    the mouth region since the previous frame."""
    crops = [(f.arrived_at, f.probe.astype(np.int16)) for f in frames if f.probe is not None]
    return [(t, float(np.mean(np.abs(c - prev)))) for (_, prev), (t, c) in zip(crops, crops[1:])]


def mouth_moves_at(
    motion: list[tuple[float, float]], *, listening: tuple[float, float], reply: float
) -> float | None:
    """When the replica's mouth starts moving for a reply, from the frames at the peer.

    While the replica listens (``listening``, a time span) it only breathes
    and sways. Speech moves the mouth frame after frame: the first frame
    around the reply (from 0.3 s before ``reply``, the first audible sample)
    that moves more than twice as much as any listening frame, and is
    followed within two frames by another that does, is the mouth moving; a
    lone jump (a key frame, a nod) is not. Returns its arrival time.
    """
    idle = [m for t, m in motion if listening[0] <= t <= listening[1]]
    if len(idle) < 5:
        return None
    threshold = max(2.0 * max(idle), 1.0)
    for i, (t, m) in enumerate(motion):
        if t >= reply - 0.3 and m > threshold and any(n > threshold for _, n in motion[i + 1 : i + 3]):
            return t
    return None


async def one_conversation(url: str, questions: list[Path], conversation: int, probe=None) -> list[dict]:
    turns = []
    # Like a browser on loopback: received audio plays without a long cushion,
    # and each video frame shows as soon as it is whole.
    async with DevRoomClient(
        url, audio_jitter_prefetch=1, video_when_whole=True, keep_video_images=0, video_probe=probe
    ) as client:
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
                if probe is not None:
                    motion = mouth_motion(client.video_frames)
                    moved = mouth_moves_at(motion, listening=(spoken_until - 1.5, spoken_until), reply=heard)
                    if moved is not None:
                        turn["mouth_after_audio"] = round((moved - heard) * 1000, 1)
                    # The trace around the reply, to audit the measure: (ms after the first audio, motion).
                    turn["mouth_motion"] = [
                        (round((t - heard) * 1000), round(m, 1)) for t, m in motion if -500 <= (t - heard) * 1000 <= 300
                    ]
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
    rows: dict[str, list[float]] = {"utterance_to_utterance": [], "mouth_after_audio": []}
    for t in turns:
        for name in ("utterance_to_utterance", "mouth_after_audio"):
            if name in t:
                rows[name].append(t[name])
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
        probe = mouth_probe(args.persona) if stack == "ours" else None
        for c in range(args.conversations):
            turns += await one_conversation(url, questions, c, probe)
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
