"""The mouth and jaw moved by warping the portrait itself, from its face mesh.

:class:`MouthWarp` takes the mesh points of the lips (inner and outer
contours), the chin and the jaw line, plus skin points between nose and
chin, and triangulates them once (Delaunay) inside a rectangle of the lower
face whose edges stay put. Per frame, the mouth parameters move the points:
the jaw drops (the chin most, the jaw's sides less, the lower lip with it),
the corners spread or come together, the lips press. Each triangle is then
mapped back to the portrait by its own affine transform: each pixel of a
half-resolution grid takes the transform of the triangle that covers it (a
compiled loop over the triangles that moved), and the maps, scaled up, become
one ``cv2.remap`` of the lower face. So the
real lips part and the chin drops; inside the warped inner lip contour a
mouth cavity is painted (shaded, upper teeth under the upper lip, a hint of
tongue and lower teeth when wide open) and blended at its edge.

Everything that does not change per frame (triangles, weights, pixel grids)
is computed in the constructor.
"""

from __future__ import annotations

import math

import cv2
import numba
import numpy as np
from scipy.spatial import Delaunay

from processors.replica.mesh import (
    CHIN,
    FOREHEAD,
    JAW_LINE,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    LOWER_FACE,
    NOSE_BOTTOM,
    ReplicaMesh,
)

# The chin's drop at full jaw opening, as a fraction of the face's height
# (forehead to chin): 10 % at full opening, 9.5 % for an open "ah".
JAW_DROP = 0.10
# Labels are drawn with this many fractional bits (cv2 drawing ``shift``).
_SHIFT = 4


@numba.njit(cache=True, nogil=True)
def _triangle_maps(local, order, affine, x0, y0, map_x, map_y):  # pragma: no cover - compiled
    """The warp's maps on the half-resolution grid, triangle by triangle.

    Grid pixel ``(i, j)`` is frame point ``(x0 + 2j + 0.5, y0 + 2i + 0.5)``;
    ``local`` has the triangles in grid units. A pixel whose centre is
    inside triangle ``t`` gets ``affine[t + 1]`` (frame to portrait) applied
    to it, later triangles in ``order`` over earlier ones; the rest keep the
    identity. (One pass instead of a label image and six lookups.)
    """
    h, w = map_x.shape
    for i in range(h):
        for j in range(w):
            map_x[i, j] = x0 + 2 * j + 0.5
            map_y[i, j] = y0 + 2 * i + 0.5
    for t in order:
        ax, ay = local[t, 0, 0], local[t, 0, 1]
        bx, by = local[t, 1, 0], local[t, 1, 1]
        cx, cy = local[t, 2, 0], local[t, 2, 1]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0.0:
            continue
        sign = 1.0 if area > 0.0 else -1.0
        j0 = max(0, int(math.ceil(min(ax, bx, cx))))
        j1 = min(w - 1, int(math.floor(max(ax, bx, cx))))
        i0 = max(0, int(math.ceil(min(ay, by, cy))))
        i1 = min(h - 1, int(math.floor(max(ay, by, cy))))
        a0, a1, a2, a3, a4, a5 = affine[t + 1]
        for i in range(i0, i1 + 1):
            for j in range(j0, j1 + 1):
                if (
                    sign * ((bx - ax) * (i - ay) - (by - ay) * (j - ax)) >= 0.0
                    and sign * ((cx - bx) * (i - by) - (cy - by) * (j - bx)) >= 0.0
                    and sign * ((ax - cx) * (i - cy) - (ay - cy) * (j - cx)) >= 0.0
                ):
                    fx = x0 + 2 * j + 0.5
                    fy = y0 + 2 * i + 0.5
                    map_x[i, j] = a0 * fx + a1 * fy + a2
                    map_y[i, j] = a3 * fx + a4 * fy + a5


