"""A real browser as the latency bench's peer: headless Chromium on the dev room page.

Each visit is one Chromium (Debian's ``/usr/bin/chromium``) whose fake
microphone plays a prepared recording (``--use-file-for-fake-audio-capture``:
silence, questions in several voices, silence between them) and whose fake
camera plays a y4m clip. It opens the dev room page, presses Join, and lets
the recording talk. The page itself is measured, as a user would hear it:
Web Audio meters on the microphone track and on the replica's audio (which
the page plays), sampled every 10 ms, and the conversation events the page
receives (``window.devroom.events``). A visit ends by closing the tab, without
Leave, and the time until the bot is gone is read from ``GET /api/peers``.
CPU per process (the bot, its llama-server, the browser) is sampled from
``/proc`` throughout.
"""

import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
# Audible: the level meters' RMS above this (dBFS).
AUDIBLE_DBFS = -45.0
# A reply starts on a rising edge: audible after at least this much quiet.
QUIET_BEFORE_REPLY_S = 0.25
# A reply has ended after this much quiet.
QUIET_AFTER_REPLY_S = 1.2
REPLY_TIMEOUT_S = 15.0

METER_SCRIPT = """async () => {
  const pc = window.devroom.pc;
  const ctx = new AudioContext();
  await ctx.resume();
  const meter = (track) => {
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    return analyser;
  };
  const mic = pc.getSenders().find((s) => s.track && s.track.kind === "audio").track;
  const replica = pc.getReceivers().find((r) => r.track.kind === "audio").track;
  const meters = [meter(mic), meter(replica)];
  const buffer = new Float32Array(512);
  const rms = (analyser) => {
    analyser.getFloatTimeDomainData(buffer);
    let sum = 0;
    for (const v of buffer) sum += v * v;
    return Math.sqrt(sum / buffer.length);
  };
  window.benchLevels = [];
  window.benchMeter = setInterval(() => {
    window.benchLevels.push([performance.now(), rms(meters[0]), rms(meters[1])]);
  }, 10);
}"""


@dataclass(frozen=True)
class Question:
    """One question of a visit: its sentences, voice, the pause between sentences."""

    sentences: tuple[str, ...]
    voice: str
    pause_s: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass(frozen=True)
class VisitPlan:
    """A visit: questions spoken at given offsets into the call, then the tab is closed."""

    kind: str
    questions: tuple[Question, ...]
    lead_s: float = 8.0
    gap_s: float = 16.0
    tail_s: float = 3.0


@dataclass
class SpokenQuestion:
    question: Question
    start_s: float  # in the recording
    end_s: float


@dataclass
class VisitResult:
    """What one visit measured (times in seconds on the page's clock unless said)."""

    kind: str
    turns: list[dict[str, Any]] = field(default_factory=list)
    tab_close_to_bot_gone_s: float | None = None
    departure_reason: str | None = None
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str | None = None


def make_recording(plan: VisitPlan, folder: Path) -> tuple[Path, list[SpokenQuestion]]:
    """The fake microphone's recording for a visit (16 kHz mono WAV) and where each question lies in it."""
    from tests.voices import SAMPLE_RATE, VOICES, spoken, write_wav

    parts = [np.zeros(int(plan.lead_s * SAMPLE_RATE), np.int16)]
    at = plan.lead_s
    placed = []
    for i, question in enumerate(plan.questions):
        audio = spoken(list(question.sentences), VOICES[question.voice], pause_secs=question.pause_s, seed=i)
        placed.append(SpokenQuestion(question, at, at + len(audio) / SAMPLE_RATE))
        parts += [audio, np.zeros(int(plan.gap_s * SAMPLE_RATE), np.int16)]
        at += len(audio) / SAMPLE_RATE + plan.gap_s
    # Long trailing silence: Chromium loops the file, and the visit ends before it would.
    parts.append(np.zeros(int(60 * SAMPLE_RATE), np.int16))
    path = folder / f"{plan.kind}-{time.monotonic_ns()}.wav"
    write_wav(path, np.concatenate(parts))
    return path, placed


def make_camera_clip(folder: Path) -> Path:
    """A short y4m clip (640x480, 15 fps) for Chromium's fake camera: a real face, as a visitor's camera shows.

    The face is scikit-image's astronaut (Eileen Collins, NASA, public domain),
    so perception has a person to read, as it has in a real call.
    """
    path = folder / "camera-face.y4m"
    if not path.exists():
        import cv2
        from skimage import data

        picture = folder / "camera-face.png"
        face = cv2.cvtColor(data.astronaut()[0:384, 0:512], cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(picture), cv2.resize(face, (640, 480), interpolation=cv2.INTER_AREA))
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i", str(picture), "-t", "2", "-r", "15",
             "-pix_fmt", "yuv420p", str(path)],
            check=True,
        )  # fmt: skip
    return path


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return ""


