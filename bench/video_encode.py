"""What sending the replica's video to a WebRTC peer costs: aiortc's VP8 encoder against the replica's, in one run.

Both encode the same rendered frames (the default replica, idle and talking
to real piper speech), frame by frame interleaved on one core, so machine
load hits both alike. Per encoder: milliseconds per frame (RGB to YUV
conversion and encoding, as aiortc's sender does), the share of one core at
25 frames a second, the bitrate, and the picture's PSNR against the rendered
frame after decoding. Writes bench/results/video_encode.json.

    python bench/video_encode.py [--frames 250]
"""

from __future__ import annotations

import argparse
import fractions
import json
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, VpxPayloadDescriptor  # noqa: E402
from aiortc.jitterbuffer import JitterFrame  # noqa: E402

from bot.webrtc_video import ReplicaVp8Encoder  # noqa: E402
from processors.llm.llama_server import cpu_summary  # noqa: E402

FPS = 25
RESULTS = Path(__file__).resolve().parent / "results" / "video_encode.json"


def rendered_frames(count: int) -> list[np.ndarray]:
    """The default replica: the first half idle, the rest speaking real piper speech."""
    from bench.mouth_warp import _speech_track
    from bot.pipeline import build_replica
    from bot.settings import Settings
    from personas import load_persona

    renderer = build_replica(load_persona("ava"), Settings(_env_file=None))
    track, _, _ = _speech_track()
    renderer._track = track  # the speech track the renderer reads its mouth from
    idle = [renderer.render_at(-60.0 + i / FPS)[0] for i in range(count // 2)]
    talking = [renderer.render_at(i / FPS)[0] for i in range(count - count // 2)]
    return idle + talking


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=250)
    args = parser.parse_args()

    frames = rendered_frames(args.frames)
    encoders = {"aiortc (baseline)": Vp8Encoder(), "replica": ReplicaVp8Encoder()}
    decoders = {name: Vp8Decoder() for name in encoders}
    times: dict[str, list[float]] = {name: [] for name in encoders}
    sizes: dict[str, int] = dict.fromkeys(encoders, 0)
    psnr: dict[str, list[float]] = {name: [] for name in encoders}
    for i, image in enumerate(frames):
        for name, encoder in encoders.items():
            start = time.thread_time()
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i * 90000 // FPS, fractions.Fraction(1, 90000)
            payloads, timestamp = encoder.encode(frame, force_keyframe=i == 0)
            times[name].append((time.thread_time() - start) * 1000)
            data = b"".join(VpxPayloadDescriptor.parse(p)[1] for p in payloads)
            sizes[name] += len(data)
            for decoded in decoders[name].decode(JitterFrame(data=data, timestamp=timestamp)):
                error = decoded.to_ndarray(format="rgb24").astype(np.float64) - image
                psnr[name].append(10 * np.log10(255**2 / np.mean(error**2)))

    rows = {}
    for name in encoders:
        ms = times[name]
        rows[name] = {
            "median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(percentile(ms, 0.95), 2),
            "max_ms": round(max(ms), 2),
            "core_at_25fps": round(statistics.mean(ms) * FPS / 1000, 3),
            "kbps": round(sizes[name] * 8 / (len(frames) / FPS) / 1000),
            "psnr_median_db": round(statistics.median(psnr[name]), 2),
            "psnr_min_db": round(min(psnr[name]), 2),
        }
    print(f"VP8 encode of {len(frames)} rendered 512x512 replica frames (CPU time per frame, conversion included)")
    print(f"{'encoder':20s} {'median':>7s} {'p95':>7s} {'max':>7s} {'core@25':>8s} {'kbps':>6s} {'PSNR':>6s} {'min':>6s}")
    for name, row in rows.items():
        print(
            f"{name:20s} {row['median_ms']:7.2f} {row['p95_ms']:7.2f} {row['max_ms']:7.2f} "
            f"{row['core_at_25fps']:8.3f} {row['kbps']:6d} {row['psnr_median_db']:6.2f} {row['psnr_min_db']:6.2f}"
        )
    machine = cpu_summary()
    print(f"This machine: {machine}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"frames": len(frames), "machine": machine, "encoders": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
