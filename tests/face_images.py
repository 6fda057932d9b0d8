"""Real face images and videos for the face and perception tests.

The face is scikit-image's astronaut (Eileen Collins, NASA, public domain),
a real photograph; the scenes are made from it by ordinary image operations:
mirrored, turned in the image plane, turned away (a perspective warp),
darkened, cropped, two people side by side. ``skimage.data.coffee()`` (also a
real photograph, CC0) is a frame with nobody in it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

FACE_CENTRE = (224.0, 125.0)  # the astronaut's face, in her 512x512 photo


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def no_one() -> np.ndarray:
    from skimage import data

    return cv2.resize(np.ascontiguousarray(data.coffee()), (512, 512), interpolation=cv2.INTER_AREA)


def mirrored(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def rolled(image: np.ndarray, degrees: float, centre: tuple[float, float] = FACE_CENTRE) -> np.ndarray:
    """The image turned in its plane about the face (the head tilted)."""
    m = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REFLECT)


def turned_away(image: np.ndarray, amount: float) -> np.ndarray:
    """The face seen from the side: one side of the face squeezed (a perspective warp).

    ``amount`` > 0 squeezes the image-right side (the head turns to the image
    right), < 0 the left; 0.3 is a clear turn.
    """
    h, w = image.shape[:2]
    cx, cy = FACE_CENTRE
    half = 110.0
    src = np.float32([[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half], [cx - half, cy + half]])
    a = abs(amount)
    near, far = half * (1 + a * 0.2), half * (1 - a)
    squeeze = half * a * 0.5
    if amount > 0:
        dst = np.float32([[cx - near, cy - half - squeeze * 0.2], [cx + far, cy - half + squeeze],
                          [cx + far, cy + half - squeeze], [cx - near, cy + half + squeeze * 0.2]])
    else:
        dst = np.float32([[cx - far, cy - half + squeeze], [cx + near, cy - half - squeeze * 0.2],
                          [cx + near, cy + half + squeeze * 0.2], [cx - far, cy + half - squeeze]])
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def darkened(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def cropped_face(image: np.ndarray, size: int = 260) -> np.ndarray:
    """A tight crop around the face (a webcam close-up)."""
    cx, cy = int(FACE_CENTRE[0]), int(FACE_CENTRE[1])
    half = size // 2
    y0, x0 = max(0, cy - half), max(0, cx - half)
    return np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size])


def two_people(image: np.ndarray) -> np.ndarray:
    """Two people side by side: the astronaut's upper body and its mirror image."""
    part = image[0:320, 64:384]
    return np.ascontiguousarray(np.hstack([part, part[:, ::-1]]))


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """RGB frames (same size) -> a Y4M video (4:2:0) that Chromium's fake camera plays."""
    h, w = frames[0].shape[:2]
    cmd = [
        "ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
        "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", str(path),
    ]
    subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return path


def _warp_face(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Move the face's landmarks from ``src`` to ``dst`` (x, y), warping the image piecewise."""
    from skimage.transform import PiecewiseAffineTransform, warp

    h, w = image.shape[:2]
    x0, y0 = np.floor(np.minimum(src.min(0), dst.min(0)) - 40).astype(int)
    x1, y1 = np.ceil(np.maximum(src.max(0), dst.max(0)) + 40).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    region = image[y0:y1, x0:x1]
    rh, rw = region.shape[:2]
    # The region's border stays where it is.
    edge = [(x, y) for x in np.linspace(0, rw - 1, 8) for y in (0, rh - 1)]
    edge += [(x, y) for y in np.linspace(0, rh - 1, 8)[1:-1] for x in (0, rw - 1)]
    edge = np.array(edge, dtype=np.float64)
    offset = np.array([x0, y0], dtype=np.float64)
    # warp() maps output pixels to input pixels: estimate from dst to src.
    transform = PiecewiseAffineTransform.from_estimate(np.vstack([dst - offset, edge]), np.vstack([src - offset, edge]))
    out = image.copy()
    moved = warp(region, transform, preserve_range=True, mode="edge")
    out[y0:y1, x0:x1] = np.clip(moved, 0, 255).astype(np.uint8)
    return out


def face_mesh_points(finder, image: np.ndarray) -> np.ndarray:
    """The 468 landmarks (x, y, z) of the one face in ``image``."""
    faces = finder.find(image)
    assert faces and faces[0].mesh is not None, "no face mesh in the source image"
    return faces[0].mesh.points


def head_turned(finder, image: np.ndarray, *, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """The face turned in 3-D by ``yaw`` (degrees, + to the image right) and ``pitch`` (+ down).

    The face's own mesh (x, y, z) is rotated about its centre and the photo is
    warped onto the rotated points' projection.
    """
    points = face_mesh_points(finder, image)
    centre = points.mean(0)
    p = points - centre
    a, b = np.radians(yaw), np.radians(pitch)
    x = p[:, 0] * np.cos(a) - p[:, 2] * np.sin(a)
    z = p[:, 0] * np.sin(a) + p[:, 2] * np.cos(a)
    y = p[:, 1] * np.cos(b) - z * np.sin(b)
    moved = np.stack([x, y], axis=1) + centre[:2]
    return _warp_face(image, points[:, :2], moved)


def packaged_face_finder(settings):
    """The packaged MediaPipe face models as the app opens them; fails (not skips) when setup has not run."""
    import pytest

    from processors.faces.landmarks import FaceLandmarker, open_face_finder
    from processors.faces.models import face_models_dir

    if not face_models_dir(settings.cvi_cache_dir).is_dir():
        pytest.fail("face models missing: run scripts/setup.sh (python -m processors.faces.models prepare)")
    found = open_face_finder(cache_dir=settings.cvi_cache_dir)
    assert isinstance(found, FaceLandmarker)
    return found
