"""A replica from a video: how long creation takes, and what a frame costs against the photo rig.

Makes a video replica (from ``--video FILE``, or from a 20 s video filmed
from the stock portrait as the tests do), then renders the same speech poses
with :class:`VideoRig` (the loop frame decoded from JPEG, the bank's mouth
placed in) and :class:`FaceRig` on ``eileen`` (the photo replica, mesh mouth
warp), interleaved frame by frame on one core. Prints a table and the CPU,
writes bench/results/video_replica.json.

    python bench/video_replica.py [--video FILE] [--frames 400]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.settings import get_settings  # noqa: E402
from processors.llm.llama_server import cpu_summary  # noqa: E402
from processors.replica.assets import load_replica  # noqa: E402
from processors.replica.face import FacePose, FaceRig  # noqa: E402
from processors.replica.mesh import open_mesh_finder  # noqa: E402
from processors.replica.video_replica import create_video_replica  # noqa: E402
from processors.replica.video_rig import VideoRig  # noqa: E402
from processors.replica.visemes import Viseme  # noqa: E402

FPS = 25
RESULTS = Path(__file__).resolve().parent / "results" / "video_replica.json"


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "max_ms": float(a.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="a video of a person (default: one filmed from the stock portrait)")
    parser.add_argument("--frames", type=int, default=400)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    cv2.setNumThreads(1)
    finder = open_mesh_finder(cache_dir=get_settings().cvi_cache_dir)
    if finder is None:
        sys.exit("face models missing: run scripts/setup.sh")

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        source = str(video)
        if video is None:
            from tests.replica.talking_video import portrait_frames, write_video

            video = write_video(Path(tmp) / "talking.mp4", portrait_frames(20, FPS, face_px=480), FPS)
            source = "20 s, 480x480, filmed from the stock portrait (tests/replica/talking_video.py)"
        start = time.perf_counter()
        create_video_replica(video, "Bench", Path(tmp) / "replicas", mesh_finder=finder)
        create_s = time.perf_counter() - start
        replica = load_replica("bench", Path(tmp) / "replicas")
        meta = replica.metadata["video"]

        video_rig = VideoRig(replica)
        face_rig = FaceRig(load_replica("eileen"))
        visemes = list(Viseme)
        times: dict[str, list[float]] = {"video, listening": [], "video, speaking": [], "photo, speaking": []}
        for i in range(args.frames):
            t = i / FPS
            pose = FacePose(mouth=visemes[(i // 3) % len(visemes)].value.as_array())
            for name, draw in (
                ("video, listening", lambda: video_rig.render(FacePose(), t)),
                ("video, speaking", lambda: video_rig.render(pose, t)),
                ("photo, speaking", lambda: face_rig.render(pose)),
            ):
                t0 = time.perf_counter()
                draw()
                times[name].append((time.perf_counter() - t0) * 1000)
        results = {name: _stats(ms) for name, ms in times.items()}

    print(f"video replica from {source}: created in {create_s:.1f} s "
          f"({meta['source_duration_s']:.0f} s of video, loop {meta['loop_frames']} frames, "
          f"bank {meta['bank_size']} mouths)")
    print(f"render 512x512, {args.frames} frames each, one core; CPU: {cpu_summary()}")
    header = f"{'rig':<18} {'median':>9} {'p95':>9} {'max':>9} {'of 40 ms':>9}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<18} {r['median_ms']:>6.2f} ms {r['p95_ms']:>6.2f} ms {r['max_ms']:>6.2f} ms "
              f"{100 * r['median_ms'] / (1000 / FPS):>8.0f}%")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(
        {"cpu": cpu_summary(), "cores": 1, "fps": FPS, "frames": args.frames, "video": source,
         "create_s": create_s, "replica": meta, "results": results},
        indent=2,
    ) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
