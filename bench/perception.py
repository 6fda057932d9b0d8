"""Perception's cost: per-frame time and CPU share at the persona's rate, and the per-turn cost.

Runs the real face models on real frames (scikit-image's astronaut at the
size the dev room asks for, 320x240: as she is, turned away, and an empty
frame) paced at ``--fps`` for ``--seconds``, in one worker thread as the
perception processor does, and reports per-frame wall time (median, p95,
max), the worker's CPU time per frame, and the share of one core the whole
process used at that rate (the frames' scenes are made before it starts).
The per-turn cost is what each LLM context waits for: finding a question
about the camera and wording the cues' answer, putting earlier turns' lines
back, building the cue line and adding it (a context 10 turns in). Prints a
table and writes bench/results/perception.json.

    python bench/perception.py [--fps 2] [--seconds 20] [--runtime auto|litert|opencv]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.faces.landmarks import FaceLandmarker, open_face_finder  # noqa: E402
from processors.faces.models import face_model_paths  # noqa: E402
from processors.perception.cues import CueTracker, read_frame  # noqa: E402
from processors.perception.answers import answer_from_cues, camera_question  # noqa: E402
from processors.perception.processor import add_cue_line, newest_user_words, restore_cue_lines  # noqa: E402
from processors.llm.llama_server import cpu_summary  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "perception.json"
FRAME_SIZE = (320, 240)


def frames(finder) -> list[np.ndarray]:
    from tests import face_images

    face = face_images.astronaut()
    scenes = [face, face_images.head_turned(finder, face, yaw=30), face_images.no_one()]
    return [cv2.resize(s, FRAME_SIZE, interpolation=cv2.INTER_AREA) for s in scenes]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(fps: float, seconds: float, runtime: str, cache_dir: Path) -> dict:
    if runtime == "auto":
        finder = open_face_finder(cache_dir=cache_dir)
    else:
        finder = FaceLandmarker(face_model_paths(cache_dir=cache_dir), runtime=runtime)
    scenes = frames(finder)
    wall_ms: list[float] = []
    cpu_ms: list[float] = []
    tracker = CueTracker()

    def worker() -> None:
        read_frame(finder, scenes[0], at=0.0)  # warm-up
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            due = started + n / fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            rgb = scenes[(n // int(max(1, fps * 2))) % len(scenes)]  # a scene for two seconds each
            w0, c0 = time.perf_counter(), time.thread_time()
            tracker.update(read_frame(finder, rgb, at=time.monotonic()))
            cpu_ms.append((time.thread_time() - c0) * 1000)
            wall_ms.append((time.perf_counter() - w0) * 1000)
            n += 1

    thread = threading.Thread(target=worker, name="perception-bench")
    run_started = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    thread.start()
    thread.join()
    run_wall = time.monotonic() - run_started
    after = resource.getrusage(resource.RUSAGE_SELF)
    # Every thread of the process (a runtime's own threads too), not just the worker's.
    process_cpu_s = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)

    # The per-turn cost: what PerceptionContextProcessor does to each context
    # (a conversation 10 turns in): find a question about the camera and word the
    # cues' answer, put earlier lines back, build the line and add it.
    from pipecat.processors.aggregators.llm_context import LLMContext

    turn_us = []
    history = []
    given = {}
    for i in range(10):
        words = f"Tell me about place number {i}."
        given[words.lower().rstrip(".")] = "the user is looking away"
        history += [{"role": "user", "content": words}, {"role": "assistant", "content": "It is lovely."}]
    for n in range(2000):
        question = "Can you see me?" if n % 2 else "Where can I hear fado tonight?"
        context = LLMContext(messages=[*[dict(m) for m in history], {"role": "user", "content": question}])
        t0 = time.perf_counter()
        asked = camera_question(newest_user_words(context) or "")
        if asked is not None:
            answer_from_cues(asked[0], asked[1], tracker.current())
        restore_cue_lines(context, given)
        line = tracker.line() or "the user is in view"
        add_cue_line(context, line)
        turn_us.append((time.perf_counter() - t0) * 1e6)

    return {
        "cpu": cpu_summary(),
        "runtime": finder.info.runtime,
        "engine": finder.info.engine,
        "fps": fps,
        "frame_size": list(FRAME_SIZE),
        "frames": len(wall_ms),
        "frame_ms": {"median": pct(wall_ms, 50), "p95": pct(wall_ms, 95), "max": max(wall_ms)},
        "frame_cpu_ms": {"median": pct(cpu_ms, 50), "p95": pct(cpu_ms, 95)},
        "core_share_percent": 100.0 * process_cpu_s / run_wall,
        "worker_thread_share_percent": 100.0 * sum(cpu_ms) / 1000.0 / run_wall,
        "turn_us": {"median": pct(turn_us, 50), "p95": pct(turn_us, 95), "max": max(turn_us)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runtime", choices=("auto", "litert", "opencv"), default="auto")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/open-cvi").expanduser())
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.fps, args.seconds, args.runtime, args.cache_dir.expanduser())
    f, c, t = result["frame_ms"], result["frame_cpu_ms"], result["turn_us"]
    print(f"perception: {result['engine']} on {result['runtime']}, {result['frame_size'][0]}x{result['frame_size'][1]} "
          f"at {result['fps']:g} fps, {result['frames']} frames; CPU: {result['cpu']}")
    print(f"{'':24} {'median':>8} {'p95':>8} {'max':>8}")
    print(f"{'frame wall (ms)':24} {f['median']:8.1f} {f['p95']:8.1f} {f['max']:8.1f}")
    print(f"{'frame CPU (ms)':24} {c['median']:8.1f} {c['p95']:8.1f} {'':>8}")
    print(f"{'per turn (us)':24} {t['median']:8.1f} {t['p95']:8.1f} {t['max']:8.1f}")
    print(f"share of one core at {result['fps']:g} fps: {result['core_share_percent']:.1f} % "
          f"(the whole process; the worker thread alone {result['worker_thread_share_percent']:.1f} %)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