class CpuSampler:
    """Samples the CPU time of the bot, its llama-server and the browser every ``interval_s``."""

    def __init__(self, bot_pid: int, browser_profile: Path, interval_s: float = 0.25):
        self._bot_pid = bot_pid
        self._profile = str(browser_profile)
        self._interval_s = interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._task: asyncio.Task[None] | None = None

    def _roles(self) -> dict[str, list[int]]:
        llama = [p for p in _descendants(self._bot_pid) if "llama" in _comm(p)]
        browser = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if self._profile.encode() in (entry / "cmdline").read_bytes():
                        browser.append(int(entry.name))
        return {"bot": [self._bot_pid], "llama-server": llama, "browser": browser}

    async def _run(self) -> None:
        roles = self._roles()
        refreshed = time.monotonic()
        while True:
            if time.monotonic() - refreshed > 2.0:
                roles, refreshed = self._roles(), time.monotonic()
            sample = {role: sum(filter(None, (_cpu_seconds(p) for p in pids))) for role, pids in roles.items()}
            self.samples.append((time.monotonic(), sample))
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def mean_load(self, spans: list[tuple[float, float]]) -> dict[str, float]:
        """Mean CPU (1.0 = one core) per process over the sample intervals inside ``spans`` (host time)."""
        totals: dict[str, float] = {}
        seconds = 0.0
        for (t0, a), (t1, b) in zip(self.samples, self.samples[1:]):
            mid = (t0 + t1) / 2
            if not any(s <= mid <= e for s, e in spans):
                continue
            seconds += t1 - t0
            for role in b:
                if role in a and b[role] >= a[role]:
                    totals[role] = totals.get(role, 0.0) + b[role] - a[role]
        return {role: round(total / seconds, 3) for role, total in totals.items()} if seconds else {}


def _dbfs(rms: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(rms, 1e-9))


def _repeats(text: str) -> bool:
    """A looping or repeated transcript: a sentence said twice, or a 3-word run three times."""
    sentences = [s.strip().lower() for s in re.split(r"[.?!]+", text) if len(s.split()) >= 2]
    if len(sentences) != len(set(sentences)):
        return True
    words = re.findall(r"[a-z']+", text.lower())
    runs = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    return any(runs.count(r) >= 3 for r in set(runs))


def _longest_quiet(audible: np.ndarray) -> int:
    """The longest run of inaudible samples in ``audible`` (a reply's silences between words and sentences)."""
    longest = run = 0
    for sample in audible:
        run = 0 if sample else run + 1
        longest = max(longest, run)
    return longest


