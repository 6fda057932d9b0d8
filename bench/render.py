"""What one 512x512 replica frame costs to render and encode on one core: a still image, the renderer before, the renderer now.

Three paths draw and encode the same frames, interleaved frame by frame in
one process pinned to CPU 0 with OpenCV on one thread, so load from other
processes hits all three alike:

- **still image**: the portrait as it is, sent as the dev room sends frames
  now (the baseline);
- **before**: ``FaceRig`` and the dev room's VP8 sender as of commit
  ``BEFORE`` (loaded from git into this process);
- **RGB frames**: ``FaceRig.render`` and ``ReplicaVp8Encoder`` as they are
  in the tree, the frame in RGB (as the dev room sent it until the renderer
  drew I420, and as ``talk`` and Daily calls still take it);
- **now**: ``FaceRig.render_i420`` and the dev room's video track and
  encoder as they are (the frame in I420, copied into the encoder's frame).

The frames: the replica listening for 2 s, speaking real piper speech (about
7 s) and listening again for 1 s; ``--passes`` repeats it. Render is
``FaceRig.render`` plus the frame's bytes, as the renderer pushes them;
encode is what the transport and aiortc's sender do with them (an
``av.VideoFrame`` from the bytes, then the VP8 encoder, conversion to YUV
included for RGB). Times are the thread's CPU time, so time this process spends
waiting for the core while other processes use it is not counted. PSNR:
each path's encoded frames decoded against its rendered ones (in RGB), the RGB frames against the old renderer's (frames with the brows at
rest; the old renderer has no brows), and the I420 frames against the RGB
frames converted. Prints a table and writes
``bench/results/render.json``.

    .venv/bin/python bench/render.py [--replica eileen] [--passes 2] [--frames-dir DIR]
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiortc.codecs.vpx import Vp8Decoder, VpxPayloadDescriptor  # noqa: E402
from aiortc.jitterbuffer import JitterFrame  # noqa: E402

from bot.webrtc_video import ReplicaVp8Encoder, i420_video_frame  # noqa: E402
from processors.llm.llama_server import cpu_summary  # noqa: E402
from processors.replica.assets import load_replica  # noqa: E402
from processors.replica.face import FaceRig, IdleMotion  # noqa: E402

# The renderer and sender before the work on this budget (issue 11).
BEFORE = "a65447dba02feb3c95e5bcf580b1c0689109328a"
FPS = 25
SIZE = (512, 512)
RESULTS = ROOT / "bench" / "results" / "render.json"


def _module_at(commit: str, path: str, replace: dict[str, types.ModuleType] | None = None) -> types.ModuleType:
    """The module in ``path`` as it was at ``commit``; imports named in ``replace`` get those modules instead."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    name = f"before_{Path(path).stem}"
    module = types.ModuleType(name)
    module.__file__ = f"{commit[:7]}:{path}"
    sys.modules[name] = module
    saved = {key: sys.modules.get(key) for key in replace or {}}
    sys.modules.update(replace or {})
    try:
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


def _poses(passes: int):
    """Listening 2 s, speaking the piper sentence, listening 1 s; ``passes`` times."""
    from bench.mouth_warp import _speech_track

    track, speech_s, source = _speech_track()
    idle = IdleMotion(seed=1)
    poses = []
    t = 0.0
    for _ in range(passes):
        for i in range(int((3.0 + speech_s) * FPS)):
            s = i / FPS - 2.0  # seconds into the speech
            shape, loudness = track.shape_at(s)
            poses.append(idle.pose_at(t, shape, loudness, speech_s - s if 0.0 <= s < speech_s else 0.0))
            t += 1 / FPS
    return poses, f"{source}, {speech_s:.1f} s"


