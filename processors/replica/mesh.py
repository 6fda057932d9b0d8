"""A replica's face mesh: MediaPipe's 468 landmarks on its portrait, stored beside it.

The mesh is found once, when a replica is made (or rebuilt with
``python -m processors.replica.mesh``), with the packaged face models of
:mod:`processors.faces`, and written to ``mesh.json`` in the replica folder
(x, y in portrait pixels, 0.1 px; about 7 KB). The renderer warps the lips,
chin and jaw from these points (:mod:`processors.replica.mouth_warp`).

Index groups below follow MediaPipe's canonical face mesh; "left" and "right"
are as seen in the image.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MESH_FILE = "mesh.json"
MESH_POINTS = 468

# Lip contours, each from the image-left corner to the image-right corner.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# The lower half of the face oval, image-left cheek edge to image-right, through the chin.
JAW_LINE = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
CHIN = 152
FOREHEAD = 10
NOSE_BOTTOM = 2
# Points between nose, lips and jaw that carry the skin along (cheeks, chin, philtrum).
LOWER_FACE = (
    98, 327, 164, 92, 322, 186, 410, 216, 436, 205, 425, 207, 427, 57, 287, 43, 273,
    106, 335, 182, 406, 83, 313, 18, 200, 199, 175, 208, 428, 32, 262, 140, 369, 171, 396,
    212, 432, 202, 422, 204, 424, 194, 418, 135, 364, 138, 367,
)


class MeshNotFoundError(Exception):
    """The face models saw no face in the portrait (another photo may work)."""


@dataclass(frozen=True)
class ReplicaMesh:
    """The 468 mesh points of a replica's portrait.

    Parameters:
        points: ``(468, 2)`` float32, x and y in portrait pixels.
        detector: What found them (model and runtime).
    """

    points: np.ndarray
    detector: str

    def scaled(self, factor: float, offset: tuple[float, float] = (0.0, 0.0)) -> ReplicaMesh:
        """The mesh for the portrait resized by ``factor`` and shifted by ``offset``."""
        pts = self.points * np.float32(factor) + np.asarray(offset, np.float32)
        return ReplicaMesh(points=pts.astype(np.float32), detector=self.detector)

    def to_json(self) -> dict:
        return {
            "detector": self.detector,
            "points": [[round(float(x), 1), round(float(y), 1)] for x, y in self.points],
        }

    @classmethod
    def from_json(cls, data: dict) -> ReplicaMesh:
        points = np.asarray(data["points"], np.float32)
        if points.shape != (MESH_POINTS, 2):
            raise ValueError(f"mesh has shape {points.shape}; expected ({MESH_POINTS}, 2)")
        return cls(points=points, detector=str(data.get("detector", "unknown")))


def read_mesh(folder: Path) -> ReplicaMesh | None:
    """The mesh stored in a replica folder, or None when it has none."""
    path = Path(folder) / MESH_FILE
    if not path.is_file():
        return None
    return ReplicaMesh.from_json(json.loads(path.read_text()))


def write_mesh(folder: Path, mesh: ReplicaMesh) -> Path:
    """Write ``mesh.json`` into a replica folder (atomically)."""
    path = Path(folder) / MESH_FILE
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(mesh.to_json(), separators=(",", ":")) + "\n")
    tmp.replace(path)
    return path


def find_mesh(portrait_rgb: np.ndarray, finder) -> ReplicaMesh:
    """The mesh of the largest face in a portrait.

    Args:
        portrait_rgb: HxWx3 uint8.
        finder: A :class:`processors.faces.landmarks.FaceLandmarker`.

    Raises:
        MeshNotFoundError: no face, or the mesh model rejected it.
    """
    faces = finder.find(portrait_rgb, mesh_faces=1)
    if not faces or faces[0].mesh is None:
        raise MeshNotFoundError("the face mesh model found no face in the portrait")
    info = finder.info
    return ReplicaMesh(
        points=faces[0].mesh.points[:, :2].astype(np.float32),
        detector=f"{info.engine} face mesh ({', '.join(info.models)}) on {info.runtime}",
    )


def open_mesh_finder(*, cache_dir: Path, models_dir: Path | None = None):
    """The packaged face models (no iris), or None when setup has not put them in the cache."""
    from processors.faces.landmarks import FaceLandmarker
    from processors.faces.models import FaceModelsNotInstalledError, face_model_paths

    try:
        paths = face_model_paths(cache_dir=cache_dir, models_dir=models_dir)
    except FaceModelsNotInstalledError:
        return None
    return FaceLandmarker(paths, iris=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild ``mesh.json`` for every replica folder in a directory."""
    from processors.replica.assets import DEFAULT_REPLICAS_DIR, list_replicas, load_replica

    parser = argparse.ArgumentParser(prog="python -m processors.replica.mesh", description=main.__doc__)
    parser.add_argument("replicas_dir", type=Path, nargs="?", default=DEFAULT_REPLICAS_DIR)
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/open-cvi").expanduser())
    args = parser.parse_args(argv)
    finder = open_mesh_finder(cache_dir=args.cache_dir.expanduser())
    if finder is None:
        print("face models missing; run scripts/setup.sh first", file=sys.stderr)
        return 1
    for rid in list_replicas(args.replicas_dir):
        replica = load_replica(rid, args.replicas_dir)
        path = write_mesh(args.replicas_dir / rid, find_mesh(replica.portrait, finder))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
