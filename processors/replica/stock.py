"""The stock replicas, made by code so their images are free to redistribute.

``eileen`` is NASA's public-domain portrait of astronaut Eileen Collins as
scikit-image ships it (``skimage.data.astronaut()``), run through
:func:`~processors.replica.assets.create_replica`. ``ada`` and ``leo`` are
faces painted here from ellipses and polygons, so their landmarks are known
exactly. Rebuild them with ``python -m processors.replica.stock [DIR]``; their
face meshes alone with ``python -m processors.replica.mesh [DIR]``.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from processors.replica.assets import (
    DEFAULT_REPLICAS_DIR,
    FaceLandmarks,
    create_replica,
    write_replica,
)
from processors.replica.mesh import find_mesh, open_mesh_finder

_SIZE = 512
_EYES_Y = 221.0
_EYE_X = (201.0, 311.0)
_EYE_HALF = (20.0, 9.0)
_MOUTH = (256.0, 322.0)
_MOUTH_HALF_WIDTH = 40.0
_CHIN = (256.0, 402.0)
_FACE = (256.0, 262.0, 118.0, 140.0)  # centre x, centre y, half width, half height


@dataclass(frozen=True)
class FaceStyle:
    """Colours and hair of a painted face (RGB 0..255)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    shirt: tuple[int, int, int]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    long_hair: bool
    seed: int


ADA = FaceStyle(
    skin=(232, 190, 160),
    hair=(92, 58, 38),
    iris=(70, 120, 90),
    lips=(196, 96, 100),
    shirt=(60, 90, 150),
    background=((205, 215, 228), (150, 165, 185)),
    long_hair=True,
    seed=7,
)
LEO = FaceStyle(
    skin=(160, 110, 80),
    hair=(30, 26, 24),
    iris=(80, 52, 30),
    lips=(150, 80, 74),
    shirt=(180, 70, 50),
    background=((225, 215, 195), (170, 150, 130)),
    long_hair=False,
    seed=11,
)


def _blend(img: np.ndarray, mask: np.ndarray, colour, blur: float = 1.2) -> None:
    """Paint ``colour`` where ``mask`` (0..1 float) is, with soft edges, in place."""
    if blur > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur)
    img[:] = img * (1 - mask[..., None]) + np.asarray(colour, np.float32) * mask[..., None]


def _shape_mask(draw) -> np.ndarray:
    m = np.zeros((_SIZE, _SIZE), np.uint8)
    draw(m)
    return m.astype(np.float32) / 255.0


def _face_outline() -> np.ndarray:
    cx, cy, a, b = _FACE
    t = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    x = np.cos(t)
    y = np.sin(t)
    # Narrower towards the chin.
    narrowing = 1 - 0.28 * np.clip(y, 0, 1) ** 2
    pts = np.stack([cx + a * x * narrowing, cy + b * y], axis=1)
    return pts.astype(np.int32)