def analyse(levels: list[list[float]], events: list[dict], placed: list[SpokenQuestion]) -> list[dict[str, Any]]:
    """Per question: reply latency at the page, the bot's stages, the user turns it made."""
    if not levels:
        return [{"question": q.question.text, "error": "no level samples"} for q in placed]
    data = np.asarray(levels, dtype=np.float64)
    t = data[:, 0] / 1000.0
    mic, replica = _dbfs(data[:, 1]) > AUDIBLE_DBFS, _dbfs(data[:, 2]) > AUDIBLE_DBFS
    if not mic.any():
        return [{"question": q.question.text, "error": "the microphone meter heard nothing"} for q in placed]
    # The first voiced microphone sample is the first question's first voiced sample.
    shift = t[np.argmax(mic)] - placed[0].start_s
    quiet_before = max(1, int(QUIET_BEFORE_REPLY_S / 0.01))
    quiet_after = int(QUIET_AFTER_REPLY_S / 0.01)
    turns = []
    for i, q in enumerate(placed):
        start, end = q.start_s + shift, q.end_s + shift
        window_end = placed[i + 1].start_s + shift if i + 1 < len(placed) else end + REPLY_TIMEOUT_S
        turn: dict[str, Any] = {
            "question": q.question.text,
            "voice": q.question.voice,
            "sentences": len(q.question.sentences),
            "pause_s": q.question.pause_s,
            "replica_audible_at_start": bool(replica[(t >= start - 0.05) & (t <= start + 0.05)].any()),
        }
        # The reply is what the replica says after it starts speaking anew (the bot's
        # replica.started_speaking event), not the rest of a greeting still playing.
        started = [
            e["at"] / 1000.0
            for e in events
            if e["message"].get("event_type") == "conversation.replica.started_speaking"
            and end - 0.2 <= e["at"] / 1000.0 < window_end
        ]
        from_s = max(end, started[0] - 0.3) if started else end
        candidates = np.flatnonzero((t >= from_s) & (t < min(window_end, end + REPLY_TIMEOUT_S)) & replica)
        onset = next((j for j in candidates if j >= quiet_before and not replica[j - quiet_before : j].any()), None)
        if onset is None and started and candidates.size:
            onset = int(candidates[0])  # the replica went on from one reply straight into this one
        if onset is None:
            turn["error"] = "no reply"
        else:
            turn["reply_latency_ms"] = round(float(t[onset] - end) * 1000, 1)
            rest = replica[onset:]
            stop = onset + len(rest)
            for j in range(onset, len(replica) - quiet_after):
                if not replica[j : j + quiet_after].any():
                    stop = j
                    break
            turn["reply_s"] = round(float(t[min(stop, len(t) - 1)] - t[onset]), 2)
            turn["reply_span"] = (float(t[onset]), float(t[min(stop, len(t) - 1)]))
            turn["longest_pause_s"] = round(_longest_quiet(replica[onset:stop]) * 0.01, 2)
        turn["question_span"] = (float(start), float(end))
        in_window = [e for e in events if start <= e["at"] / 1000.0 < window_end]
        users = [
            e["message"]["properties"].get("speech", "")
            for e in in_window
            if e["message"].get("event_type") == "conversation.utterance"
            and e["message"]["properties"].get("role") == "user"
            and e["message"]["properties"].get("final", True) is not False
        ]
        turn["user_turns"] = users
        turn["split"] = len(users) > 1
        turn["repeated"] = any(_repeats(u) for u in users)
        turn["replies"] = [
            e["message"]["properties"].get("speech", "")
            for e in in_window
            if e["message"].get("event_type") == "conversation.utterance"
            and e["message"]["properties"].get("role") == "replica"
            and e["message"]["properties"].get("final", True) is not False
        ]
        latency = [e for e in in_window if e["message"].get("event_type") == "conversation.latency" and e["at"] / 1000 >= end - 1]
        if latency:
            turn["bot"] = latency[0]["message"]["properties"].get("timings_ms", {})
        turns.append(turn)
    return turns


async def bot_gone_after(url: str, pc_id: str, since: float, timeout_s: float = 60.0) -> tuple[float | None, str | None]:
    """Seconds from ``since`` (host monotonic) until ``pc_id`` has no running bot; and why it left."""
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as http:
        while time.monotonic() - since < timeout_s:
            peers = (await http.get("/api/peers")).json()
            if pc_id not in [p["pc_id"] for p in peers["peers"]]:
                gone = time.monotonic() - since
                reason = next((d["reason"] for d in peers["departures"] if d["pc_id"] == pc_id), None)
                return gone, reason
            await asyncio.sleep(0.02)
    return None, None


async def run_visit(url: str, plan: VisitPlan, *, bot_pid: int, folder: Path) -> VisitResult:
    """One visit with a fresh headless Chromium; ends by closing the tab."""
    import playwright.async_api as playwright_api

    recording, placed = make_recording(plan, folder)
    camera = make_camera_clip(folder)
    profile = folder / f"profile-{plan.kind}-{time.monotonic_ns()}"
    result = VisitResult(kind=plan.kind)
    async with playwright_api.async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={recording}",
                  f"--use-file-for-fake-video-capture={camera}"],
        )  # fmt: skip
        sampler = CpuSampler(bot_pid, profile)
        sampler.start()
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(url)
            recording_started = time.monotonic()  # the fake microphone starts at getUserMedia, on Join
            await page.click("#join")
            await page.wait_for_function(
                "document.getElementById('status').textContent === 'connected'", timeout=30_000
            )
            await page.evaluate(METER_SCRIPT)
            pc_id = await page.evaluate("window.devroom.pcId")
            host_before = time.monotonic()
            page_now = await page.evaluate("performance.now()") / 1000.0
            page_to_host = (host_before + time.monotonic()) / 2 - page_now
            visit_ends = recording_started + placed[-1].end_s + plan.gap_s + plan.tail_s
            await asyncio.sleep(max(0.0, visit_ends - time.monotonic()))
            levels = await page.evaluate("window.benchLevels")
            events = await page.evaluate("window.devroom.events")
            closed_at = time.monotonic()
            await page.close()  # the tab's close button, no Leave
            result.tab_close_to_bot_gone_s, result.departure_reason = await bot_gone_after(url, pc_id, closed_at)
            if result.tab_close_to_bot_gone_s is not None:
                result.tab_close_to_bot_gone_s = round(result.tab_close_to_bot_gone_s, 3)
            result.turns = analyse(levels, events, placed)
            result.cpu = phase_loads(sampler, result.turns, levels, page_to_host)
        except Exception as e:  # noqa: BLE001 - a failed visit is reported in the table, not fatal
            result.error = f"{type(e).__name__}: {e}".splitlines()[0]
        finally:
            await sampler.stop()
            with contextlib.suppress(playwright_api.Error, TimeoutError):
                await asyncio.wait_for(context.close(), 15)
    return result


