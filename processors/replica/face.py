"""The talking head: a portrait warped into a pose, frame by frame.

:class:`FaceRig` turns a :class:`FacePose` (mouth shape, eyelids, gaze,
brows, head motion) into an RGB frame. Only the regions that move are
warped: the mouth and jaw, each eye, and each brow when it lifts. A replica with a face mesh gets its lips, chin
and jaw warped piecewise from the portrait (:class:`MouthWarp`); one without
gets the older displacement field around the mouth line with a painted
inside (dark cavity, teeth, tongue). Eyes use ``cv2.remap`` on displacement
fields built from precomputed grids. A small affine warp of the whole frame adds head motion and
breathing.

:class:`IdleMotion` makes the face alive while listening: blinks at 2-6 s
intervals, breathing, slow head sway and small gaze shifts. Both are pure
functions of the time they are given, so they can be driven by any clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from loguru import logger

from processors.replica.assets import FaceLandmarks, Replica
from processors.replica.mouth_warp import MouthWarp

# MediaPipe face mesh brows, outer end to inner end: (upper edge, lower edge);
# the first above the image-left eye, the second above the image-right one.
BROWS = (
    ((70, 63, 105, 66, 107), (46, 53, 52, 65, 55)),
    ((300, 293, 334, 296, 336), (276, 283, 282, 295, 285)),
)

@dataclass
class FacePose:
    """Everything that moves in one frame.

    Parameters:
        mouth: ``[open, width, teeth, tongue, press]`` (see ``MouthShape``;
            ``press`` may be left out).
        blink: Eyelid closure, 0 open to 1 closed.
        gaze: Iris offset ``(x, y)`` in units of the eye's half size, -1..1.
        head: ``(dx_px, dy_px, roll_deg, scale)`` applied to the whole frame.
        brow: Brow lift, 0 at rest to 1 fully raised (``FaceRig.BROW_LIFT``
            of the eye-to-brow distance).
    """

    mouth: np.ndarray = field(default_factory=lambda: np.zeros(5, np.float32))
    blink: float = 0.0
    gaze: tuple[float, float] = (0.0, 0.0)
    head: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)
    brow: float = 0.0


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class _Region:
    """A rectangle of the frame with its pixel coordinates as float32 grids."""

    def __init__(self, x0: float, y0: float, x1: float, y1: float, width: int, height: int):
        self.x0 = max(0, int(math.floor(x0)))
        self.y0 = max(0, int(math.floor(y0)))
        self.x1 = min(width, int(math.ceil(x1)))
        self.y1 = min(height, int(math.ceil(y1)))
        self.xs = np.arange(self.x0, self.x1, dtype=np.float32)
        self.ys = np.arange(self.y0, self.y1, dtype=np.float32)
        self.gx, self.gy = np.meshgrid(self.xs, self.ys)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1


class FaceRig:
    """Renders a replica's portrait in a given pose.

    Args:
        replica: The replica (portrait and landmarks).
        size: Output ``(width, height)``; the portrait is scaled to fit.
    """

    # Cavity colours (RGB).
    _CAVITY = np.array([52, 16, 20], np.float32)
    _CAVITY_BACK = np.array([22, 6, 8], np.float32)
    _TEETH = np.array([236, 230, 218], np.float32)
    _TONGUE = np.array([196, 92, 98], np.float32)
    _LASH = np.array([38, 28, 26], np.float32)
    # The head is drawn where it was until its pose would move some pixel of
    # the frame by more than this (px): slow sway then moves in steps too
    # small to see, and the frames between need only the features warped
    # again (and the encoder finds most of the frame unchanged).
    HEAD_STEP_PX = 0.5

    def __init__(self, replica: Replica, size: tuple[int, int] = (512, 512)):
        width, height = size
        portrait = replica.portrait
        ph, pw = portrait.shape[:2]
        factor = min(width / pw, height / ph)
        landmarks = replica.landmarks.scaled(factor)
        scaled = cv2.resize(portrait, (round(pw * factor), round(ph * factor)), interpolation=cv2.INTER_AREA)
        base = np.zeros((height, width, 3), np.uint8)
        oy = (height - scaled.shape[0]) // 2
        ox = (width - scaled.shape[1]) // 2
        base[oy : oy + scaled.shape[0], ox : ox + scaled.shape[1]] = scaled
        if ox or oy:
            landmarks = _shift(landmarks, ox, oy)
        self.size = (width, height)
        self.landmarks = landmarks
        self.base = np.ascontiguousarray(base)
        self._build_mouth(landmarks)
        # With a face mesh the lips, chin and jaw are warped from the portrait itself.
        self.mouth_warp: MouthWarp | None = None
        if replica.mesh is not None:
            self.mouth_warp = MouthWarp(self.base, replica.mesh.scaled(factor, (ox, oy)))
        else:
            logger.info(
                f"replica '{replica.replica_id}' has no face mesh: its mouth is drawn without one "
                "(python -m processors.replica.mesh REPLICAS_DIR adds it)"
            )
        self._eyes = [self._build_eye(landmarks.eye_left, landmarks), self._build_eye(landmarks.eye_right, landmarks)]
        mesh = replica.mesh.scaled(factor, (ox, oy)) if replica.mesh is not None else None
        self._brows = [
            self._build_brow(*self._brow_points(mesh, i, eye, landmarks), eye, landmarks)
            for i, eye in enumerate((landmarks.eye_left, landmarks.eye_right))
        ]
        self._pivot = (float(landmarks.chin[0]), float(landmarks.chin[1]))
        self._mouth_box = self.mouth_warp.box if self.mouth_warp is not None else self._mouth_region.box
        self._i420: _I420Canvas | None = None  # made by the first render_i420
        self._held: np.ndarray | None = None  # the head matrix drawn last

    # --- Mouth ---------------------------------------------------------------

    def _build_mouth(self, lm: FaceLandmarks) -> None:
        w, h = self.size
        u = float(lm.mouth_half_width)
        mx, my = lm.mouth
        chin_y = max(lm.chin[1], my + 1.2 * u)
        r = _Region(mx - 2.1 * u, my - 1.1 * u, mx + 2.1 * u, chin_y + 1.1 * u, w, h)
        self._mouth_region = r
        self._u = u
        self._mouth_xy = (float(mx), float(my))
        dx = r.xs - mx
        dy = r.ys - my
        # Jaw: the whole lower face moves down; zero at the region's edges.
        self._jaw_x = _smoothstep(2.05 * u, 1.2 * u, np.abs(dx))
        below = np.clip(dy, 0, None)
        jaw_rows = np.where(r.ys <= chin_y, 1.0, _smoothstep(r.ys[-1] + 1, chin_y, r.ys))
        self._jaw_rows = (jaw_rows * (dy >= 0)).astype(np.float32)
        # Near the lips the opening follows the mouth's lens shape.
        self._lip_rows = (1.0 - _smoothstep(0.0, 0.8 * u, below)).astype(np.float32)
        # Above the lips the upper lip lifts a little.
        self._upper_rows = np.where(dy < 0, _smoothstep(r.ys[0], my, r.ys), 0.0).astype(np.float32)
        # Lip corners move sideways (spread or round).
        self._corner_x = np.sin(np.pi * np.clip(dx / (2.0 * u), -1, 1)).astype(np.float32)
        edge = _smoothstep(r.ys[0], r.ys[0] + 0.4 * u, r.ys) * _smoothstep(r.ys[-1], r.ys[-1] - 0.4 * u, r.ys)
        self._corner_rows = (np.exp(-((dy / (0.7 * u)) ** 2)) * edge).astype(np.float32)
        self._dx = dx.astype(np.float32)

    def _mouth(self, frame: np.ndarray, mouth: np.ndarray) -> bool:
        """Draw the mouth into ``frame``; False when it is at rest (nothing drawn)."""
        if self.mouth_warp is not None:
            return self.mouth_warp.render_into(frame, mouth)
        open_, width, teeth, tongue = (float(v) for v in mouth[:4])
        if open_ < 0.005 and abs(width) < 0.01:
            return False
        r = self._mouth_region
        u = self._u
        mx, my = self._mouth_xy
        corner = u * (0.12 * width if width > 0 else 0.22 * width)
        half = u + corner
        lens = np.clip(1.0 - (self._dx / half) ** 2, 0.0, 1.0)
        drop = 0.62 * u * open_
        lift = 0.12 * u * open_
        jaw_cols = self._lip_rows[:, None] * lens[None, :] + (1.0 - self._lip_rows[:, None]) * self._jaw_x[None, :]
        map_y = r.gy - drop * self._jaw_rows[:, None] * jaw_cols + lift * self._upper_rows[:, None] * lens[None, :]
        map_x = r.gx - corner * self._corner_rows[:, None] * self._corner_x[None, :]
        roi = cv2.remap(self.base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        if open_ > 0.01:
            self._paint_cavity(roi, lens, drop, lift, teeth, tongue, my - r.y0)
        frame[r.slices] = roi
        return True

    def _paint_cavity(self, roi, lens, drop, lift, teeth, tongue, line_y) -> None:
        cols = np.nonzero(lens > 0)[0]
        if len(cols) == 0:
            return
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        y0 = max(0, int(math.floor(line_y - lift - 1)))
        y1 = min(roi.shape[0], int(math.ceil(line_y + drop + 2)))
        if y1 - y0 < 1:
            return
        ln = lens[c0:c1][None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        top = line_y - lift * ln
        bottom = line_y + drop * ln
        alpha = np.clip(np.minimum(ys - top, bottom - ys) + 0.5, 0.0, 1.0)
        gap = bottom - top
        depth = np.clip((ys - top) / np.maximum(gap, 1e-3), 0, 1)
        colour = self._CAVITY[None, None, :] * (0.5 + 0.5 * ln[..., None]) + self._CAVITY_BACK * (
            0.5 - 0.5 * ln[..., None]
        )
        colour = np.broadcast_to(colour, (y1 - y0, c1 - c0, 3)).copy()
        u = self._u
        if teeth > 0.01:
            band = teeth * 0.17 * u * np.sqrt(ln)
            upper = np.clip(top + band - ys + 0.5, 0, 1) * (ln > 0.05)
            shade = (0.72 + 0.28 * ln)[..., None]
            colour = colour * (1 - upper[..., None]) + self._TEETH * shade * upper[..., None]
            lower_band = teeth * 0.06 * u * np.sqrt(ln) * min(1.0, drop / (0.2 * u + 1e-6))
            lower = np.clip(ys - (bottom - lower_band) + 0.5, 0, 1) * (lower_band > 0.7)
            colour = colour * (1 - lower[..., None]) + self._TEETH * 0.85 * shade * lower[..., None]
        if tongue > 0.01:
            t = tongue * np.clip((depth - 0.45) / 0.3, 0, 1) * np.clip(ln * 1.5, 0, 1)
            colour = colour * (1 - t[..., None]) + self._TONGUE * t[..., None]
        a = alpha[..., None]
        patch = roi[y0:y1, c0:c1].astype(np.float32)
        roi[y0:y1, c0:c1] = (patch * (1 - a) + colour * a).astype(np.uint8)

    # --- Eyes ------------------------------------------------------------------

    def _build_eye(self, centre, lm: FaceLandmarks) -> dict:
        w, h = self.size
        ex, ey = centre
        ew, eh = lm.eye_half_size
        lid_top = ey - 2.2 * eh - 0.5 * ew
        r = _Region(ex - 1.5 * ew, lid_top, ex + 1.5 * ew, ey + 2.0 * eh, w, h)
        dx = r.xs - ex
        lid_w = 1.15 * ew
        prof = np.sqrt(np.clip(1 - (dx / lid_w) ** 2, 0, 1)).astype(np.float32)
        iris = np.clip(1 - ((r.gx - ex) / (0.85 * ew)) ** 2 - ((r.gy - ey) / (0.95 * eh)) ** 2, 0, 1)
        return {
            "region": r,
            "top": (ey - eh * prof).astype(np.float32),
            "bottom": (ey + 0.85 * eh * prof).astype(np.float32),
            "prof": prof,
            "iris_mask": np.sqrt(iris).astype(np.float32),
            "lid_y0": float(r.y0),
            "ew": float(ew),
            "eh": float(eh),
        }

    def _eye(self, frame: np.ndarray, eye: dict, closure: float, gaze: tuple[float, float]) -> bool:
        """Draw one eye's lid and gaze into ``frame``; False when it is open and looks ahead (nothing drawn)."""
        gx, gy = gaze
        if closure < 0.01 and abs(gx) < 0.01 and abs(gy) < 0.01:
            return False
        r: _Region = eye["region"]
        map_x = r.gx - (gx * 0.3 * eye["ew"]) * eye["iris_mask"]
        map_y = r.gy - (gy * 0.25 * eye["eh"]) * eye["iris_mask"]
        if closure >= 0.01:
            shift = closure * (eye["bottom"] - eye["top"])
            edge = eye["top"] + shift
            y0 = eye["lid_y0"]
            stretch = shift[None, :] * (r.gy - y0) / np.maximum(edge[None, :] - y0, 1.0)
            covered = r.gy <= edge[None, :]
            map_y = np.where(covered, r.gy - stretch, map_y)
            map_x = np.where(covered, r.gx, map_x)
        roi = cv2.remap(self.base, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        if closure >= 0.15:
            lash = np.exp(-(((r.gy - edge[None, :]) / 1.3) ** 2)) * (eye["prof"][None, :] > 0.05)
            a = (min(1.0, closure * 1.3) * 0.85 * lash)[..., None]
            roi = (roi * (1 - a) + self._LASH * a).astype(np.uint8)
        frame[r.slices] = roi
        return True

    # --- Brows --------------------------------------------------------------------

    # A full brow lift, as a fraction of the distance from the eye's centre to the brow's.
    BROW_LIFT = 0.16

    @staticmethod
    def _brow_points(mesh, index: int, eye, lm: FaceLandmarks) -> tuple[np.ndarray, np.ndarray]:
        """The brow's upper and lower edge (outer to inner end): from the mesh, or guessed from the eye."""
        if mesh is not None:
            upper, lower = BROWS[index]
            return mesh.points[list(upper)].astype(np.float64), mesh.points[list(lower)].astype(np.float64)
        ex, ey = eye
        ew, eh = lm.eye_half_size
        xs = ex + np.linspace(-1.6 * ew, 1.6 * ew, 5)
        arch = ey - 2.2 * eh - 0.3 * ew - 0.2 * ew * (1 - ((xs - ex) / (1.6 * ew)) ** 2)
        upper = np.stack([xs, arch - 0.45 * eh], axis=1)
        lower = np.stack([xs, arch + 0.45 * eh], axis=1)
        return upper, lower

    def _build_brow(self, upper: np.ndarray, lower: np.ndarray, eye, lm: FaceLandmarks) -> dict:
        """A region around one brow and how much of the lift each pixel gets.

        The brow moves by the full lift; the skin above it by less up to the
        region's top, and the skin below it by less down to the upper eyelid,
        which stays where it is (the eye is drawn before the brows).
        """
        w, h = self.size
        ex, ey = eye
        eh = float(lm.eye_half_size[1])
        pts = np.concatenate([upper, lower])
        bx0, bx1 = float(pts[:, 0].min()), float(pts[:, 0].max())
        width = bx1 - bx0
        order = np.argsort(upper[:, 0])
        mid = (upper + lower) / 2
        thick = float(np.median(np.abs(lower[:, 1] - upper[:, 1])))
        centre_y = float(mid[:, 1].mean())
        lift = self.BROW_LIFT * max(ey - centre_y, 1.0)
        lid = ey - eh  # the upper eyelid at the eye's centre
        fall_up = max(3.0 * thick, 3.0 * lift, 8.0)
        y1 = max(lid, float(lower[:, 1].max()) + 1.6 * lift) + 1.0
        r = _Region(bx0 - 0.3 * width, float(upper[:, 1].min()) - fall_up, bx1 + 0.3 * width, y1, w, h)
        line = np.interp(np.clip(r.xs, bx0, bx1), mid[order, 0], mid[order, 1]).astype(np.float32)[None, :]
        top = line - thick / 2
        bottom = line + thick / 2
        below_end = np.minimum(np.maximum(np.float32(lid), bottom + 1.6 * lift), r.ys[-1])
        wy = np.where(
            r.gy < top,
            _smoothstep(0.0, 1.0, (r.gy - (top - fall_up)) / fall_up),
            np.where(r.gy > bottom, _smoothstep(0.0, 1.0, (below_end - r.gy) / (below_end - bottom)), 1.0),
        )
        wx = _smoothstep(bx0 - 0.3 * width, bx0 + 0.05 * width, r.xs) * _smoothstep(
            bx1 + 0.3 * width, bx1 - 0.05 * width, r.xs
        )
        return {
            "region": r,
            "weight": (wy * wx[None, :]).astype(np.float32),
            "lift_px": float(lift),
            "local_x": (r.gx - r.x0).astype(np.float32),
            "local_y": (r.gy - r.y0).astype(np.float32),
        }

    def _brow(self, frame: np.ndarray, brow: dict, amount: float) -> None:
        r: _Region = brow["region"]
        map_y = brow["local_y"] + (amount * brow["lift_px"]) * brow["weight"]
        src = frame[r.slices].copy()
        frame[r.slices] = cv2.remap(src, brow["local_x"], map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    # --- Whole frame -------------------------------------------------------------

    def _feature_boxes(self) -> list[tuple[int, int, int, int]]:
        """The box each feature draws into, in drawing order: the mouth, the eyes, the brows."""
        return [self._mouth_box, *(eye["region"].box for eye in self._eyes), *(brow["region"].box for brow in self._brows)]

    @staticmethod
    def _feature_keys(pose: FacePose) -> list:
        """What decides each feature's pixels in ``pose`` (in the order of ``_feature_boxes``): equal keys, equal pixels."""
        eye = (pose.blink, tuple(pose.gaze))
        brow = pose.brow if pose.brow > 0.01 else 0.0
        return [np.asarray(pose.mouth, np.float32).tobytes(), eye, eye, brow, brow]

    def _draw_features(self, frame: np.ndarray, pose: FacePose, features=range(5)) -> set[int]:
        """The ``features`` (indices into ``_feature_boxes``) of ``pose`` into ``frame`` (the portrait there); the ones drawn."""
        drawn = set()
        if 0 in features and self._mouth(frame, pose.mouth):
            drawn.add(0)
        for i, eye in enumerate(self._eyes, 1):
            if i in features and self._eye(frame, eye, pose.blink, pose.gaze):
                drawn.add(i)
        if pose.brow > 0.01:
            for i, brow in enumerate(self._brows, 3):
                if i in features:
                    self._brow(frame, brow, pose.brow)
                    drawn.add(i)
        return drawn

    def _head_matrix(self, pose: FacePose) -> np.ndarray | None:
        """The head motion's affine matrix (frame to frame), or None when the head is at rest."""
        dx, dy, roll, scale = pose.head
        if abs(dx) < 1e-3 and abs(dy) < 1e-3 and abs(roll) < 1e-3 and abs(scale - 1) < 1e-5:
            return None
        m = cv2.getRotationMatrix2D(self._pivot, roll, scale)
        m[0, 2] += dx
        m[1, 2] += dy
        return m

    def _head(self, pose: FacePose) -> np.ndarray | None:
        """The head matrix to draw ``pose`` with: the one drawn last while ``pose``'s is within ``HEAD_STEP_PX`` of it."""
        m = self._head_matrix(pose)
        held = self._held
        if (m is None) != (held is None) or (m is not None and _moves(m, held, self.size) > self.HEAD_STEP_PX):
            self._held = m
        return self._held

    def render(self, pose: FacePose) -> np.ndarray:
        """One RGB frame (height x width x 3, uint8) of the face in ``pose``."""
        frame = self.base.copy()
        self._draw_features(frame, pose)
        m = self._head(pose)
        if m is None:
            return frame
        return cv2.warpAffine(frame, m, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def render_i420(self, pose: FacePose) -> np.ndarray:
        """The frame of :meth:`render` as YUV 4:2:0 (I420: ``height * 3 // 2`` rows of ``width`` bytes).

        What a video encoder takes, for less work than ``render`` and a
        conversion: only the boxes the features drew into are converted
        (the portrait was converted once), a feature whose pose did not
        change is left as it was, and the head motion warps the three planes
        (1.5 bytes a pixel, not 3); while the head holds still only the
        changed boxes are warped again. Not thread-safe: one rig
        draws one call's frames, one at a time.
        """
        if self._i420 is None:
            self._i420 = _I420Canvas(self.base, self._feature_boxes())
        canvas = self._i420
        keys = self._feature_keys(pose)
        features = canvas.to_redraw(keys)
        canvas.restore(features)
        changed = canvas.convert(features, keys, self._draw_features(canvas.work, pose, features))
        return canvas.warped(self._head(pose), changed)


class _I420Canvas:
    """A frame kept as I420 planes, of which only the boxes of features drawn anew are converted each frame.

    The features draw in RGB into ``work`` (the portrait elsewhere). A
    feature whose key (what decides its pixels) is unchanged keeps its
    pixels; the others (and any whose box overlaps one of theirs) are
    put back to the portrait and drawn again, and their boxes converted
    into the planes, widened to even coordinates so that their 2x2 chroma
    blocks are the frame's own and converting them alone gives what
    converting the whole frame would.
    """

    def __init__(self, base: np.ndarray, boxes: list[tuple[int, int, int, int]]):
        h, w = base.shape[:2]
        if w % 2 or h % 2:
            raise ValueError(f"an I420 frame needs an even width and height, not {w}x{h}")
        self.size = (w, h)
        self.base = base
        self.work = base.copy()  # RGB: the portrait, and the features drawn last
        self.source = cv2.cvtColor(base, cv2.COLOR_RGB2YUV_I420)  # the planes the head warp reads
        self._planes = _i420_planes(self.source, w, h)
        self._boxes = [_even(box, self.size) for box in boxes]
        self._keys: list = [None] * len(boxes)  # each feature's key when drawn last (None: not yet)
        self._shown = [False] * len(boxes)  # whether it differs from the portrait in work
        self._out = self.source.copy()  # the last frame, as warped
        self._out_planes = _i420_planes(self._out, w, h)
        self._matrix: np.ndarray | None = None  # the head matrix it was warped with (None: not warped)
        self._inverse: tuple[np.ndarray, np.ndarray, np.ndarray] = ()

    def to_redraw(self, keys: list) -> set[int]:
        """The features to draw again for ``keys``: those whose key changed, and those overlapping them."""
        todo = {i for i, key in enumerate(keys) if self._keys[i] is None or key != self._keys[i]}
        grown = True
        while grown:
            grown = False
            for i, box in enumerate(self._boxes):
                if i not in todo and any(_overlap(box, self._boxes[j]) for j in todo):
                    todo.add(i)
                    grown = True
        return todo

    def restore(self, features: set[int]) -> None:
        """Put the portrait back in the boxes of ``features`` drawn last time (a brow warps what is there)."""
        for i in features:
            if self._shown[i]:
                x0, y0, x1, y1 = self._boxes[i]
                self.work[y0:y1, x0:x1] = self.base[y0:y1, x0:x1]

    def convert(self, features: set[int], keys: list, drawn: set[int]) -> list[tuple[int, int, int, int]]:
        """Convert the boxes of ``features`` drawn now or last time; those boxes."""
        changed = []
        for i in sorted(features):
            if i in drawn or self._shown[i]:
                x0, y0, x1, y1 = self._boxes[i]
                box = _i420_planes(cv2.cvtColor(self.work[y0:y1, x0:x1], cv2.COLOR_RGB2YUV_I420), x1 - x0, y1 - y0)
                y_plane, u_plane, v_plane = self._planes
                y_plane[y0:y1, x0:x1] = box[0]
                u_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = box[1]
                v_plane[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = box[2]
                changed.append(self._boxes[i])
            self._shown[i] = i in drawn
            self._keys[i] = keys[i]
        return changed

    def warped(self, m: np.ndarray | None, changed: list[tuple[int, int, int, int]]) -> np.ndarray:
        """A new I420 frame: the source planes moved by the affine ``m`` (None: as they are).

        With the matrix of the last frame, only where the ``changed`` boxes
        land is warped again, into the last frame.
        """
        if m is None:
            self._matrix = None
            return self.source.copy()
        w, h = self.size
        if self._matrix is not None and np.array_equal(m, self._matrix):
            for box in changed:
                self._warp(_landing(m, box, self.size))
        else:
            self._matrix = m.copy()
            self._inverse = _plane_inverses(m)
            self._warp((0, 0, w, h))
        return self._out.copy()

    def _warp(self, rect: tuple[int, int, int, int]) -> None:
        """Warp the planes into ``rect`` (even) of the output frame, with the matrix of ``_matrix``."""
        x0, y0, x1, y1 = rect
        if x1 <= x0 or y1 <= y0:
            return
        for src, dst, inv, scale in zip(self._planes, self._out_planes, self._inverse, (1, 2, 2)):
            a, b, c, d = x0 // scale, y0 // scale, x1 // scale, y1 // scale
            shifted = inv.copy()  # output pixel (x + a, y + b) of the plane, for the rect's (x, y)
            shifted[:, 2] += inv[:, :2] @ (a, b)
            cv2.warpAffine(
                src, shifted, (c - a, d - b), dst=dst[b:d, a:c],
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
            )


def _plane_inverses(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the frame's affine ``m``: each I420 plane's map from output pixel to source pixel."""
    # A chroma sample sits at the centre of its 2x2 luma pixels: luma x = 2 * chroma x + 0.5.
    mc = m.copy()
    mc[:, 2] = (m[:, :2].sum(axis=1) * 0.5 + m[:, 2] - 0.5) / 2
    luma, chroma = cv2.invertAffineTransform(m), cv2.invertAffineTransform(mc)
    return luma, chroma, chroma


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _landing(m: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where ``box`` of the source lands under ``m``: its bounding rect with a 2 px margin, even, in the frame."""
    x0, y0, x1, y1 = box
    corners = m[:, :2] @ np.array([[x0, x1, x0, x1], [y0, y0, y1, y1]], np.float64) + m[:, 2:]
    (lx, ly), (hx, hy) = corners.min(axis=1) - 2, corners.max(axis=1) + 2
    w, h = size
    return _even((max(0, math.floor(lx)), max(0, math.floor(ly)), min(w, math.ceil(hx)), min(h, math.ceil(hy))), size)


def _even(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` widened to even coordinates (its 2x2 chroma blocks whole), within a ``size`` frame."""
    x0, y0, x1, y1 = box
    w, h = size
    return x0 - x0 % 2, y0 - y0 % 2, min(w, x1 + x1 % 2), min(h, y1 + y1 % 2)


def _moves(m: np.ndarray, other: np.ndarray, size: tuple[int, int]) -> float:
    """How far (px) the affine ``m`` puts some pixel of a ``size`` frame from where ``other`` puts it (at a corner)."""
    w, h = size
    corners = np.array([[0, w, 0, w], [0, 0, h, h], [1, 1, 1, 1]], np.float64)
    return float(np.hypot(*((m - other) @ corners)).max())


def _i420_planes(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of an I420 buffer's Y, U and V planes (``height`` x ``width``, then two of half each)."""
    flat = frame.reshape(-1)
    luma = width * height
    chroma = luma // 4
    return (
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2),
    )


def _shift(lm: FaceLandmarks, ox: float, oy: float) -> FaceLandmarks:
    def p(v):
        return (v[0] + ox, v[1] + oy)

    fx, fy, fw, fh = lm.face_box
    return FaceLandmarks(
        eye_left=p(lm.eye_left),
        eye_right=p(lm.eye_right),
        eye_half_size=lm.eye_half_size,
        mouth=p(lm.mouth),
        mouth_half_width=lm.mouth_half_width,
        chin=p(lm.chin),
        face_box=(fx + ox, fy + oy, fw, fh),
        detector=lm.detector,
    )


class IdleMotion:
    """Blinks, gaze shifts, breathing, head sway and nods as functions of time.

    With the voice: a blink due mid-word waits for the next pause, the head
    nods once at the end of a phrase (voiced for ``PHRASE_S`` or more, then
    quiet), and a stressed syllable (loudness ``EMPHASIS_RISE`` above its
    running level) lifts the brows and dips the head a little. While
    listening, :meth:`nod` is called when the user pauses; at the start of a
    long reply, :meth:`glance` looks away briefly. Times must be asked in
    order (the renderer's clock), as the blinks and nods are scheduled as
    time goes on.

    Args:
        seed: Seed for the blink and gaze timing (each replica may differ).
    """

    BLINK_INTERVAL_S = (2.0, 6.0)
    _CLOSE_S = 0.07
    _HOLD_S = 0.03
    _OPEN_S = 0.1
    # Loudness (0..1) above which the replica is mid-word.
    VOICED = 0.12
    # A phrase this long, then this much quiet, ends with a nod.
    PHRASE_S = 0.8
    PHRASE_END_S = 0.12
    NOD_S = 0.45
    PHRASE_NOD_PX = 3.0
    LISTENING_NOD_PX = 2.5
    # Emphasis: loudness this far above its running level (over the voiced
    # frames, time constant LEVEL_S) lifts the brows for BROW_S, at most once
    # every EMPHASIS_GAP_S and not in a phrase's first PHRASE_ONSET_S.
    EMPHASIS_RISE = 0.3
    LEVEL_S = 1.5
    BROW_S = 0.45
    EMPHASIS_GAP_S = 2.0
    PHRASE_ONSET_S = 0.25
    EMPHASIS_NOD_PX = 1.2
    # The glance away: up and to one side, then back to the camera.
    GLANCE_S = 0.8
    GLANCE_GAZE = (0.8, -1.0)
    # A reply (speech after REPLY_GAP_S or more without) with LONG_REPLY_S or
    # more of speech queued in its first LONG_REPLY_SEEN_S starts with a glance.
    REPLY_GAP_S = 1.0
    LONG_REPLY_S = 2.0
    LONG_REPLY_SEEN_S = 0.3

    def __init__(self, *, seed: int = 0):
        self._rng = np.random.default_rng(seed)
        self._blinks: list[float] = [float(self._rng.uniform(0.8, 2.5))]
        self._gaze_times: list[float] = [0.0]
        self._gaze_targets: list[tuple[float, float]] = [(0.0, 0.0)]
        self._phase = self._rng.uniform(0, 2 * np.pi, 6)
        self._nods: list[tuple[float, float]] = []  # (start, depth in px)
        self._voiced_since: float | None = None
        self._last_voiced = -1e9
        self._level: float | None = None  # running loudness of the voice
        self._lifts: list[float] = []  # brow lift start times
        self._glances: list[tuple[float, float]] = []  # (start, side: -1 left, 1 right)
        self._reply_start: float | None = None
        self._reply_glanced = False
        self._last_speech = -1e9

    def nod(self, t: float, depth: float | None = None) -> None:
        """A small nod starting at ``t`` (a listener's "mm-hm", or the end of a phrase)."""
        if self._nods and t - self._nods[-1][0] < self.NOD_S:
            return  # one at a time
        self._nods.append((t, self.LISTENING_NOD_PX if depth is None else depth))
        self._nods = self._nods[-4:]

    def _nod_dy(self, t: float) -> float:
        dy = 0.0
        for start, depth in self._nods:
            x = (t - start) / self.NOD_S
            if 0.0 <= x < 1.0:
                dy += depth * math.sin(math.pi * x) ** 2  # down and back up
        return dy

    def glance(self, t: float) -> None:
        """Look away (up and to one side) from ``t`` for ``GLANCE_S``, then back: thinking aloud."""
        if self._glances and t - self._glances[-1][0] < self.GLANCE_S:
            return
        side = 1.0 if (len(self._glances) + (self._phase[1] > math.pi)) % 2 else -1.0
        self._glances.append((t, side))
        self._glances = self._glances[-4:]

    def _glance_at(self, t: float) -> tuple[float, float]:
        """The glance's weight (0 gaze as usual, 1 fully away) and side at ``t``."""
        for start, side in reversed(self._glances):
            x = t - start
            if 0.0 <= x < self.GLANCE_S:
                # A quick look away (80 ms), a hold, a slower look back (150 ms).
                w = _smoothstep(0.0, 0.08, np.float32(x)) * _smoothstep(self.GLANCE_S, self.GLANCE_S - 0.15, np.float32(x))
                return float(w), side
        return 0.0, 1.0

    def _follow_reply(self, t: float, speech_left_s: float) -> None:
        """A long reply begins with a glance away (people look away as they start to think aloud)."""
        if speech_left_s <= 0.0:
            return
        if self._reply_start is None or t - self._last_speech > self.REPLY_GAP_S:
            self._reply_start, self._reply_glanced = t, False
        self._last_speech = t
        elapsed = t - self._reply_start
        if not self._reply_glanced and elapsed <= self.LONG_REPLY_SEEN_S and elapsed + speech_left_s >= self.LONG_REPLY_S:
            self.glance(t)
            self._reply_glanced = True

    def brow_at(self, t: float) -> float:
        """Brow lift (0..1) at ``t``: up in 0.1 s, eased back down."""
        for start in reversed(self._lifts):
            x = t - start
            if 0.0 <= x < self.BROW_S:
                return float(_smoothstep(0.0, 0.1, np.float32(x)) * _smoothstep(self.BROW_S, 0.4 * self.BROW_S, np.float32(x)))
        return 0.0

    def _follow_emphasis(self, t: float, loudness: float) -> None:
        """A voiced frame: a lift if it is clearly louder than the voice's running level."""
        if self._level is None or t - self._last_voiced > 3.0:
            self._level = loudness  # the first voice, or the first after a long quiet
            return
        in_phrase = self._voiced_since is not None and t - self._voiced_since >= self.PHRASE_ONSET_S
        if (
            in_phrase
            and loudness - self._level > self.EMPHASIS_RISE
            and (not self._lifts or t - self._lifts[-1] >= self.EMPHASIS_GAP_S)
        ):
            self._lifts.append(t)
            self._lifts = self._lifts[-4:]
        # Pauses do not count; a phrase's onset sets the level quickly.
        dt = min(t - self._last_voiced, 0.1)
        self._level += (1.0 - math.exp(-dt / (self.LEVEL_S if in_phrase else 0.1))) * (loudness - self._level)

    def _follow_voice(self, t: float, loudness: float) -> bool:
        """Track phrases in the voice (a nod at each one's end) and emphasis; whether ``t`` is mid-word."""
        voiced = loudness > self.VOICED
        if voiced:
            if self._voiced_since is None:
                self._voiced_since = t
            self._follow_emphasis(t, loudness)
            self._last_voiced = t
        elif self._voiced_since is not None and t - self._last_voiced >= self.PHRASE_END_S:
            if self._last_voiced - self._voiced_since >= self.PHRASE_S:
                self.nod(t, self.PHRASE_NOD_PX)
            self._voiced_since = None
        return voiced

    def _defer_blink(self, t: float) -> None:
        """A blink that would start mid-word waits for the next pause."""
        for i in range(len(self._blinks) - 1, -1, -1):
            start = self._blinks[i]
            if start > t:
                continue
            if t - start < self._CLOSE_S:
                self._blinks[i] = t + 0.04
            break

    def blink_times(self, until: float) -> list[float]:
        """Start times of the blinks up to ``until`` seconds."""
        while self._blinks[-1] < until:
            gap = float(self._rng.uniform(*self.BLINK_INTERVAL_S))
            self._blinks.append(self._blinks[-1] + gap)
            if self._rng.random() < 0.1:  # now and then a double blink
                self._blinks.append(self._blinks[-1] + 0.3)
        return [b for b in self._blinks if b <= until]

    def blink_at(self, t: float) -> float:
        """Eyelid closure (0..1) at ``t`` seconds."""
        self.blink_times(t + 1.0)
        duration = self._CLOSE_S + self._HOLD_S + self._OPEN_S
        for start in reversed(self._blinks):
            if start > t:
                continue
            x = t - start
            if x >= duration:
                return 0.0
            if x < self._CLOSE_S:
                return float(_smoothstep(0.0, self._CLOSE_S, np.float32(x)))
            if x < self._CLOSE_S + self._HOLD_S:
                return 1.0
            return float(1.0 - _smoothstep(0.0, self._OPEN_S, np.float32(x - self._CLOSE_S - self._HOLD_S)))
        return 0.0

    def gaze_at(self, t: float) -> tuple[float, float]:
        """Iris offset at ``t``: fixations of 0.8-3.5 s joined by 60 ms saccades."""
        while self._gaze_times[-1] <= t:
            self._gaze_times.append(self._gaze_times[-1] + float(self._rng.uniform(0.8, 3.5)))
            if self._rng.random() < 0.5:
                target = (0.0, 0.0)  # back to the person on the call
            else:
                target = (float(self._rng.uniform(-0.45, 0.45)), float(self._rng.uniform(-0.25, 0.2)))
            self._gaze_targets.append(target)
        i = max(0, np.searchsorted(self._gaze_times, t, side="right") - 1)
        start = self._gaze_times[i]
        prev = self._gaze_targets[i - 1] if i > 0 else (0.0, 0.0)
        cur = self._gaze_targets[i]
        w = float(_smoothstep(0.0, 0.06, np.float32(t - start)))
        return (prev[0] + (cur[0] - prev[0]) * w, prev[1] + (cur[1] - prev[1]) * w)

    def head_at(self, t: float, loudness: float = 0.0) -> tuple[float, float, float, float]:
        """``(dx, dy, roll_deg, scale)`` at ``t``: sway, breathing, a nod with the voice."""
        p = self._phase
        two_pi = 2 * np.pi
        breath = math.sin(two_pi * t / 4.2 + p[0])
        dx = 2.2 * math.sin(two_pi * 0.11 * t + p[1]) + 0.9 * math.sin(two_pi * 0.29 * t + p[2])
        dy = 1.2 * math.sin(two_pi * 0.17 * t + p[3]) - 1.3 * breath - 1.5 * loudness + self._nod_dy(t)
        dy += self.EMPHASIS_NOD_PX * self.brow_at(t)  # a small dip with the stressed syllable
        roll = 0.9 * math.sin(two_pi * 0.07 * t + p[4]) + 0.4 * math.sin(two_pi * 0.23 * t + p[5])
        scale = 1.0 + 0.004 * breath
        return (dx, dy, roll, scale)

    def pose_at(self, t: float, mouth: np.ndarray, loudness: float = 0.0, speech_left_s: float = 0.0) -> FacePose:
        """The full pose at ``t`` with the given mouth.

        Args:
            t: Seconds on the renderer's clock.
            mouth: The mouth shape (see :class:`FacePose`).
            loudness: The voice's loudness (0..1) at ``t``.
            speech_left_s: Seconds of speech queued from ``t`` on (0 while listening).
        """
        self._follow_reply(t, speech_left_s)
        if self._follow_voice(t, loudness):
            self.blink_times(t + 1.0)
            self._defer_blink(t)
        gaze = self.gaze_at(t)
        away, side = self._glance_at(t)
        if away > 0.0:
            gx, gy = self.GLANCE_GAZE
            gaze = (gaze[0] + (side * gx - gaze[0]) * away, gaze[1] + (gy - gaze[1]) * away)
        return FacePose(
            mouth=mouth, blink=self.blink_at(t), gaze=gaze, head=self.head_at(t, loudness), brow=self.brow_at(t)
        )