def paint_face(style: FaceStyle) -> tuple[np.ndarray, FaceLandmarks]:
    """Paint a portrait in ``style``; returns RGB uint8 and its landmarks."""
    rng = np.random.default_rng(style.seed)
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float32)
    top, bottom = (np.asarray(c, np.float32) for c in style.background)
    img = top * (1 - yy[..., None] / _SIZE) + bottom * (yy[..., None] / _SIZE)
    skin = np.asarray(style.skin, np.float32)
    shade = skin * 0.78

    hair_noise = cv2.GaussianBlur(rng.normal(0, 1, (_SIZE, _SIZE)).astype(np.float32), (0, 0), sigmaX=1.0, sigmaY=6.0)
    hair_img = np.asarray(style.hair, np.float32) * (1 + 0.18 * hair_noise[..., None])

    def paint_hair(mask: np.ndarray) -> None:
        m = cv2.GaussianBlur(mask, (0, 0), 1.5)[..., None]
        img[:] = img * (1 - m) + hair_img * m

    if style.long_hair:
        paint_hair(_shape_mask(lambda m: cv2.ellipse(m, (256, 300), (165, 205), 0, 0, 360, 255, -1)))

    # Neck and shoulders.
    neck = np.array([[200, 350], [312, 350], [322, 470], [190, 470]], np.int32)
    _blend(img, _shape_mask(lambda m: cv2.fillPoly(m, [neck], 255)), shade)
    _blend(img, _shape_mask(lambda m: cv2.ellipse(m, (256, 610), (250, 170), 0, 0, 360, 255, -1)), style.shirt)
    _blend(img, _shape_mask(lambda m: cv2.ellipse(m, (256, 452), (62, 26), 0, 0, 180, 255, -1)), shade * 0.95)

    # Ears, then the face with a little volume shading.
    for ex in (139, 373):
        _blend(img, _shape_mask(lambda m, ex=ex: cv2.ellipse(m, (ex, 268), (17, 32), 0, 0, 360, 255, -1)), shade)
    face_mask = _shape_mask(lambda m: cv2.fillPoly(m, [_face_outline()], 255))
    cx, cy, a, b = _FACE
    r = np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy + 20) / b) ** 2)
    light = (1.0 - 0.22 * np.clip(r, 0, 1.2) ** 3)[..., None]
    skin_noise = rng.normal(0, 2.0, (_SIZE, _SIZE, 1)).astype(np.float32)
    face_img = skin * light + skin_noise
    m = cv2.GaussianBlur(face_mask, (0, 0), 1.2)[..., None]
    img[:] = img * (1 - m) + face_img * m

    # Cheeks and nose.
    for bx in (190, 322):
        blob = np.exp(-(((xx - bx) / 26) ** 2 + ((yy - 298) / 18) ** 2))
        _blend(img, blob * 0.18, (220, 110, 110), blur=0)
    nose_shadow = np.exp(-(((xx - 242) / 5) ** 2 + ((yy - 262) / 26) ** 2)) * 0.22
    _blend(img, nose_shadow, shade * 0.8, blur=0)
    nose_base = np.exp(-(((xx - 256) / 22) ** 2 + ((yy - 292) / 6) ** 2)) * 0.25
    _blend(img, nose_base, shade * 0.8, blur=0)
    for nx in (245, 267):
        _blend(img, _shape_mask(lambda m, nx=nx: cv2.ellipse(m, (nx, 292), (6, 3), 0, 0, 360, 255, -1)), shade * 0.45)
    tip = np.exp(-(((xx - 256) / 9) ** 2 + ((yy - 282) / 7) ** 2)) * 0.25
    _blend(img, tip, np.minimum(skin * 1.15, 255), blur=0)

    # Eyes: white, iris, pupil, glint, lid lines; brows above.
    ew, eh = _EYE_HALF
    for ex in _EYE_X:
        c = (int(ex), int(_EYES_Y))
        sclera = _shape_mask(lambda m, c=c: cv2.ellipse(m, c, (int(ew), int(eh)), 0, 0, 360, 255, -1))
        _blend(img, sclera, (240, 236, 230), blur=0.8)
        iris = np.clip(1.0 - np.sqrt((xx - ex) ** 2 + (yy - _EYES_Y) ** 2) / 8.5, 0, 1)
        iris = np.clip(iris * 6, 0, 1) * sclera
        ring = np.asarray(style.iris, np.float32)
        _blend(img, iris, ring, blur=0.5)
        pupil = _shape_mask(lambda m, c=c: cv2.circle(m, c, 4, 255, -1)) * sclera
        _blend(img, pupil, (15, 12, 12), blur=0.5)
        glint = _shape_mask(lambda m, c=c: cv2.circle(m, (c[0] + 3, c[1] - 3), 2, 255, -1))
        _blend(img, glint * 0.9, (255, 255, 255), blur=0.5)
        lid = _shape_mask(lambda m, c=c: cv2.ellipse(m, c, (int(ew) + 1, int(eh) + 1), 0, 180, 360, 255, 3))
        _blend(img, lid, (35, 25, 22), blur=0.6)
        lower = _shape_mask(lambda m, c=c: cv2.ellipse(m, c, (int(ew), int(eh)), 0, 10, 170, 255, 1))
        _blend(img, lower * 0.35, shade * 0.6, blur=0.6)
        crease = _shape_mask(lambda m, c=c: cv2.ellipse(m, (c[0], c[1] - 4), (int(ew) + 2, int(eh) + 6), 0, 195, 345, 255, 1))
        _blend(img, crease * 0.4, shade * 0.6, blur=0.8)
        brow = _shape_mask(
            lambda m, c=c: cv2.ellipse(m, (c[0], c[1] + 2), (28, 30), 0, 215, 325, 255, 6)
        )
        _blend(img, brow, np.asarray(style.hair, np.float32) * 0.9, blur=1.2)

    # Lips: upper with a cupid's bow, fuller lower lip, dark line between.
    mx, my = _MOUTH
    w = _MOUTH_HALF_WIDTH
    upper = np.array(
        [[mx - w, my], [mx - 22, my - 8], [mx - 7, my - 11], [mx, my - 8], [mx + 7, my - 11], [mx + 22, my - 8], [mx + w, my]],
        np.int32,
    )
    lower = np.array([[mx + w, my], [mx + 24, my + 11], [mx, my + 14], [mx - 24, my + 11], [mx - w, my]], np.int32)
    lips = np.asarray(style.lips, np.float32)
    _blend(img, _shape_mask(lambda m: cv2.fillPoly(m, [upper], 255, cv2.LINE_AA)), lips * 0.9, blur=0.8)
    _blend(img, _shape_mask(lambda m: cv2.fillPoly(m, [lower], 255, cv2.LINE_AA)), lips, blur=0.8)
    gloss = np.exp(-(((xx - mx) / 12) ** 2 + ((yy - my - 7) / 3) ** 2)) * 0.25
    _blend(img, gloss, (255, 235, 235), blur=0)
    line = _shape_mask(
        lambda m: cv2.polylines(m, [np.array([[mx - w, my], [mx - 15, my + 1], [mx + 15, my + 1], [mx + w, my]], np.int32)], False, 255, 2, cv2.LINE_AA)
    )
    _blend(img, line * 0.8, lips * 0.35, blur=0.5)
    chin_shadow = np.exp(-(((xx - mx) / 20) ** 2 + ((yy - my - 30) / 6) ** 2)) * 0.12
    _blend(img, chin_shadow, shade * 0.8, blur=0)

    # Front hair: a cap over the forehead, longer at the sides.
    cap = ((xx - 256) / 138) ** 2 + ((yy - 205) / 118) ** 2 < 1.0
    hairline = 150 + 70 * np.clip(np.abs(xx - 256) / 118, 0, 1) ** 3
    if style.long_hair:
        hairline = 160 + 150 * np.clip((np.abs(xx - 256) - 90) / 40, 0, 1)
    hair_front = (cap & (yy < hairline)).astype(np.float32)
    paint_hair(hair_front)

    portrait = np.clip(img, 0, 255).astype(np.uint8)
    landmarks = FaceLandmarks(
        eye_left=(_EYE_X[0], _EYES_Y),
        eye_right=(_EYE_X[1], _EYES_Y),
        eye_half_size=_EYE_HALF,
        mouth=_MOUTH,
        mouth_half_width=_MOUTH_HALF_WIDTH,
        chin=_CHIN,
        face_box=(_FACE[0] - _FACE[2], _FACE[1] - _FACE[3], 2 * _FACE[2], 2 * _FACE[3]),
        detector="drawn",
    )
    return portrait, landmarks