class _Path:
    """One way of making and encoding the frames, with its costs."""

    def __init__(self, name: str, render, encoder, pixel_format: str = "RGB"):
        self.name = name
        self.render = render
        self.encoder = encoder
        self.pixel_format = pixel_format
        self.decoder = Vp8Decoder()
        self.render_ms: list[float] = []
        self.encode_ms: list[float] = []
        self.bytes = 0
        self.psnr: list[float] = []

    def frame(self, i: int, pose) -> np.ndarray:
        start = time.thread_time()
        image = self.render(pose)
        payload = image.tobytes()
        rendered = time.thread_time()
        # As the dev room's video track (pipecat's for RGB) and aiortc's sender do with it.
        if self.pixel_format == "I420":
            video = i420_video_frame(payload, *SIZE)
        else:
            video = av.VideoFrame.from_ndarray(np.frombuffer(payload, np.uint8).reshape(SIZE[1], SIZE[0], 3), format="rgb24")
        video.pts, video.time_base = i * 90000 // FPS, fractions.Fraction(1, 90000)
        payloads, timestamp = self.encoder.encode(video, force_keyframe=i == 0)
        encoded = time.thread_time()
        self.render_ms.append((rendered - start) * 1000)
        self.encode_ms.append((encoded - rendered) * 1000)
        data = b"".join(VpxPayloadDescriptor.parse(p)[1] for p in payloads)
        self.bytes += len(data)
        for decoded in self.decoder.decode(JitterFrame(data=data, timestamp=timestamp)):
            rgb = cv2.cvtColor(image, cv2.COLOR_YUV2RGB_I420) if self.pixel_format == "I420" else image
            self.psnr.append(_psnr(decoded.to_ndarray(format="rgb24"), rgb))
        return image


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "median_ms": round(float(np.median(a)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "max_ms": round(float(a.max()), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replica", default="eileen", help="replica id (default: eileen, the default persona's)")
    parser.add_argument("--passes", type=int, default=2, help="times through listen, speak, listen")
    parser.add_argument("--frames-dir", type=Path, help="save a few frames of each renderer here (PNG)")
    args = parser.parse_args()

    os.sched_setaffinity(0, {0})
    cv2.setNumThreads(1)
    replica = load_replica(args.replica)
    before_warp = _module_at(BEFORE, "processors/replica/mouth_warp.py")
    before_face = _module_at(BEFORE, "processors/replica/face.py", {"processors.replica.mouth_warp": before_warp})
    before_video = _module_at(BEFORE, "bot/webrtc_video.py")
    old_rig = before_face.FaceRig(replica, SIZE)
    rig = FaceRig(replica, SIZE)
    poses, speech = _poses(args.passes)

    still = cv2.cvtColor(rig.base, cv2.COLOR_RGB2YUV_I420)
    paths = [
        _Path("still image", lambda pose: still.copy(), ReplicaVp8Encoder(), "I420"),
        _Path(f"before ({BEFORE[:7]})", old_rig.render, before_video.ReplicaVp8Encoder()),
        _Path("RGB frames", FaceRig(replica, SIZE).render, ReplicaVp8Encoder()),
        _Path("now", rig.render_i420, ReplicaVp8Encoder(), "I420"),
    ]
    for i, pose in enumerate(poses[:10]):  # OpenCV's and libvpx's first-call set-up
        for path in paths:
            path.render(pose)
    old_vs_new: list[float] = []
    i420_vs_rgb: list[float] = []
    saved = {}
    for i, pose in enumerate(poses):
        _, old, new, i420 = (path.frame(i, pose) for path in paths)
        i420_vs_rgb.append(_psnr(i420, cv2.cvtColor(new, cv2.COLOR_RGB2YUV_I420)))
        if pose.brow == 0.0:
            old_vs_new.append(_psnr(old, new))
        if args.frames_dir and pose.mouth[0] > 0.5 and "open" not in saved:
            saved["open"] = (old, new)
        if args.frames_dir and pose.brow > 0.9 and "brows" not in saved:
            saved["brows"] = (old, new)
    if args.frames_dir:
        args.frames_dir.mkdir(parents=True, exist_ok=True)
        for name, (old, new) in saved.items():
            cv2.imwrite(str(args.frames_dir / f"{name}.png"), cv2.cvtColor(np.hstack([old, new]), cv2.COLOR_RGB2BGR))

    rows = {}
    for path in paths:
        total = [r + e for r, e in zip(path.render_ms, path.encode_ms)]
        rows[path.name] = {
            "render": _stats(path.render_ms),
            "encode": _stats(path.encode_ms),
            "total": _stats(total),
            "kbps": round(path.bytes * 8 / (len(poses) / FPS) / 1000),
            "encoded_psnr_median_db": round(float(np.median(path.psnr)), 2),
        }
    load = os.getloadavg()
    machine = cpu_summary()
    print(
        f"replica '{args.replica}', {SIZE[0]}x{SIZE[1]}, {len(poses)} frames (listening, then {speech}), "
        f"one core (CPU 0), OpenCV on one thread, CPU time per frame in ms"
    )
    print(f"{machine}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    header = f"{'path':<18} {'':>7} {'median':>7} {'p95':>7} {'max':>7} {'mean':>7}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        for part in ("render", "encode", "total"):
            s = row[part]
            label = name if part == "render" else ""
            print(
                f"{label:<18} {part:>7} {s['median_ms']:7.2f} {s['p95_ms']:7.2f} {s['max_ms']:7.2f} {s['mean_ms']:7.2f}"
            )
    print()
    for name, row in rows.items():
        print(f"{name:<18} VP8 {row['kbps']} kbps, decoded PSNR {row['encoded_psnr_median_db']:.2f} dB (median)")
    print(
        f"RGB frames against before (brows at rest): PSNR median {np.median(old_vs_new):.2f} dB, "
        f"min {min(old_vs_new):.2f} dB over {len(old_vs_new)} frames"
    )
    print(
        f"now (I420) against the RGB frames converted: PSNR median {np.median(i420_vs_rgb):.2f} dB, "
        f"min {min(i420_vs_rgb):.2f} dB (YUV)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "replica": args.replica,
                "size": list(SIZE),
                "frames": len(poses),
                "speech": speech,
                "machine": machine,
                "load_average": [round(v, 2) for v in load],
                "before_commit": BEFORE,
                "times": "thread CPU time, ms per frame, CPU 0, OpenCV on one thread",
                "paths": rows,
                "now_vs_before_psnr_db": {
                    "median": round(float(np.median(old_vs_new)), 2),
                    "min": round(float(min(old_vs_new)), 2),
                    "frames": len(old_vs_new),
                },
                "i420_vs_rgb_converted_psnr_db": {
                    "median": round(float(np.median(i420_vs_rgb)), 2),
                    "min": round(float(min(i420_vs_rgb)), 2),
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
