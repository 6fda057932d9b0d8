"""A replica from a short video of a person: an idle loop and a bank of their own mouths.

:func:`create_video_replica` reads a video (10-120 s, one person facing the
camera, talking and listening) twice with PyAV:

1. Analysis, on every frame scaled to at most 640 px: the packaged face
   models (:mod:`processors.faces`) find the faces and the 468-point mesh of
   the largest one. Bad videos are refused here, each with the file, the
   measured value and what is allowed: too short or too long, no face in most
   frames, several faces, a face too small or too dark, a mouth that hardly
   moves.
2. Extraction, at full resolution: every frame is cropped by one fixed
   transform (the eyes' median position levelled and placed as in a photo
   replica, 512x512), so the person's real head motion stays in the frames.

From the analysis it picks the **idle loop**: 3-6 s whose last frame leads
back into its first (small pixel and landmark distance at the seam, a
closed mouth, a real blink inside); the last 0.4 s are morphed into the
frames just before the loop's start (both moved to the head pose between
theirs, then cross-faded), so frame ``n-1`` flows into frame ``0``.
It also builds the **mouth bank**: the lower face (nose to below the chin)
of up to 40 frames with different mouth shapes, each measured by the mesh
(inner-lip gap and mouth width over the eye distance), warped into one
canonical frame by the rigid points of the face (eye corners, nose). The
renderer (:class:`processors.replica.video_rig.VideoRig`) places the bank's
closest mouth into each loop frame.

The folder holds what a photo replica holds (``portrait.jpg`` = the loop's
first frame, ``landmarks.json``, ``mesh.json``, ``replica.json``) plus
``video.npz`` (loop frames as JPEG, per-frame placement, bank and mask);
``replica.json`` has a ``video`` section. It appears whole or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from processors.replica.assets import (
    DEFAULT_REPLICAS_DIR,
    DEFAULT_VOICE,
    PORTRAIT_SIZE,
    FaceLandmarks,
    ReplicaCreationError,
    replica_id_from_name,
    write_replica,
)
from processors.replica.mesh import JAW_LINE, ReplicaMesh

VIDEO_FILE = "video.npz"
MIN_DURATION_S = 10.0
MAX_DURATION_S = 120.0
# The face detector's box width, in source pixels (median over the frames).
MIN_VIDEO_FACE_PX = 120
# Mean luma (0-255) inside the face box (median over the frames).
MIN_FACE_LUMA = 50.0
# Share of frames that must show a face, and that may show several.
MIN_FACE_SHARE = 0.8
MAX_CROWD_SHARE = 0.1
# The inner-lip gap must span this much (in eye distances, 5th to 95th percentile).
MIN_MOUTH_RANGE = 0.05
LOOP_S = (3.0, 6.0)
SEAM_FADE_S = 0.4
# Loop candidates may have this larger a share of frames with an open mouth than the quietest.
LOOP_MOUTH_TOLERANCE = 0.05
BANK_SIZE = 40
ANALYSIS_MAX_SIDE = 640
JPEG_QUALITY = 92

# Placement in the 512x512 frame, as for a photo replica.
_EYE_DISTANCE_IN_FRAME = 0.215
_EYES_ABOVE_CENTRE = 0.32
# Mesh points that move with the skull, not the jaw: eye corners, nose bridge and tip.
RIGID_POINTS = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1)
_EYE_LEFT = (33, 133)
_EYE_RIGHT = (362, 263)
_LIDS = ((159, 145), (386, 374))
_INNER_LIPS = (13, 14)
_MOUTH_CORNERS = (61, 291)
_NOSE_BOTTOM = 2
_CHIN = 152


@dataclass
class _Analysis:
    fps: float
    size: tuple[int, int]
    faces: np.ndarray  # faces found per frame
    face_width: np.ndarray  # detector box width of the largest face, source px (nan: none)
    face_luma: np.ndarray
    frame_luma: np.ndarray
    points: np.ndarray  # (n, 468, 2) source px, nan where no mesh
    thumbs: np.ndarray  # (n, d) float32 grey thumbnails


def _refuse(path: Path, message: str) -> ReplicaCreationError:
    return ReplicaCreationError(f"{path}: {message}")


def _eye_distance(points: np.ndarray) -> np.ndarray:
    left = points[..., list(_EYE_LEFT), :].mean(axis=-2)
    right = points[..., list(_EYE_RIGHT), :].mean(axis=-2)
    return np.linalg.norm(right - left, axis=-1)


def mouth_measures(points: np.ndarray) -> np.ndarray:
    """``[inner-lip gap, mouth width]`` in eye distances, for ``(..., 468, 2)`` mesh points."""
    d = _eye_distance(points)
    gap = np.linalg.norm(points[..., _INNER_LIPS[1], :] - points[..., _INNER_LIPS[0], :], axis=-1)
    width = np.linalg.norm(points[..., _MOUTH_CORNERS[1], :] - points[..., _MOUTH_CORNERS[0], :], axis=-1)
    return np.stack([gap / d, width / d], axis=-1)


def _eye_aperture(points: np.ndarray) -> np.ndarray:
    d = _eye_distance(points)
    a = [np.linalg.norm(points[..., lo, :] - points[..., up, :], axis=-1) for up, lo in _LIDS]
    return (a[0] + a[1]) / 2 / d


def _duration(container: av.container.InputContainer, stream) -> float:
    """Seconds of video: from the header, or (a browser's WebM recording has none) from the packets."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    first, end = None, None
    for packet in container.demux(stream):
        if packet.pts is None:
            continue
        first = packet.pts if first is None else min(first, packet.pts)
        end = max(end or packet.pts, packet.pts + (packet.duration or 0))
    if first is None or stream.time_base is None:
        return 0.0
    return float((end - first) * stream.time_base)


def _open_video(path: Path) -> tuple[float, float, int]:
    """``(duration_s, fps, frames)`` of the first video stream, or a refusal."""
    if not path.is_file():
        raise ReplicaCreationError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise _refuse(path, "has no video stream (use an MP4, MOV or WebM video)")
            stream = container.streams.video[0]
            duration = _duration(container, stream)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = int(stream.frames or round(duration * fps))
    except av.error.FFmpegError as e:
        raise _refuse(path, f"not a video FFmpeg can read ({e.strerror or e}); use an MP4, MOV or WebM video") from None
    if fps <= 0:
        raise _refuse(path, "the video has no frame rate")
    return duration, fps, frames


def upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """A decoded frame as it is meant to be seen: turned by its display rotation (degrees
    counterclockwise, as phones record portrait video in landscape frames)."""
    quarter_turns = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def _frames(path: Path):
    """Yield the RGB frames in order, upright."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield upright(frame.to_ndarray(format="rgb24"), frame.rotation)


def _analyse(path: Path, fps: float, finder) -> _Analysis:
    faces, widths, face_luma, frame_luma, points, thumbs = [], [], [], [], [], []
    size = (0, 0)
    for rgb in _frames(path):
        h, w = rgb.shape[:2]
        size = (w, h)
        scale = min(1.0, ANALYSIS_MAX_SIDE / max(w, h))
        small = rgb
        if scale < 1.0:
            small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        found = finder.find(small, mesh_faces=1)
        faces.append(len(found))
        frame_luma.append(float(grey.mean()))
        thumbs.append(cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).ravel())
        pts = np.full((468, 2), np.nan, np.float32)
        if found:
            det = found[0].detection
            widths.append(det.width / scale)
            x0, y0, x1, y1 = (int(round(v)) for v in det.box)
            box = grey[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
            face_luma.append(float(box.mean()) if box.size else np.nan)
            if found[0].mesh is not None:
                pts = (found[0].mesh.points[:, :2] / scale).astype(np.float32)
        else:
            widths.append(np.nan)
            face_luma.append(np.nan)
        points.append(pts)
    return _Analysis(
        fps=fps,
        size=size,
        faces=np.asarray(faces),
        face_width=np.asarray(widths, np.float64),
        face_luma=np.asarray(face_luma, np.float64),
        frame_luma=np.asarray(frame_luma, np.float64),
        points=np.asarray(points, np.float32).reshape(-1, 468, 2),
        thumbs=np.asarray(thumbs, np.float32),
    )


def _check(path: Path, a: _Analysis) -> np.ndarray:
    """Refuse a bad video; the frames with a face mesh otherwise."""
    n = len(a.faces)
    if n == 0:
        raise _refuse(path, "no frames could be decoded")
    with_face = a.faces >= 1
    share = with_face.mean()
    if share < MIN_FACE_SHARE:
        luma = float(np.median(a.frame_luma))
        if luma < MIN_FACE_LUMA:
            raise _refuse(
                path,
                f"too dark: mean brightness {luma:.0f} of 255 and a face in {with_face.sum()} of {n} frames; "
                f"at least {MIN_FACE_LUMA:.0f} is needed (light the face)",
            )
        raise _refuse(
            path,
            f"a face was found in {with_face.sum()} of {n} frames ({100 * share:.0f} %); "
            f"at least {100 * MIN_FACE_SHARE:.0f} % must show one frontal face",
        )
    crowd = a.faces >= 2
    if crowd.mean() > MAX_CROWD_SHARE:
        most = int(np.bincount(a.faces).argmax()) if crowd.mean() > 0.5 else int(a.faces[crowd].min())
        raise _refuse(
            path,
            f"{most} faces in {crowd.sum()} of {n} frames ({100 * crowd.mean():.0f} %); "
            f"the video must show one person (at most {100 * MAX_CROWD_SHARE:.0f} % of frames with another face)",
        )
    width = float(np.nanmedian(a.face_width))
    if width < MIN_VIDEO_FACE_PX:
        raise _refuse(
            path,
            f"the face is {width:.0f} px wide (median over the frames); at least {MIN_VIDEO_FACE_PX} px is "
            "needed (film closer or at a higher resolution)",
        )
    luma = float(np.nanmedian(a.face_luma))
    if luma < MIN_FACE_LUMA:
        raise _refuse(
            path,
            f"too dark: the face's mean brightness is {luma:.0f} of 255; at least {MIN_FACE_LUMA:.0f} is "
            "needed (light the face)",
        )
    meshed = ~np.isnan(a.points[:, 0, 0])
    if meshed.mean() < MIN_FACE_SHARE:
        raise _refuse(
            path,
            f"the face mesh was found in {meshed.sum()} of {n} frames; at least {100 * MIN_FACE_SHARE:.0f} % "
            "is needed (face the camera)",
        )
    gaps = mouth_measures(a.points[meshed])[:, 0]
    spread = float(np.percentile(gaps, 95) - np.percentile(gaps, 5))
    if spread < MIN_MOUTH_RANGE:
        raise _refuse(
            path,
            f"the mouth hardly moves (lip gap range {spread:.3f} eye distances; at least {MIN_MOUTH_RANGE} is "
            "needed): the video must show the person talking",
        )
    return meshed


def _crop_transform(points: np.ndarray) -> np.ndarray:
    """One source -> 512x512 similarity for the whole video, from the eyes' median position."""
    left = np.nanmedian(points[:, list(_EYE_LEFT), :].mean(axis=1), axis=0)
    right = np.nanmedian(points[:, list(_EYE_RIGHT), :].mean(axis=1), axis=0)
    d = float(np.linalg.norm(right - left))
    angle = float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
    mid = (left + right) / 2
    size = PORTRAIT_SIZE
    m = cv2.getRotationMatrix2D((float(mid[0]), float(mid[1])), angle, _EYE_DISTANCE_IN_FRAME * size / d)
    target = np.array([size / 2, size / 2 - _EYES_ABOVE_CENTRE * _EYE_DISTANCE_IN_FRAME * size])
    m[:, 2] += target - mid
    return m


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares similarity ``src -> dst`` and its RMS residual (px)."""
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if m is None:
        return np.array([[1, 0, 0], [0, 1, 0]], np.float64), float("inf")
    residual = float(np.sqrt(np.mean(np.sum((_apply(m, src) - dst) ** 2, axis=1))))
    return m, residual


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True."""
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def _pick_loop(path: Path, a: _Analysis, meshed: np.ndarray, out_points: np.ndarray) -> tuple[int, int, int]:
    """``(start, end, fade)``: the loop is frames ``start..end-1``; its seam matches ``end`` to ``start``."""
    n = len(meshed)
    fps = a.fps
    fade = max(2, int(round(SEAM_FADE_S * fps)))
    shortest = int(round(LOOP_S[0] * fps))
    longest = min(int(round(LOOP_S[1] * fps)), n - fade - 1)
    if longest < shortest:
        raise _refuse(path, f"{n} frames are too few for a {LOOP_S[0]:.0f} s idle loop")
    d = _eye_distance(out_points)
    d = np.where(np.isnan(d), np.nanmedian(d), d)
    norm = out_points / float(np.median(d))  # where the face is, in eye distances: head motion counts
    norm = np.nan_to_num(norm, nan=10.0)  # frames without a mesh never match
    gaps = np.nan_to_num(mouth_measures(out_points)[:, 0], nan=1.0)
    eyes = _eye_aperture(out_points)
    blink = np.nan_to_num(eyes < 0.8 * np.nanmedian(eyes), nan=False).astype(np.float64)
    bad = (~meshed).astype(np.float64)
    gap_closed = float(np.percentile(gaps[meshed], 5))
    gap_scale = float(np.percentile(gaps[meshed], 95)) - gap_closed + 1e-3
    talking = (gaps > gap_closed + 0.25 * gap_scale).astype(np.float64)
    gap_sum = np.concatenate([[0.0], np.cumsum(talking)])
    blink_sum = np.concatenate([[0.0], np.cumsum(blink)])
    bad_sum = np.concatenate([[0.0], np.cumsum(bad)])
    step = np.linalg.norm(np.diff(a.thumbs, axis=0), axis=1)
    step_lm = np.linalg.norm(np.diff(norm, axis=0).reshape(n - 1, -1), axis=1)
    scale_img = float(np.median(step)) + 1e-3
    scale_lm = float(np.median(step_lm)) + 1e-4
    rows = []  # (start, end, seam, mouth, no blink, broken) per candidate
    starts = np.arange(fade, n)
    for length in range(shortest, longest + 1):
        s = starts[starts + length < n]
        if s.size == 0:
            break
        e = s + length
        seam = np.linalg.norm(a.thumbs[e] - a.thumbs[s], axis=1) / scale_img
        seam += np.linalg.norm((norm[e] - norm[s]).reshape(len(s), -1), axis=1) / scale_lm
        # The share of frames with the mouth open (talking), the faded ones included.
        mouth = (gap_sum[e] - gap_sum[s - fade]) / (length + fade)
        no_blink = (blink_sum[e] - blink_sum[s]) == 0
        broken = (bad_sum[e + 1] - bad_sum[s - fade]) > 0
        rows.append(np.stack([s, e, seam, mouth, no_blink, broken], axis=1))
    table = np.concatenate(rows) if rows else np.zeros((0, 6))
    table = table[table[:, 5] == 0]
    if len(table) == 0:
        raise _refuse(
            path,
            f"the face is seen without a break for at most {_longest_run(meshed) / fps:.1f} s; "
            f"at least {LOOP_S[0] + SEAM_FADE_S:.1f} s is needed for the idle loop (keep the face in view)",
        )
    # A listening loop: among the stretches whose mouth is about as closed as the quietest's,
    # the one whose end leads back into its start best, with a blink inside.
    quiet = table[table[:, 3] <= table[:, 3].min() + LOOP_MOUTH_TOLERANCE]
    best = quiet[np.argmin(quiet[:, 2] + 3.0 * quiet[:, 4])]
    return int(best[0]), int(best[1]), fade


def _pick_bank(measures: np.ndarray, residual: np.ndarray, usable: np.ndarray) -> list[int]:
    """Frames whose mouths cover the shapes seen: one per cell of a gap x width grid."""
    idx = np.nonzero(usable)[0]
    g, w = measures[idx, 0], measures[idx, 1]
    g_edges = np.linspace(np.percentile(g, 1), np.percentile(g, 99), 9)
    w_edges = np.linspace(np.percentile(w, 1), np.percentile(w, 99), 6)
    gi = np.clip(np.digitize(g, g_edges[1:-1]), 0, 7)
    wi = np.clip(np.digitize(w, w_edges[1:-1]), 0, 4)
    chosen: list[int] = []
    for cell in np.unique(gi * 5 + wi):
        members = idx[(gi * 5 + wi) == cell]
        chosen.append(int(members[np.argmin(residual[members])]))
    return sorted(chosen)[:BANK_SIZE]


@dataclass(frozen=True)
class _Canonical:
    points: np.ndarray  # (468, 2) mean mesh in 512 coords
    box: tuple[int, int, int, int]  # x0, y0, w, h of the lower face
    mask: np.ndarray  # (h, w) uint8


def _canonical(pts: np.ndarray, jaws: list[np.ndarray]) -> _Canonical:
    """The lower-face box on the mean face ``pts`` and its mask.

    ``jaws`` are the jaw lines (``JAW_LINE`` points, canonical coordinates) of
    the bank's mouths: the mask stops just below the lowest of them, so the
    neck and collar under the chin are the loop frame's own.
    """
    d = float(_eye_distance(pts[None])[0])
    mouth = pts[list(_MOUTH_CORNERS)].mean(axis=0)
    nose_y = float(pts[_NOSE_BOTTOM, 1])
    chin_y = float(pts[_CHIN, 1])
    x0 = int(np.floor(mouth[0] - 1.05 * d))
    y0 = int(np.floor(nose_y + 0.02 * d))
    x1 = int(np.ceil(mouth[0] + 1.05 * d))
    y1 = int(np.ceil(chin_y + 0.6 * d))
    w, h = x1 - x0, y1 - y0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ry = (chin_y + 0.42 * d - y0) / 2
    cx, cy, rx = mouth[0] - x0, ry, 0.8 * d
    inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2
    mask = np.clip((1.0 - inside) / 0.35, 0.0, 1.0)
    # Fade in below the nose so the nostrils are never pasted.
    mask *= np.clip(ys / (0.12 * d), 0.0, 1.0)
    face = np.zeros((h, w), np.uint8)
    for jaw in jaws:
        above = np.vstack([[jaw[0, 0], -h], jaw, [jaw[-1, 0], -h]]) - (x0, y0)
        cv2.fillPoly(face, [np.round(above).astype(np.int32)], 1)
    # Inside the jaw lines only (the blur feathers across them): the background and collar beside
    # the jaw move with the body, not the mouth.
    mask *= face
    mask = cv2.GaussianBlur(mask, (0, 0), 0.04 * d)
    return _Canonical(points=pts.astype(np.float32), box=(x0, y0, w, h), mask=(mask * 255).round().astype(np.uint8))


def face_light(frame: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Mean RGB of the upper cheeks and nose (between the eyes' outer corners, from just below
    the eyes to the nose's bottom): how the face is lit, whatever the mouth and the eyelids do."""
    x0, x1 = sorted((float(pts[33, 0]), float(pts[263, 0])))
    eye_y = (float(pts[33, 1]) + float(pts[263, 1])) / 2
    nose_y = float(pts[_NOSE_BOTTOM, 1])
    y0 = eye_y + 0.3 * (nose_y - eye_y)
    region = frame[max(0, int(y0)) : max(0, int(nose_y)), max(0, int(x0)) : max(0, int(x1))]
    return region.reshape(-1, 3).astype(np.float32).mean(axis=0) if region.size else np.full(3, 128, np.float32)


def _landmarks_from_mesh(pts: np.ndarray) -> FaceLandmarks:
    def p(i):
        return (float(pts[i, 0]), float(pts[i, 1]))

    el = pts[list(_EYE_LEFT)].mean(axis=0)
    er = pts[list(_EYE_RIGHT)].mean(axis=0)
    eye_w = float(np.linalg.norm(pts[133] - pts[33])) / 2
    eye_h = max(2.0, float(np.linalg.norm(pts[145] - pts[159])) / 2)
    mouth = pts[list(_INNER_LIPS)].mean(axis=0)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return FaceLandmarks(
        eye_left=(float(el[0]), float(el[1])),
        eye_right=(float(er[0]), float(er[1])),
        eye_half_size=(eye_w, eye_h),
        mouth=(float(mouth[0]), float(mouth[1])),
        mouth_half_width=float(np.linalg.norm(pts[_MOUTH_CORNERS[1]] - pts[_MOUTH_CORNERS[0]])) / 2,
        chin=p(_CHIN),
        face_box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
        detector="mediapipe face mesh (video)",
    )


def create_video_replica(
    video_path: str | Path,
    name: str,
    replicas_dir: Path = DEFAULT_REPLICAS_DIR,
    *,
    mesh_finder,
    replica_id: str | None = None,
    default_voice: str = DEFAULT_VOICE,
    video_source: str | None = None,
    video_licence: str = "provided by the user",
) -> Path:
    """Make a replica from a video of one person talking and listening, face to camera.

    Args:
        video_path: 10-120 s video (any container and codec FFmpeg reads).
        name: Display name; the id is made from it unless ``replica_id`` is given.
        replicas_dir: Where replica folders live.
        mesh_finder: The packaged face models
            (:func:`processors.replica.mesh.open_mesh_finder`); required.
        replica_id: Folder name to use instead of one made from ``name``.
        default_voice: Voice id recorded in the metadata.
        video_source: Where the video came from (defaults to its file name).
        video_licence: Licence of the video, recorded in the metadata.

    Returns:
        The new replica folder.

    Raises:
        ReplicaCreationError: A bad video (the message names the file, the
            measured value and what is allowed), missing face models, or the
            id is taken; nothing is written.
    """
    path = Path(video_path)
    rid = replica_id or replica_id_from_name(name)
    if not rid:
        raise ReplicaCreationError(f"name {name!r} gives an empty replica id; use letters or digits")
    if (replicas_dir / rid).exists():
        raise ReplicaCreationError(f"replica '{rid}' already exists in {replicas_dir}")
    if mesh_finder is None:
        raise ReplicaCreationError("a replica from a video needs the packaged face models; run scripts/setup.sh")
    duration, fps, _ = _open_video(path)
    if not MIN_DURATION_S <= duration <= MAX_DURATION_S:
        raise _refuse(
            path,
            f"the video is {duration:.1f} s long; {MIN_DURATION_S:.0f}-{MAX_DURATION_S:.0f} s is allowed "
            "(the person talking and listening, face to camera)",
        )

    analysis = _analyse(path, fps, mesh_finder)
    counted = len(analysis.faces) / duration
    if abs(counted - fps) > 0.1 * fps:
        # A variable-rate recording whose header rate is not the frames' (browsers, phones).
        analysis.fps = fps = counted
    meshed = _check(path, analysis)
    crop = _crop_transform(analysis.points[meshed])
    in_frame = _apply(crop, analysis.points.reshape(-1, 2)).reshape(-1, 468, 2)
    out_points = np.where(meshed[:, None, None], in_frame, np.nan)
    start, end, fade = _pick_loop(path, analysis, meshed, out_points)
    mean_face = np.nanmean(out_points[start:end], axis=0)
    rigid = list(RIGID_POINTS)

    # Bank: mouths measured per frame; each frame's lower face warped onto the canonical face.
    measures = mouth_measures(out_points)
    to_canon = [None] * len(meshed)
    residual = np.full(len(meshed), np.inf)
    for i in np.nonzero(meshed)[0]:
        to_canon[i], residual[i] = _similarity(out_points[i, rigid], mean_face[rigid])
    usable = meshed & (residual < np.percentile(residual[meshed], 90) + 0.5)
    bank = _pick_bank(measures, residual, usable)
    jaws = [_apply(to_canon[i], out_points[i, list(JAW_LINE)]) for i in bank] + [mean_face[list(JAW_LINE)]]
    canon = _canonical(mean_face, jaws)

    # Extraction at full resolution: the loop (with the frames the seam fades into) and the bank.
    x0, y0, bw, bh = canon.box
    shift = np.array([[1, 0, -x0], [0, 1, -y0]], np.float64)
    wanted = set(range(start - fade, end)) | set(bank)
    loop_frames: dict[int, np.ndarray] = {}
    crops: dict[int, np.ndarray] = {}
    bank_light: dict[int, np.ndarray] = {}
    for i, rgb in enumerate(_frames(path)):
        if i not in wanted:
            continue
        if start - fade <= i < end:
            loop_frames[i] = cv2.warpAffine(
                rgb, crop, (PORTRAIT_SIZE, PORTRAIT_SIZE), flags=cv2.INTER_LINEAR if crop[0, 0] < 1 else cv2.INTER_CUBIC,
                borderMode=cv2.BORDER_REPLICATE,
            )
        if i in bank:
            m = _compose(shift, _compose(to_canon[i], crop))
            crops[i] = cv2.warpAffine(rgb, m, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            bank_light[i] = face_light(rgb, analysis.points[i])
    loop, loop_points = [], []
    for k, i in enumerate(range(start, end)):
        frame, pts = loop_frames[i], out_points[i]
        m = k - (end - start - fade)
        if m >= 0:  # morph into the frames before the start
            j = start - fade + m
            frame, pts = _morph(frame, pts, loop_frames[j], out_points[j], (m + 1) / (fade + 1))
        loop.append(frame)
        loop_points.append(pts)
    # Per loop frame: the canonical lower-face box -> that frame (a similarity of the rigid points).
    placements = np.stack(
        [_compose(_similarity(canon.points[rigid], p[rigid])[0], _inverse(shift)) for p in loop_points]
    )

    jpegs = []
    for frame in loop:
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ReplicaCreationError(f"{path}: could not encode a loop frame")
        jpegs.append(data.ravel())
    bank_measures = measures[bank].astype(np.float32)
    gaps, widths = measures[usable, 0], measures[usable, 1]
    closed = widths[gaps <= np.percentile(gaps, 25)]
    shapes = {
        "gap_rest": float(np.percentile(gaps, 5)),
        "gap_max": float(np.percentile(gaps, 99)),
        "width_rest": float(np.median(closed)),
        "width_min": float(np.percentile(widths, 1)),
        "width_max": float(np.percentile(widths, 99)),
    }
    video_meta = {
        "file": VIDEO_FILE,
        "fps": fps,
        "loop_frames": len(loop),
        "loop_source_s": [round(start / fps, 3), round(end / fps, 3)],
        "seam_fade_frames": fade,
        "bank_size": len(bank),
        "bank_source_frames": bank,
        "mouth_box": list(canon.box),
        "mouth_shapes": shapes,
        "source_duration_s": round(duration, 3),
        "source_size": list(analysis.size),
        "median_face_px": round(float(np.nanmedian(analysis.face_width)), 1),
    }
    first = loop_points[0]
    return _write(
        replicas_dir,
        rid,
        name,
        portrait=loop[0],
        landmarks=_landmarks_from_mesh(first),
        mesh=ReplicaMesh(points=first.astype(np.float32), detector=_detector(mesh_finder)),
        source=video_source or path.name,
        licence=video_licence,
        default_voice=default_voice,
        video_meta=video_meta,
        arrays={
            "loop_jpeg": np.concatenate(jpegs),
            "loop_offsets": np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64),
            "loop_placements": placements.astype(np.float32),
            "bank_crops": np.stack([crops[i] for i in bank]),
            "bank_measures": bank_measures,
            "mask": canon.mask,
            "bank_light": np.stack([bank_light[i] for i in bank]),
            "loop_light": np.stack([face_light(f, p) for f, p in zip(loop, loop_points)]),
        },
    )


def _morph(a: np.ndarray, pa: np.ndarray, b: np.ndarray, pb: np.ndarray, alpha: float):
    """Frame ``a`` turning into frame ``b`` (``alpha`` 0 to 1): both moved to the head pose between
    theirs (a similarity of the whole mesh), then cross-faded, so a head that moved between them
    slides over instead of showing twice."""
    to_b, _ = _similarity(pa, pb)
    eye = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    towards = (1 - alpha) * eye + alpha * to_b  # a -> the pose between
    back = _compose(towards, _inverse(to_b))  # b -> the pose between
    size = (a.shape[1], a.shape[0])
    wa = cv2.warpAffine(a, towards, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    wb = cv2.warpAffine(b, back, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    pts = (1 - alpha) * _apply(towards, pa) + alpha * _apply(back, pb)
    return cv2.addWeighted(wa, 1 - alpha, wb, alpha, 0.0), pts


def _detector(finder) -> str:
    info = finder.info
    return f"{info.engine} face mesh ({', '.join(info.models)}) on {info.runtime}, video"


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine doing ``b`` then ``a``."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


def _inverse(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m.astype(np.float64))


def _write(
    replicas_dir: Path,
    rid: str,
    name: str,
    *,
    portrait: np.ndarray,
    landmarks: FaceLandmarks,
    mesh: ReplicaMesh,
    source: str,
    licence: str,
    default_voice: str,
    video_meta: dict,
    arrays: dict[str, np.ndarray],
) -> Path:
    """Write the folder in a hidden staging folder beside it, then rename it into place."""
    replicas_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{rid}.video.", dir=replicas_dir))
    try:
        folder = write_replica(
            staging,
            replica_id=rid,
            name=name,
            portrait_rgb=portrait,
            landmarks=landmarks,
            image_source=source,
            image_licence=licence,
            default_voice=default_voice,
            mesh=mesh,
        )
        np.savez(folder / VIDEO_FILE, **arrays)
        meta_path = folder / "replica.json"
        metadata = json.loads(meta_path.read_text())
        metadata["video"] = video_meta
        meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
        final = replicas_dir / rid
        if final.exists():
            raise ReplicaCreationError(f"replica '{rid}' already exists in {replicas_dir}")
        os.rename(folder, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
