"""The latency yardstick: a real WebRTC peer talks to the bot over loopback.

    .venv/bin/python bench/latency.py [--conversations 4] [--questions 5] [--stack ours|baseline|both]
    .venv/bin/python bench/latency.py --peer browser [--rounds 1] [--stack ours|baseline|both]

For each stack it starts the bot in dev-room mode as its own process (ours:
``run.py``; the baseline: ``bench/baseline_bot.py``, stock pipecat services on
the same weights), connects ``bench.devroom_client.DevRoomClient`` (aiortc) on
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

``--peer browser`` drives headless Chromium through the dev room page instead
(``bench/browser_peer.py``): fake microphone from a recording, fake camera
from a y4m clip, questions in several voices (espeak-ng, flite, festival's
HTS voice): single sentences, two sentences with a 0.3-0.8 s pause, a question
started while the greeting plays; every visit ends by closing the tab. Per
visit kind it prints reply latency at the page (end of the question's speech
to the first audible reply sample the page plays), the bot's stages, user
turns split or repeated, seconds from tab close to bot gone, the longest
silence inside each reply (the voice waiting for its next words), CPU per
process (bot, llama-server, browser) while listening and during replies, and
this machine's LLM prefill and decode speed. JSON: bench/results/latency_browser.json.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.devroom_client import DevRoomClient  # noqa: E402
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

# Browser mode: questions per visit kind (voices from tests/voices.py, none the bot's).
SINGLE_QUESTIONS = [
    ("What should I eat in Lisbon?",),
    ("Where can I watch the sunset?",),
    ("How do I get to the castle?",),
    ("Is Sintra worth a day trip?",),
]
TWO_SENTENCE_QUESTIONS = [
    ("I arrive in Lisbon on Friday.", "Which neighbourhood should I stay in?"),
    ("My feet hurt from all the hills.", "Is there a tram up to the castle?"),
    ("We have one free evening.", "Where can we hear fado?"),
    ("I am travelling with my grandmother.", "Which museum would she enjoy?"),
]
BROWSER_VOICES = ["espeak-us", "flite-slt", "festival-slt-hts", "flite-awb", "espeak-gb-f3", "flite-rms"]
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


def browser_visit_plans(rounds: int) -> list:
    """The visits of the browser mode: single sentences, two sentences with a pause, a question over the greeting."""
    from bench.browser_peer import Question, VisitPlan

    plans = []
    for r in range(rounds):
        voice = lambda i: BROWSER_VOICES[(r * 3 + i) % len(BROWSER_VOICES)]  # noqa: E731
        single = [Question(SINGLE_QUESTIONS[(r + i) % len(SINGLE_QUESTIONS)], voice(i)) for i in range(3)]
        pauses = (0.3, 0.6, 0.8)
        double = [
            Question(TWO_SENTENCE_QUESTIONS[(r + i) % len(TWO_SENTENCE_QUESTIONS)], voice(i + 1), pauses[i])
            for i in range(3)
        ]
        over_greeting = [
            Question(SINGLE_QUESTIONS[(r + 3) % len(SINGLE_QUESTIONS)], voice(2)),
            Question(TWO_SENTENCE_QUESTIONS[(r + 3) % len(TWO_SENTENCE_QUESTIONS)], voice(0), 0.5),
        ]
        plans += [
            VisitPlan(kind="single", questions=tuple(single)),
            VisitPlan(kind="two_sentences", questions=tuple(double)),
            # The call connects ~1 s after Join and the greeting lasts ~4 s: this question starts during it.
            VisitPlan(kind="over_greeting", questions=tuple(over_greeting), lead_s=2.5),
        ]
    return plans


async def run_browser_stack(stack: str, args) -> list:
    from bench.browser_peer import run_visit

    print(f"{stack}: starting the bot", flush=True)
    log = args.bot_log.with_suffix(f".{stack}.log") if args.bot_log else None
    proc, url = start_stack(stack, args.persona, log, args.bot_log_level)
    folder = RESULTS / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        visits = []
        for plan in browser_visit_plans(args.rounds):
            visit = await run_visit(url, plan, bot_pid=proc.pid, folder=folder)
            latencies = [t.get("reply_latency_ms", "none") for t in visit.turns]
            print(f"  {stack} {plan.kind}: replies {latencies} ms, tab close -> bot gone "
                  f"{visit.tab_close_to_bot_gone_s} s ({visit.departure_reason}){' ' + visit.error if visit.error else ''}",
                  flush=True)  # fmt: skip
            visits.append(visit)
        return visits
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def llm_speed(persona_name: str) -> str:
    """This machine's prefill and decode speed on the persona's embedded LLM (the bot is stopped by then)."""
    from bot.settings import get_settings
    from personas import load_persona
    from processors.llm.llama_server import find_llama_server, prove
    from processors.weights import llm_gguf

    settings = get_settings()
    try:
        binary = find_llama_server(settings.cvi_cache_dir, explicit=settings.cvi_llama_server_bin)
        model = llm_gguf(
            settings.cvi_llm_model or load_persona(persona_name).layers.llm.model,
            cache_dir=settings.cvi_cache_dir,
            allow_download=False,
        )
        result = await prove(binary, model, threads=settings.cvi_llm_threads)
    except Exception as e:  # noqa: BLE001 - the table still prints without it
        return f"unavailable ({type(e).__name__}: {e})".splitlines()[0]
    return f"{result} with {model.name}"


def print_browser_table(summaries: dict[str, dict]) -> None:
    def fmt(value: Any, spec: str = ".0f") -> str:
        return "-" if value is None else format(value, spec)

    for stack, kinds in summaries.items():
        print(f"\n{stack} (browser peer; ms at the page from the end of the question's speech)")
        print(f"{'visits':16}{'n':>4}{'median':>8}{'p95':>8}{'max':>8}{'no reply':>9}{'split':>6}{'repeat':>7}"
              f"{'gone s':>8}{'gone max':>9}{'pause s':>8}{'pause max':>10}")  # fmt: skip
        for kind, row in kinds.items():
            lat = row.get("reply_latency_ms") or {}
            gone = row.get("tab_close_to_bot_gone_s") or {}
            pause = row.get("longest_pause_in_reply_s") or {}
            print(f"{kind:16}{row['questions']:>4}{fmt(lat.get('median')):>8}{fmt(lat.get('p95')):>8}"
                  f"{fmt(lat.get('max')):>8}{row['no_reply']:>9}{row['split']:>6}{row['repeated']:>7}"
                  f"{fmt(gone.get('median'), '.2f'):>8}{fmt(gone.get('max'), '.2f'):>9}"
                  f"{fmt(pause.get('median'), '.2f'):>8}{fmt(pause.get('max'), '.2f'):>10}")  # fmt: skip
        every = kinds["all"]
        stages = every["bot_stages_median_ms"]
        if stages:
            print("bot stages, median ms: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
        for phase in ("listening", "reply"):
            loads = every.get(f"cpu_{phase}") or {}
            print(f"CPU while {phase} (1.0 = one core): " + ", ".join(f"{k} {v:.2f}" for k, v in loads.items()))
        for error in every["errors"]:
            print(f"visit failed: {error}")
    if {"ours", "baseline"} <= set(summaries):
        ours = (summaries["ours"]["all"].get("reply_latency_ms") or {}).get("median")
        base = (summaries["baseline"]["all"].get("reply_latency_ms") or {}).get("median")
        if ours and base:
            print(f"\nbaseline / ours at the median: {base / ours:.2f}x")


async def main_browser(args) -> int:
    from bench.browser_peer import summarise_visits

    stacks = ["ours", "baseline"] if args.stack == "both" else [args.stack]
    results = {stack: await run_browser_stack(stack, args) for stack in stacks}
    summaries = {stack: summarise_visits(visits) for stack, visits in results.items()}
    speed = await llm_speed(args.persona)
    print_browser_table(summaries)
    print(f"\nThis machine: {os.cpu_count()} CPUs; LLM {speed}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency_browser.json").write_text(json.dumps(
        {"machine": {"cpus": os.cpu_count(), "llm_speed": speed},
         "visits": {stack: [dataclasses.asdict(v) for v in visits] for stack, visits in results.items()},
         "summary": summaries},
        indent=2,
    ))  # fmt: skip
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--questions", type=int, default=5, help="questions per conversation")
    parser.add_argument("--stack", choices=["ours", "baseline", "both"], default="both")
    parser.add_argument("--persona", default="ava")
    parser.add_argument("--peer", choices=["aiortc", "browser"], default="aiortc",
                        help="aiortc: the Python peer; browser: headless Chromium on the dev room page")
    parser.add_argument("--rounds", type=int, default=1, help="browser mode: rounds of the three visit kinds")
    parser.add_argument("--bot-log", type=Path, help="keep each bot's log in PATH.<stack>.log")
    parser.add_argument(
        "--bot-log-level", default="DEBUG", help="its level (TRACE adds llama-server's own lines, and slows the bot)"
    )
    args = parser.parse_args()
    if args.peer == "browser":
        return await main_browser(args)
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