@numba.njit(cache=True, nogil=True)
def _triangle_affines(pts, tris, src_edges, src0, src_area, src_top, gx0, gy0):  # pragma: no cover - compiled
    """Each moved triangle's affine map from frame to portrait, for the points ``pts``.

    Returns the triangles' corners in the frame (T, 3, 2), the maps (one row
    ``[a, b, c, d, e, f]`` per label; label 0 is the identity, triangle
    ``t`` is label ``t + 1``), the corners on the half-resolution grid whose
    first pixel is frame point ``(gx0 + 0.5, gy0 + 0.5)``, the order to fill
    them in, and whether any was squeezed.

    A triangle squeezed nearly flat (the lips pressed shut over a smile's
    teeth) would show what was between the lips on a hair-thin line: its
    pixels take the colour just above its highest source point instead, and
    it comes first in the order, so that its neighbours win the pixels they
    share.
    """
    n = tris.shape[0]
    dst = np.empty((n, 3, 2))
    affine = np.zeros((n + 1, 6), np.float32)
    affine[0, 0] = 1.0
    affine[0, 4] = 1.0
    local = np.empty((n, 3, 2))
    squeezed = np.zeros(n, np.bool_)
    flat = np.zeros(n, np.bool_)
    for t in range(n):
        for k in range(3):
            dst[t, k, 0] = pts[tris[t, k], 0]
            dst[t, k, 1] = pts[tris[t, k], 1]
            local[t, k, 0] = (dst[t, k, 0] - gx0 - 0.5) * 0.5
            local[t, k, 1] = (dst[t, k, 1] - gy0 - 0.5) * 0.5
        d1x, d1y = dst[t, 1, 0] - dst[t, 0, 0], dst[t, 1, 1] - dst[t, 0, 1]
        d2x, d2y = dst[t, 2, 0] - dst[t, 0, 0], dst[t, 2, 1] - dst[t, 0, 1]
        det = d1x * d2y - d2x * d1y
        flat[t] = abs(det) <= 1e-6
        if abs(det) < 0.15 * src_area[t]:
            squeezed[t] = True
            affine[t + 1, 2] = src_top[t, 0]
            affine[t + 1, 5] = src_top[t, 1]
            continue
        if flat[t]:
            continue
        # The source edges times the inverse of the destination edge matrix [d1 d2].
        i00, i01, i10, i11 = d2y / det, -d2x / det, -d1y / det, d1x / det
        for r in range(2):
            a = src_edges[t, r, 0] * i00 + src_edges[t, r, 1] * i10
            b = src_edges[t, r, 0] * i01 + src_edges[t, r, 1] * i11
            affine[t + 1, 3 * r] = a
            affine[t + 1, 3 * r + 1] = b
            affine[t + 1, 3 * r + 2] = src0[t, r] - (a * dst[t, 0, 0] + b * dst[t, 0, 1])
    order = np.concatenate((np.nonzero(squeezed)[0], np.nonzero(~squeezed & ~flat)[0]))
    return dst, affine, local, order, bool(squeezed.any())