def phase_loads(sampler: CpuSampler, turns: list[dict], levels: list[list[float]], page_to_host: float) -> dict[str, dict[str, float]]:
    """Mean CPU per process while listening (nobody speaks, 1 s after any sound) and during replies."""
    replies = [
        (turn["question_span"][1] + page_to_host, turn["reply_span"][1] + page_to_host)
        for turn in turns
        if "reply_span" in turn
    ]
    data = np.asarray(levels, dtype=np.float64)
    if data.size == 0:
        return {}
    t = data[:, 0] / 1000.0 + page_to_host
    sound = (_dbfs(data[:, 1]) > AUDIBLE_DBFS) | (_dbfs(data[:, 2]) > AUDIBLE_DBFS)
    listening: list[tuple[float, float]] = []
    quiet_from = t[0] + 1.0
    for ti, s in zip(t, sound):
        if s:
            if ti - 1.0 > quiet_from + 0.5:
                listening.append((quiet_from, ti - 0.2))
            quiet_from = ti + 1.0
    if t[-1] > quiet_from + 0.5:
        listening.append((quiet_from, t[-1]))
    return {"listening": sampler.mean_load(listening), "reply": sampler.mean_load(replies)}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summarise_visits(visits: list[VisitResult]) -> dict[str, Any]:
    """Per visit kind and overall: latency, stages, split/repeated turns, departures, CPU."""
    kinds = sorted({v.kind for v in visits}) + ["all"]
    out: dict[str, Any] = {}
    for kind in kinds:
        chosen = [v for v in visits if kind in ("all", v.kind)]
        turns = [t for v in chosen for t in v.turns]
        latencies = [t["reply_latency_ms"] for t in turns if "reply_latency_ms" in t]
        row: dict[str, Any] = {
            "visits": len(chosen),
            "questions": len(turns),
            "no_reply": sum(1 for t in turns if "reply_latency_ms" not in t),
            "split": sum(1 for t in turns if t.get("split")),
            "repeated": sum(1 for t in turns if t.get("repeated")),
        }
        if latencies:
            row["reply_latency_ms"] = {
                "median": statistics.median(latencies), "p95": percentile(latencies, 0.95), "max": max(latencies)
            }  # fmt: skip
        pauses = [t["longest_pause_s"] for t in turns if "longest_pause_s" in t]
        if pauses:
            row["longest_pause_in_reply_s"] = {"median": statistics.median(pauses), "max": max(pauses)}
        stages: dict[str, list[float]] = {}
        for t in turns:
            for stage, value in (t.get("bot") or {}).items():
                if isinstance(value, (int, float)):
                    stages.setdefault(stage, []).append(value)
        row["bot_stages_median_ms"] = {k: statistics.median(v) for k, v in stages.items()}
        gone = [v.tab_close_to_bot_gone_s for v in chosen if v.tab_close_to_bot_gone_s is not None]
        if gone:
            row["tab_close_to_bot_gone_s"] = {"median": statistics.median(gone), "max": max(gone)}
        row["bot_not_gone"] = sum(1 for v in chosen if v.tab_close_to_bot_gone_s is None)
        for phase in ("listening", "reply"):
            loads: dict[str, list[float]] = {}
            for v in chosen:
                for role, load in (v.cpu.get(phase) or {}).items():
                    loads.setdefault(role, []).append(load)
            row[f"cpu_{phase}"] = {role: round(statistics.mean(ls), 3) for role, ls in loads.items()}
        row["errors"] = [v.error for v in chosen if v.error]
        out[kind] = row
    return out
