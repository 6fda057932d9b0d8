"""FaceRig.render per 512x512 frame, before and after the mesh mouth warp, in one run.

"before" is the renderer without the face mesh (the mouth-line displacement
field and the painted crescent), "after" warps lips, chin and jaw from the
replica's mesh (:mod:`processors.replica.mouth_warp`). Both render the same
poses (real piper speech with phoneme timing, blinks, gaze, head motion),
frame by frame interleaved on one core, so machine load hits both alike.
Prints a table and the CPU, writes bench/results/mouth_warp.json, and with
``--frames-dir`` saves rest / open / closed / wide / round frames as PNG;
``--judge`` runs the packaged face mesh on rendered talking frames of both
(inner-lip gap against loudness, chin range).

    python bench/mouth_warp.py [--replicas eileen ada] [--frames 400] [--frames-dir DIR] [--docs-dir docs/replicas] [--judge]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.replica.assets import load_replica  # noqa: E402
from processors.replica.face import FacePose, FaceRig, IdleMotion  # noqa: E402
from processors.replica.speech_track import SpeechTrack  # noqa: E402
from processors.replica.visemes import Viseme  # noqa: E402
from processors.llm.llama_server import cpu_summary  # noqa: E402

FPS = 25
RESULTS = Path(__file__).resolve().parent / "results" / "mouth_warp.json"
SHAPES = {"rest": Viseme.REST, "open": Viseme.AA, "closed": Viseme.PBM, "wide": Viseme.I, "round": Viseme.O}


def _speech_track() -> tuple[SpeechTrack, float, str]:
    from tests.replica.measure import PIPER_VOICE, piper_speech

    track = SpeechTrack()
    if PIPER_VOICE.is_file():
        audio, rate, phonemes = piper_speech(
            "Thanks for joining the call. I can hear you clearly, and I will answer as soon as you "
            "finish speaking. Maybe we can talk about the project."
        )
        track.add_phonemes(phonemes, rate)
        source = "piper en_US-joe-medium with phoneme timing"
    else:
        rate = 16000
        t = np.arange(rate * 8) / rate
        audio = (np.sin(2 * np.pi * 150 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 9000).astype(np.int16)
        source = "synthetic tone, loudness only (piper voice not installed)"
    track.add_audio(audio.tobytes(), rate, 1, now=0.0)
    return track, len(audio) / rate, source


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {
        "median_ms": float(np.median(a)),
        "mean_ms": float(a.mean()),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
    }


def save_frames(rigs: dict[str, FaceRig], replica_id: str, folder: Path) -> list[Path]:
    """One PNG per renderer and mouth shape, and a sheet of the mouths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rig in rigs.items():
        tiles = []
        for label, viseme in SHAPES.items():
            rgb = rig.render(FacePose(mouth=viseme.value.as_array()))
            path = folder / f"{replica_id}_{name}_{label}.png"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            written.append(path)
            tile = np.ascontiguousarray(rgb[250:450, 136:376])
            cv2.putText(tile, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
            tiles.append(tile)
        sheet = folder / f"{replica_id}_{name}_sheet.png"
        cv2.imwrite(str(sheet), cv2.cvtColor(np.hstack(tiles), cv2.COLOR_RGB2BGR))
        written.append(sheet)
    return written


def save_docs_frames(track: SpeechTrack, speech_s: float, replica_ids: list[str], folder: Path) -> list[Path]:
    """A mid-word frame (an open vowel, eyes open) of each replica, 320x320, for the README."""
    times = np.arange(0.2, speech_s - 0.2, 1 / FPS)
    opens = np.array([track.shape_at(t)[0][0] for t in times])
    t = float(times[int(np.argmax(opens))])
    written = []
    for rid in replica_ids:
        rig = FaceRig(load_replica(rid))
        shape, loudness = track.shape_at(t)
        pose = IdleMotion(seed=1).pose_at(t, shape, loudness)
        pose.blink = 0.0
        rgb = cv2.resize(rig.render(pose), (320, 320), interpolation=cv2.INTER_AREA)
        path = folder / f"{rid}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def judge(replica_ids: list[str], cache_dir: Path) -> dict:
    """The packaged face mesh run on rendered talking frames, before and after, and on the ``talk`` MP4.

    Per frame: the inner-lip gap (mesh points 13-14) and chin-to-nose distance
    (152-1), both over the face height (10-152); the gap's correlation with the
    voice's loudness at the best lag within +-120 ms, and the chin's 2-98 %
    range. "talk mp4": the frames ``write_talking_video`` encoded (H.264),
    decoded again.
    """
    import tempfile

    import av

    from processors.replica.mesh import open_mesh_finder
    from processors.replica.video_file import render_talking_frames, write_talking_video
    from tests.replica.measure import best_lag, piper_speech, rms_envelope

    finder = open_mesh_finder(cache_dir=cache_dir)
    if finder is None:
        raise SystemExit("face models missing; run scripts/setup.sh")
    audio, rate, phonemes = piper_speech(
        "Thanks for joining the call. I can hear you clearly, and I will answer as soon as you finish speaking."
    )

    def measured(frames) -> dict:
        gaps, chins = [], []
        for rgb in frames:
            faces = finder.find(rgb)
            if not faces or faces[0].mesh is None:
                gaps.append(0.0)
                chins.append(np.nan)
                continue
            m = faces[0].mesh.points
            height = float(np.linalg.norm(m[152, :2] - m[10, :2]))
            gaps.append((m[14, 1] - m[13, 1]) / height)
            chins.append((m[152, 1] - m[1, 1]) / height)
        gap = np.asarray(gaps)
        lag, corr = best_lag(gap, rms_envelope(audio, rate, FPS, len(gap)), max_lag=3)
        chin = np.asarray(chins)
        return {
            "lip_gap_loudness_r": corr,
            "lag_ms": lag * 1000 / FPS,
            "chin_range_pct": float(100 * (np.nanpercentile(chin, 98) - np.nanpercentile(chin, 2))),
            "frames": len(gap),
        }

    out = {}
    for rid in replica_ids:
        replica = load_replica(rid)
        for name, rep in (("before", dataclasses.replace(replica, mesh=None)), ("after", replica)):
            out.setdefault(rid, {})[name] = measured(rgb for _t, rgb in render_talking_frames(rep, audio, rate, phonemes, fps=FPS))
        with tempfile.TemporaryDirectory() as folder:
            path = write_talking_video(Path(folder) / "talk.mp4", replica, audio, rate, phonemes)
            with av.open(str(path)) as container:
                out[rid]["talk mp4"] = measured([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    print("independent judge: the packaged face mesh on the rendered frames")
    print(f"{'replica':<8} {'renderer':<8} {'gap~loudness r':>15} {'lag':>8} {'chin range':>11}")
    for rid, rows in out.items():
        for name, r in rows.items():
            print(f"{rid:<8} {name:<8} {r['lip_gap_loudness_r']:>15.2f} {r['lag_ms']:>5.0f} ms {r['chin_range_pct']:>9.1f} %")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", nargs="+", default=["eileen", "ada"])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--frames-dir", type=Path, default=None)
    parser.add_argument("--docs-dir", type=Path, default=None, help="write a mid-word frame per replica here")
    parser.add_argument("--judge", action="store_true", help="also measure lips and chin with the face mesh")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/open-cvi").expanduser())
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    cv2.setNumThreads(1)
    track, speech_s, source = _speech_track()
    if args.docs_dir is not None:
        for path in save_docs_frames(track, speech_s, ["eileen", "ada", "leo"], args.docs_dir):
            print(f"wrote {path}")
    results = {}
    for rid in args.replicas:
        replica = load_replica(rid)
        if replica.mesh is None:
            raise SystemExit(f"replica '{rid}' has no mesh.json; run python -m processors.replica.mesh")
        rigs = {"before": FaceRig(dataclasses.replace(replica, mesh=None)), "after": FaceRig(replica)}
        if args.frames_dir is not None:
            for path in save_frames(rigs, rid, args.frames_dir):
                print(f"wrote {path}")
        idle = IdleMotion(seed=1)
        poses = []
        for i in range(args.frames):
            t = (i / FPS) % speech_s
            shape, loudness = track.shape_at(t)
            poses.append(idle.pose_at(i / FPS, shape, loudness))
        for pose in poses[:20]:  # warm up OpenCV and caches
            for rig in rigs.values():
                rig.render(pose)
        times = {name: [] for name in rigs}
        for pose in poses:
            for name, rig in rigs.items():
                t0 = time.perf_counter()
                rig.render(pose)
                times[name].append((time.perf_counter() - t0) * 1000)
        results[rid] = {name: _stats(ms) for name, ms in times.items()}

    header = f"{'replica':<8} {'renderer':<8} {'median':>9} {'mean':>9} {'p95':>9} {'max':>9} {'of 40 ms':>9}"
    print(f"FaceRig.render, 512x512, {args.frames} frames each, one core; CPU: {cpu_summary()}")
    print(f"poses: {source}, {speech_s:.1f} s, looped, with blinks, gaze and head motion")
    print(header)
    print("-" * len(header))
    for rid, rows in results.items():
        for name, r in rows.items():
            print(
                f"{rid:<8} {name:<8} {r['median_ms']:>6.2f} ms {r['mean_ms']:>6.2f} ms {r['p95_ms']:>6.2f} ms "
                f"{r['max_ms']:>6.2f} ms {100 * r['median_ms'] / (1000 / FPS):>8.0f}%"
            )
    judged = judge(args.replicas, args.cache_dir.expanduser()) if args.judge else None
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {"cpu": cpu_summary(), "cores": 1, "fps": FPS, "frames": args.frames, "poses": source, "results": results,
             "judge": judged},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