@numba.njit(cache=True, nogil=True)
def _paint_cavity(region, alpha, y0, top, bottom, centre, colours, tongue_amt, patches, patch_alphas, offsets, band, lower_band):  # pragma: no cover - compiled
    """Paint the mouth cavity into ``region`` (uint8, its first row frame row ``y0``), blended by ``alpha``.

    Per column: the inner lips' ``top`` and ``bottom`` and how central it is
    (``centre``, 1 mid-mouth to 0 at the corners). ``colours``: RGB rows of
    the cavity near the lips, deep inside, the tongue, the teeth. The
    portrait's own teeth come as layers (``patches`` with ``patch_alphas``,
    top-left at ``offsets`` (row, column) in the region); without them (no
    layers) the upper teeth are painted as a band of ``band`` pixels under
    the upper lip and the lower ones ``lower_band`` pixels over the lower lip.
    """
    h, w = alpha.shape
    for r in range(h):
        y = y0 + r
        for c in range(w):
            a = alpha[r, c]
            if a <= 0.0:
                continue
            depth = min(max((y - top[c]) / max(bottom[c] - top[c], 1e-3), 0.0), 1.0)
            edge = abs(2.0 * depth - 1.0)
            # Darker deep inside and towards the middle of the opening.
            shade = min(max(0.35 + 0.65 * edge * math.sqrt(edge), 0.0), 1.0) * (1.0 - 0.4 * centre[c])
            t = 0.0
            if tongue_amt > 0.01:
                t = min(max((depth - 0.55) / 0.25, 0.0), 1.0) * (min(max(centre[c] * 1.6, 0.0), 1.0) * tongue_amt * 0.8)
            upper = 0.0
            lower = 0.0
            if patches.shape[0] == 0:
                upper = min(max(top[c] + band[c] - y + 0.5, 0.0), 1.0) * min(max(y - top[c] + 1.0, 0.0), 1.0)
                if lower_band[c] > 0.0:
                    lower = min(max(y - (bottom[c] - lower_band[c]) + 0.5, 0.0), 1.0) * 0.7
            for k in range(3):
                col = colours[1, k] + (colours[0, k] - colours[1, k]) * shade
                col = col * (1.0 - t) + colours[2, k] * t
                for n in range(patches.shape[0]):
                    lr = r - offsets[n, 0]
                    lc = c - offsets[n, 1]
                    if 0 <= lr < patches.shape[1] and 0 <= lc < patches.shape[2]:
                        la = patch_alphas[n, lr, lc]
                        col = col * (1.0 - la) + patches[n, lr, lc, k] * la
                col = col * (1.0 - upper) + colours[3, k] * (0.7 + 0.25 * centre[c]) * upper
                col = col * (1.0 - lower) + colours[3, k] * 0.65 * lower
                region[r, c, k] = np.uint8(min(region[r, c, k] * (1.0 - a) + col * a + 0.5, 255.0))


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class MouthWarp:
    """Warps the lower face of ``base`` into a mouth shape.

    Args:
        base: The frame-sized portrait (HxWx3 uint8) the mesh belongs to.
        mesh: The mesh in ``base``'s pixels.
    """

    _CAVITY = np.array([74, 24, 28], np.float32)  # RGB near the lips
    _CAVITY_BACK = np.array([16, 4, 6], np.float32)  # deep inside
    _TEETH = np.array([232, 226, 214], np.float32)
    _TONGUE = np.array([170, 74, 80], np.float32)

    def __init__(self, base: np.ndarray, mesh: ReplicaMesh):
        self.base = base
        height, width = base.shape[:2]
        p = mesh.points.astype(np.float64)
        ou, ol = p[list(LIPS_OUTER_UPPER)], p[list(LIPS_OUTER_LOWER)]
        iu, il = p[list(LIPS_INNER_UPPER)].copy(), p[list(LIPS_INNER_LOWER)].copy()
        # A closed mouth gives the two inner contours one line; keep them apart
        # by a hair so that each lip has its own triangles.
        il[1:-1, 1] = np.maximum(il[1:-1, 1], iu[1:-1, 1] + 0.6)
        left, right = p[LIPS_OUTER_UPPER[0]], p[LIPS_OUTER_UPPER[-1]]
        self.u = u = float(np.linalg.norm(right - left)) / 2  # mouth half width
        mx = float(left[0] + right[0]) / 2
        corner_y = float(left[1] + right[1]) / 2
        chin = p[CHIN]
        face_h = float(np.linalg.norm(chin - p[FOREHEAD]))
        self.jaw_px = JAW_DROP * face_h
        jaw = p[list(JAW_LINE)]
        half_face = max(float(jaw[:, 0].max() - jaw[:, 0].min()) / 2, u)

        # The warped rectangle: nose bottom to below the chin, jaw to jaw.
        x0 = max(0, int(jaw[:, 0].min() - 0.5 * u))
        x1 = min(width, int(math.ceil(jaw[:, 0].max() + 0.5 * u)))
        y0 = max(0, int(p[NOSE_BOTTOM, 1] - 0.1 * u))
        y1 = min(height, int(math.ceil(chin[1] + max(0.7 * (chin[1] - corner_y), 2.5 * self.jaw_px))))
        self.box = (x0, y0, x1, y1)

        # Control points: lips, then the rest; each with its role.
        lips = [(i, pt, "ou") for i, pt in zip(LIPS_OUTER_UPPER, ou)]
        lips += [(i, pt, "ol") for i, pt in zip(LIPS_OUTER_LOWER[1:-1], ol[1:-1])]
        lips += [(i, pt, "iu") for i, pt in zip(LIPS_INNER_UPPER, iu)]
        lips += [(i, pt, "il") for i, pt in zip(LIPS_INNER_LOWER[1:-1], il[1:-1])]
        others = []
        for i in dict.fromkeys(JAW_LINE + LOWER_FACE):
            x, y = p[i]
            if x0 + 2 < x < x1 - 2 and y0 + 2 < y < y1 - 2:
                others.append((i, p[i], "skin"))
        frame_pts = []
        for t in np.linspace(0.0, 1.0, 7):
            frame_pts += [(x0 + t * (x1 - x0), y0), (x0 + t * (x1 - x0), y1 - 1)]
        for t in np.linspace(0.0, 1.0, 6)[1:-1]:
            frame_pts += [(x0, y0 + t * (y1 - 1 - y0)), (x1 - 1, y0 + t * (y1 - 1 - y0))]
        nodes = lips + others + [(-1, np.array(q), "edge") for q in frame_pts]
        rest = np.array([n[1] for n in nodes], np.float64)
        roles = [n[2] for n in nodes]
        ids = [n[0] for n in nodes]
        # The chin point, or the lowest face point when the portrait cuts the chin off.
        self._chin_node = ids.index(CHIN) if CHIN in ids else int(np.argmax(rest[: len(lips) + len(others), 1]))
        self.rest = rest.astype(np.float32)
        self.n_lip = len(lips)

        # Per-point motion bases (N, 2), combined linearly per frame.
        n = len(nodes)
        dx = rest[:, 0] - mx
        side = np.clip(1.0 - (dx / (1.15 * u)) ** 2, 0.0, 1.0)  # 1 mid-lip, 0 at the corners
        is_ = {r: np.array([role == r for role in roles]) for r in ("ou", "ol", "iu", "il", "skin", "edge")}
        corner = np.zeros(n, bool)
        corner[[0, len(LIPS_OUTER_UPPER) - 1]] = True
        k = len(LIPS_OUTER_UPPER) + len(LIPS_OUTER_LOWER) - 2
        corner[[k, k + len(LIPS_INNER_UPPER) - 1]] = True

        # Jaw opening: the lower lip and everything on the jaw go down; the
        # jaw's sides less (it turns about the ears), the corners a little.
        across = np.sqrt(np.clip(1.0 - (dx / (1.1 * half_face)) ** 2, 0.0, 1.0))
        down = _smoothstep(corner_y - 0.1 * u, corner_y + 0.9 * (chin[1] - corner_y), rest[:, 1])
        w_jaw = np.zeros(n)
        w_jaw[is_["il"] | is_["ol"]] = (0.35 + 0.65 * side)[is_["il"] | is_["ol"]]
        skin = is_["skin"]
        below = rest[:, 1] > corner_y
        w_jaw[skin & below] = (across * (0.25 + 0.75 * down))[skin & below] * np.clip(
            (rest[:, 1] - corner_y) / (0.35 * u), 0.0, 1.0
        )[skin & below]
        # Skin under the lower lip rides with the jaw at least as far as the
        # lip above it, so nothing between lip and chin folds.
        under_lip = skin & (rest[:, 1] > np.interp(rest[:, 0], ol[:, 0], ol[:, 1], left=np.inf, right=np.inf))
        w_jaw[under_lip] = np.maximum(w_jaw, 0.35 + 0.65 * side)[under_lip]
        w_jaw[corner] = 0.3
        open_ = np.zeros((n, 2))
        open_[:, 1] = self.jaw_px * w_jaw
        # The upper lip lifts a little as the mouth opens; the corners draw in.
        open_[is_["iu"], 1] -= 0.10 * u * side[is_["iu"]]
        open_[is_["ou"], 1] -= 0.04 * u * side[is_["ou"]]
        near = np.exp(-(((rest[:, 1] - corner_y) / (0.9 * u)) ** 2)) * np.clip(1.0 - (np.abs(dx) / (2.4 * u)) ** 2, 0, 1)
        near[is_["edge"]] = 0.0
        open_[:, 0] -= 0.10 * dx * near
        # Spread (smile, "ee"): corners out and a little up.
        wide = np.zeros((n, 2))
        wide[:, 0] = 0.16 * dx * near
        wide[:, 1] = -0.05 * u * near * (np.abs(dx) / u) ** 2
        # Rounding ("oo"): corners in, lips pushed out (thicker), opening rounder.
        round_ = np.zeros((n, 2))
        round_[:, 0] = -0.30 * dx * near
        round_[is_["ou"], 1] -= 0.06 * u * side[is_["ou"]]
        round_[is_["ol"], 1] += 0.06 * u * side[is_["ol"]]
        # Press (p, b, m): the inner contours meet halfway, the lips tighten.
        press = np.zeros((n, 2))
        n_ou, n_ol = len(LIPS_OUTER_UPPER), len(LIPS_OUTER_LOWER) - 2
        iu_idx = np.arange(n_ou + n_ol, n_ou + n_ol + len(LIPS_INNER_UPPER))
        il_idx = np.arange(iu_idx[-1] + 1, iu_idx[-1] + 1 + len(LIPS_INNER_LOWER) - 2)
        # Both inner contours go to one line, their middle at each x.
        up_pts, low_pts = rest[iu_idx], np.concatenate([rest[iu_idx[:1]], rest[il_idx], rest[iu_idx[-1:]]])
        press[iu_idx, 1] = (np.interp(up_pts[:, 0], low_pts[:, 0], low_pts[:, 1]) - up_pts[:, 1]) / 2
        press[il_idx, 1] = (np.interp(rest[il_idx, 0], up_pts[:, 0], up_pts[:, 1]) - rest[il_idx, 1]) / 2
        press[is_["ou"], 1] += 0.05 * u * side[is_["ou"]]
        press[is_["ol"], 1] -= 0.05 * u * side[is_["ol"]]
        self._bases = {
            name: b.astype(np.float32) for name, b in
            (("open", open_), ("wide", wide), ("round", round_), ("press", press))
        }
        self._iu_idx = iu_idx
        self._il_idx = il_idx
        # The lower inner contour with the corners, for the cavity's bottom edge.
        self._il_full_idx = np.concatenate([iu_idx[:1], il_idx, iu_idx[-1:]])
        # Corner cutting (Chaikin) is linear in the points: two rounds as one matrix.
        contour = np.concatenate([iu_idx, il_idx[::-1]])
        cut = np.eye(len(contour))
        for _ in range(2):
            nxt = np.roll(cut, -1, axis=0)
            cut = np.stack([0.75 * cut + 0.25 * nxt, 0.25 * cut + 0.75 * nxt], axis=1).reshape(-1, len(contour))
        self._contour_idx = contour
        self._contour_cut = cut.astype(np.float32)

        tri = Delaunay(rest).simplices.astype(np.int32)
        self.triangles = tri
        moving = np.zeros(n, bool)
        for b in self._bases.values():
            moving |= np.abs(b).max(axis=1) > 1e-6
        self._moving_tris = np.nonzero(moving[tri].any(axis=1))[0]
        self._moving_triangles = np.ascontiguousarray(tri[self._moving_tris], np.int64)
        # Among those, the ones touching the lips: the warp folds at the lips'
        # seam, so they get full-resolution maps.
        self._lip_tris = np.nonzero((tri[self._moving_tris] < self.n_lip).any(axis=1))[0]
        # What the per-frame affine transforms need of the rest shape (it does not move).
        src = self.rest[tri[self._moving_tris]].astype(np.float64)  # (T, 3, 2)
        self._src0 = src[:, 0]
        self._src_edges = np.stack([src[:, 1] - src[:, 0], src[:, 2] - src[:, 0]], axis=2)  # columns
        e = self._src_edges
        self._src_area = np.abs(e[:, 0, 0] * e[:, 1, 1] - e[:, 0, 1] * e[:, 1, 0])
        # A squeezed triangle's pixels take the colour just above its highest source point.
        self._src_top = src[np.arange(len(src)), src[:, :, 1].argmin(axis=1)] - (0.0, 1.0)

        # The maps are computed at half resolution (centres of 2x2 blocks, one
        # more on each side) and scaled up: the warp is piecewise linear and
        # continuous, so bilinear upscaling reproduces it.
        h2, w2 = (y1 - y0 + 1) // 2 + 2, (x1 - x0 + 1) // 2 + 2
        self._half_x = np.zeros((h2, w2), np.float32)
        self._half_y = np.zeros((h2, w2), np.float32)

        self._teeth = self._portrait_teeth(iu, il)
        if self._teeth is not None:
            # Where the inner lips are at rest (the teeth move with them).
            self._teeth["upper_rest_y"] = float(self.rest[iu_idx, 1].mean())
            self._teeth["lower_rest_y"] = float(self.rest[il_idx, 1].mean())
            # The layers as the cavity painter takes them: upper teeth, then lower.
            self._teeth["patches"] = np.ascontiguousarray(
                np.stack([self._teeth["patch"], self._teeth["lower_patch"]]), np.float32
            )
            self._teeth["alphas"] = np.ascontiguousarray(np.stack([self._teeth["upper"], self._teeth["lower"]]), np.float32)
        self._no_patches = (np.zeros((0, 1, 1, 3), np.float32), np.zeros((0, 1, 1), np.float32), np.zeros((0, 2), np.int64))
        self._colours = np.array([self._CAVITY, self._CAVITY_BACK, self._TONGUE, self._TEETH], np.float32)
        self._compile()

    def _compile(self) -> None:
        """Compile the loops (or load them from numba's cache) now, not on the first frame that opens the mouth."""
        x0, y0 = self.box[:2]
        no_triangles = np.zeros((0, 3, 2)), np.zeros(0, np.int64), np.zeros((1, 6), np.float32)
        _triangle_maps(*no_triangles, float(x0), float(y0), self._half_x, self._half_y)
        region = np.zeros((3, 3, 3), np.uint8)[1:, 1:]  # a view, as a frame's region is
        column = np.zeros(2, np.float32)
        _paint_cavity(region, np.zeros((2, 2), np.float32), 0.0, column, column, column, self._colours, 0.0,
                      *self._no_patches, column, column)

    # --- Geometry per frame ---------------------------------------------------------

    def points(self, mouth: np.ndarray) -> np.ndarray:
        """Control points (N, 2) for ``[open, width, teeth, tongue, press]``."""
        open_, width = float(mouth[0]), float(mouth[1])
        press = float(mouth[4]) if len(mouth) > 4 else 0.0
        b = self._bases
        d = open_ * b["open"]
        if width > 0:
            d = d + width * b["wide"]
        elif width < 0:
            d = d - width * b["round"]
        if press > 0:
            d = d + min(press, 1.0) * b["press"]
        return self.rest + d

    def chin(self, mouth: np.ndarray) -> tuple[float, float]:
        """Where the chin point is for ``mouth`` (for tests and measurements)."""
        i = self._chin_node
        pt = self.points(mouth)[i]
        return float(pt[0]), float(pt[1])

    def inner_contour(self, pts: np.ndarray) -> np.ndarray:
        """The inner lip contour (closed polygon) from control points, rounded off.

        Two rounds of corner cutting (Chaikin) turn the mesh's 20 points into
        a smooth curve, so the cavity's edge shows no straight segments.
        """
        return self._contour_cut @ pts[self._contour_idx]

    # --- The portrait's own teeth ------------------------------------------------------

    def _portrait_teeth(self, iu: np.ndarray, il: np.ndarray) -> dict | None:
        """The teeth a smiling portrait shows between its lips, as two layers.

        The upper teeth stay with the skull, the lower ones ride on the jaw.
        None when the portrait's lips are closed or what shows between them is
        not bright (then teeth are painted).
        """
        gap = float(np.median(il[1:-1, 1] - iu[1:-1, 1]))
        if gap < 0.12 * self.u:
            return None
        poly = np.concatenate([iu, il[::-1]])
        bx0, by0 = (int(v) - 1 for v in poly.min(axis=0))
        bx1, by1 = (int(math.ceil(v)) + 2 for v in poly.max(axis=0))
        patch = self.base[by0:by1, bx0:bx1].astype(np.float32)
        inside = np.zeros(patch.shape[:2], np.uint8)
        cv2.fillPoly(inside, [np.round((poly - (bx0, by0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        inside = cv2.erode(inside, np.ones((3, 3), np.uint8))
        luma = patch @ np.array([0.299, 0.587, 0.114], np.float32)
        if not (inside > 128).any() or float(np.median(luma[inside > 128])) < 120:
            return None
        ys = np.arange(by0, by1, dtype=np.float32)[:, None]
        xs = np.arange(bx0, bx1, dtype=np.float32)
        # Upper teeth above the gap's middle line, lower teeth below it.
        mid = (np.interp(xs, iu[:, 0], iu[:, 1]) + np.interp(xs, il[:, 0], il[:, 1]))[None, :] / 2
        upper = np.clip(mid - ys + 0.5, 0, 1) * (inside / 255.0)
        lower = np.clip(ys - mid + 0.5, 0, 1) * (inside / 255.0)
        # The lower teeth sit in the shadow of the upper lip and jaw.
        return {"patch": patch, "origin": (bx0, by0), "upper": upper.astype(np.float32),
                "lower_patch": patch * 0.8, "lower": (0.9 * lower).astype(np.float32)}

    # --- Drawing ----------------------------------------------------------------------

    def render_into(self, frame: np.ndarray, mouth: np.ndarray) -> bool:
        """Warp the lower face of ``frame`` (a copy of ``base``) into ``mouth``, in place (inside ``box``).

        Returns False when the mouth is at rest (nothing drawn).
        """
        open_, width = float(mouth[0]), float(mouth[1])
        press = float(mouth[4]) if len(mouth) > 4 else 0.0
        if open_ < 0.003 and abs(width) < 0.005 and press < 0.005:
            return False
        pts = self.points(mouth)
        x0, y0, x1, y1 = self.box
        # The half-resolution grid starts 1.5 pixels before the box, so that
        # the maps scaled up reach its edges without being clamped there.
        gx0, gy0 = x0 - 2, y0 - 2
        dst, affine, local, order, squeezed = _triangle_affines(
            pts, self._moving_triangles, self._src_edges, self._src0, self._src_area, self._src_top, float(gx0), float(gy0)
        )
        map_x, map_y = self._half_x, self._half_y
        _triangle_maps(local, order, affine, float(gx0), float(gy0), map_x, map_y)
        size = (2 * map_x.shape[1], 2 * map_x.shape[0])
        map_x = cv2.resize(map_x, size, interpolation=cv2.INTER_LINEAR)[2 : 2 + y1 - y0, 2 : 2 + x1 - x0]
        map_y = cv2.resize(map_y, size, interpolation=cv2.INTER_LINEAR)[2 : 2 + y1 - y0, 2 : 2 + x1 - x0]
        if squeezed:
            self._lip_maps(map_x, map_y, pts, dst, affine, order)
        frame[y0:y1, x0:x1] = cv2.remap(self.base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        self._cavity(frame, pts, mouth)
        return True

    def _lip_maps(self, map_x, map_y, pts, dst, affine, order) -> None:
        """Recompute the maps around the lips at full resolution, in place.

        Where pressed lips meet, the warp jumps across what was between them;
        a map scaled up from half resolution would blur that jump into a line
        of teeth. (Without squeezed triangles the warp is continuous and the
        half-resolution maps are exact enough.)
        """
        x0, y0, x1, y1 = self.box
        lips = pts[: self.n_lip]
        lx0 = max(x0, int(lips[:, 0].min()) - 3)
        ly0 = max(y0, int(lips[:, 1].min()) - 3)
        lx1 = min(x1, int(math.ceil(lips[:, 0].max())) + 4)
        ly1 = min(y1, int(math.ceil(lips[:, 1].max())) + 4)
        if lx1 <= lx0 or ly1 <= ly0:
            return
        label = np.zeros((ly1 - ly0, lx1 - lx0), np.int32)
        local = np.round((dst - np.array([lx0, ly0])) * (1 << _SHIFT)).astype(np.int32)
        lip = np.zeros(len(dst), bool)
        lip[self._lip_tris] = True
        for t in order[lip[order]].tolist():
            cv2.fillConvexPoly(label, local[t], t + 1, lineType=cv2.LINE_8, shift=_SHIFT)
        inside = label > 0
        gy, gx = np.nonzero(inside)
        lab = label[inside]
        fx = (gx + lx0).astype(np.float32)
        fy = (gy + ly0).astype(np.float32)
        sub_x = map_x[ly0 - y0 : ly1 - y0, lx0 - x0 : lx1 - x0]
        sub_y = map_y[ly0 - y0 : ly1 - y0, lx0 - x0 : lx1 - x0]
        sub_x[gy, gx] = affine[lab, 0] * fx + affine[lab, 1] * fy + affine[lab, 2]
        sub_y[gy, gx] = affine[lab, 3] * fx + affine[lab, 4] * fy + affine[lab, 5]

    def _cavity(self, frame: np.ndarray, pts: np.ndarray, mouth: np.ndarray) -> None:
        open_, _width, teeth, tongue = (float(v) for v in mouth[:4])
        # The cavity fades in as the jaw opens (a portrait's own open smile stays as it is at rest).
        x = min(max(open_ / 0.12, 0.0), 1.0)
        strength = x * x * (3.0 - 2.0 * x)
        if strength < 0.01:
            return
        poly = self.inner_contour(pts)
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        h, w = frame.shape[:2]
        bx0, by0 = max(0, int(math.floor(lo[0])) - 2), max(0, int(math.floor(lo[1])) - 2)
        bx1, by1 = min(w, int(math.ceil(hi[0])) + 3), min(h, int(math.ceil(hi[1])) + 3)
        if bx1 - bx0 < 2 or by1 - by0 < 2:
            return
        org = np.array([bx0, by0], np.float32)
        local = np.round((poly - org) * (1 << _SHIFT)).astype(np.int32)
        mask = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
        cv2.fillPoly(mask, [local], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
        alpha = cv2.GaussianBlur(mask, (3, 3), 0.8).astype(np.float32)
        alpha *= strength / 255.0

        # Per column: the inner lips' edges and how central it is.
        xs = np.arange(bx0, bx1, dtype=np.float32)
        upper = pts[self._iu_idx]
        lower_full = pts[self._il_full_idx]
        top = np.interp(xs, upper[:, 0], upper[:, 1]).astype(np.float32)
        bottom = np.interp(xs, lower_full[:, 0], lower_full[:, 1]).astype(np.float32)
        ux = upper[:, 0].tolist()
        mid_x = sum(ux) / len(ux)
        half = max((max(ux) - min(ux)) / 2, 1.0)
        centre = np.clip(1.0 - ((xs - mid_x) / half) ** 2, 0.0, 1.0)
        tongue_amt = max(tongue, 0.8 * max(0.0, open_ - 0.3))
        if self._teeth is not None:
            # The portrait's own teeth: the upper ones where they were, the
            # lower ones carried down with the lower lip.
            layer = self._teeth
            lift = float(upper[:, 1].sum()) / len(upper) - layer["upper_rest_y"]
            drop = float(pts[self._il_idx, 1].sum()) / len(self._il_idx) - layer["lower_rest_y"]
            ox, oy = layer["origin"]
            patches, patch_alphas = layer["patches"], layer["alphas"]
            offsets = np.array([[oy + round(lift) - by0, ox - bx0], [oy + round(drop) - by0, ox - bx0]], np.int64)
            band = lower_band = np.zeros(len(xs), np.float32)
        else:
            # Painted upper teeth: a band under the upper lip, darker towards the corners;
            # a hint of the lower teeth when the mouth is well open.
            patches, patch_alphas, offsets = self._no_patches
            band = np.minimum((0.16 * self.u * (0.5 + 0.5 * teeth)) * np.sqrt(centre), 0.55 * np.maximum(bottom - top, 1e-3))
            lower_band = np.zeros_like(centre)
            if open_ > 0.35:
                lower_band = 0.06 * self.u * min(1.0, (open_ - 0.35) / 0.3) * np.sqrt(centre)
        _paint_cavity(
            frame[by0:by1, bx0:bx1], alpha, float(by0), top, bottom, centre.astype(np.float32), self._colours,
            float(tongue_amt), patches, patch_alphas, offsets, band.astype(np.float32), lower_band.astype(np.float32),
        )