def build_stock_replicas(replicas_dir: Path = DEFAULT_REPLICAS_DIR, *, mesh_finder=None) -> list[Path]:
    """Write the three stock replicas into ``replicas_dir`` (which must lack them).

    With ``mesh_finder`` (:func:`processors.replica.mesh.open_mesh_finder`)
    each gets its face mesh (``mesh.json``).
    """
    from skimage import data

    written = []
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
        written.append(
            create_replica(
                photo,
                "Eileen",
                replicas_dir,
                replica_id="eileen",
                image_source=(
                    "skimage.data.astronaut(): NASA portrait of astronaut Eileen Collins, "
                    "as shipped by scikit-image"
                ),
                image_licence="public domain (NASA image, no copyright in the United States)",
                mesh_finder=mesh_finder,
            )
        )
    for replica_id, name, style in (("ada", "Ada", ADA), ("leo", "Leo", LEO)):
        portrait, landmarks = paint_face(style)
        written.append(
            write_replica(
                replicas_dir,
                replica_id=replica_id,
                name=name,
                portrait_rgb=portrait,
                landmarks=landmarks,
                image_source=f"painted by processors/replica/stock.py (style {name.upper()})",
                image_licence="BSD-2-Clause, as this project (generated by its code)",
                mesh=find_mesh(portrait, mesh_finder) if mesh_finder is not None else None,
            )
        )
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_REPLICAS_DIR
    finder = open_mesh_finder(cache_dir=Path("~/.cache/open-cvi").expanduser())
    for path in build_stock_replicas(target, mesh_finder=finder):
        print(path)
