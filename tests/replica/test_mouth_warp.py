"""The mouth warped from the replica's face mesh, measured on rendered pixels."""

import json

import cv2
import numpy as np
import pytest
from skimage import data

from processors.replica.assets import DEFAULT_REPLICAS_DIR, create_replica, list_replicas, load_replica
from processors.replica.face import FacePose, FaceRig
from processors.replica.mesh import (
    CHIN,
    LIPS_INNER_LOWER,
    LIPS_INNER_UPPER,
    LIPS_OUTER_LOWER,
    LIPS_OUTER_UPPER,
    MESH_FILE,
    open_mesh_finder,
)
from processors.replica.visemes import MouthShape, Viseme
from tests.replica.measure import mouth_cavity

pytestmark = pytest.mark.unit

TALKING = [Viseme.AA, Viseme.E, Viseme.I, Viseme.O, Viseme.W, Viseme.PBM, Viseme.FV, Viseme.SH]


@pytest.fixture(scope="module")
def rigs():
    return {rid: FaceRig(load_replica(rid)) for rid in ("eileen", "ada", "leo")}


def _frame(rig, shape) -> np.ndarray:
    mouth = shape.as_array() if isinstance(shape, MouthShape) else shape.value.as_array()
    return rig.render(FacePose(mouth=mouth))


def test_every_stock_replica_has_its_face_mesh():
    for rid in list_replicas():
        path = DEFAULT_REPLICAS_DIR / rid / MESH_FILE
        assert path.stat().st_size < 10_000
        mesh = load_replica(rid).mesh
        assert mesh is not None and mesh.points.shape == (468, 2)
        p = mesh.points
        # Lips in order: outer above inner above inner below outer, mid-mouth; chin below.
        mid = len(LIPS_OUTER_UPPER) // 2
        ys = [p[c[mid], 1] for c in (LIPS_OUTER_UPPER, LIPS_INNER_UPPER, LIPS_INNER_LOWER, LIPS_OUTER_LOWER)]
        assert ys == sorted(ys), (rid, ys)
        assert p[CHIN, 1] > ys[-1] + 30
        assert 180 < p[LIPS_OUTER_UPPER[0], 0] < 256 < p[LIPS_OUTER_UPPER[-1], 0] < 330


@pytest.mark.parametrize("replica_id", ["eileen", "ada"])
def test_cavity_grows_with_jaw_opening_and_vanishes_when_lips_press(rigs, replica_id):
    rig = rigs[replica_id]
    opening = [mouth_cavity(_frame(rig, MouthShape(open=o)), rig.landmarks) for o in (0.0, 0.2, 0.5, 0.95)]
    print(replica_id, opening)
    assert opening[0] < 20
    assert opening[1] > opening[0] + 100
    assert opening[2] > 1.5 * opening[1]
    assert opening[3] > 1.4 * opening[2]
    pressed = mouth_cavity(_frame(rig, Viseme.PBM), rig.landmarks)
    assert pressed <= 0.02 * opening[3]


def test_pressed_lips_close_a_smile_that_shows_teeth(rigs):
    """Eileen's portrait smiles with her teeth showing; p/b/m hide them."""
    rig = rigs["eileen"]
    mesh = rig.mouth_warp
    iu = mesh.rest[mesh._iu_idx]
    x0, x1 = int(iu[2, 0]), int(iu[-3, 0])
    # Everything between the lips' rest contours; teeth are bright and grey.
    mid = len(iu) // 2
    y0, y1 = int(iu[mid, 1]), int(mesh.rest[mesh._il_idx, 1][mid - 1]) + 1

    def teeth(frame):
        band = frame[y0:y1, x0:x1].astype(int)
        return int(np.count_nonzero((band.min(axis=2) > 190) & (np.ptp(band, axis=2) < 25)))

    assert teeth(rig.base) > 80
    # What is left is the lower lip's specular highlight, risen with the lip
    # (about 15 % of the count); lips that stay apart leave half the teeth.
    assert teeth(_frame(rig, Viseme.PBM)) < 0.25 * teeth(rig.base)


def _chin_shift(rest: np.ndarray, frame: np.ndarray, chin: tuple[float, float]) -> int:
    """How far the skin around the chin moved down, by template matching on pixels."""
    cx, cy = int(chin[0]), int(chin[1])
    patch = rest[cy - 22 : cy + 8, cx - 30 : cx + 30]
    search = frame[cy - 22 : cy + 50, cx - 30 : cx + 30]
    scores = cv2.matchTemplate(search, patch, cv2.TM_CCOEFF_NORMED)
    return int(np.argmax(scores[:, 0]))


@pytest.mark.parametrize("replica_id", ["eileen", "ada"])
def test_chin_drops_on_open_vowels_by_six_percent_of_the_face(rigs, replica_id):
    rig = rigs[replica_id]
    pts = load_replica(replica_id).mesh.points
    face_height = float(np.linalg.norm(pts[CHIN] - pts[10]))
    chin = tuple(pts[CHIN])
    shifts = {v.name: _chin_shift(rig.base, _frame(rig, v), chin) for v in (Viseme.AA, Viseme.O, Viseme.I, Viseme.PBM)}
    print(replica_id, shifts, f"6% of the face: {0.06 * face_height:.1f} px")
    assert shifts["AA"] >= 0.06 * face_height
    assert shifts["AA"] > shifts["O"] > shifts["I"] > shifts["PBM"]
    assert shifts["PBM"] <= 1


@pytest.mark.parametrize("replica_id", ["eileen", "ada", "leo"])
def test_only_the_lower_face_changes(rigs, replica_id):
    rig = rigs[replica_id]
    x0, y0, x1, y1 = rig.mouth_warp.box
    mesh = load_replica(replica_id).mesh.points
    assert y0 > mesh[1, 1]  # below the nose tip: eyes, brows and nose are never warped
    for viseme in TALKING:
        frame = _frame(rig, viseme)
        outside = np.ones(frame.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(frame[outside], rig.base[outside]), viseme
        assert np.array_equal(frame[:y0], rig.base[:y0])
    # At rest the whole frame is the portrait.
    assert np.array_equal(_frame(rig, Viseme.REST), rig.base)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def test_warp_keeps_every_triangle_the_right_way_round(rigs):
    """No fold-overs at the extremes: a folded triangle would paint the face over itself."""
    for rig in rigs.values():
        warp = rig.mouth_warp
        tri = warp.triangles
        rest = warp.rest[tri]
        rest_area = _cross(rest[:, 1] - rest[:, 0], rest[:, 2] - rest[:, 0])
        sign = np.sign(rest_area)
        for shape in (
            MouthShape(open=1.0, width=1.0, teeth=1.0),
            MouthShape(open=1.0, width=-1.0),
            MouthShape(open=0.3, width=-1.0, press=1.0),
            MouthShape(width=1.0, press=1.0),
        ):
            p = warp.points(shape.as_array())[tri]
            area = _cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
            # A sliver between the lips squeezed shut may end a hair the other
            # way round (well under 1 % of its area, below a pixel); none folds.
            assert (area * sign >= -0.01 * np.abs(rest_area)).all(), shape


def test_a_replica_made_from_a_photo_gets_its_mesh(settings, tmp_path):
    finder = open_mesh_finder(cache_dir=settings.cvi_cache_dir)
    if finder is None:
        pytest.fail("face models missing: run scripts/setup.sh")
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    folder = create_replica(photo, "Eileen", tmp_path / "replicas", mesh_finder=finder)
    meta = json.loads((folder / "replica.json").read_text())
    assert "face mesh" in meta["mesh_detector"]
    replica = load_replica("eileen", tmp_path / "replicas")
    stock = load_replica("eileen").mesh.points
    # The same photo gives the same mesh as the stock replica's, within a pixel or two.
    assert np.abs(replica.mesh.points - stock).max() < 3
    rig = FaceRig(replica)
    assert mouth_cavity(_frame(rig, Viseme.AA), rig.landmarks) > 500


def test_a_replica_without_a_mesh_still_talks_with_the_older_mouth():
    """Folders made before meshes existed render as before (and say how to add one)."""
    import dataclasses

    replica = dataclasses.replace(load_replica("ada"), mesh=None)
    rig = FaceRig(replica)
    assert rig.mouth_warp is None
    assert np.array_equal(_frame(rig, Viseme.REST), rig.base)
    assert mouth_cavity(_frame(rig, Viseme.AA), rig.landmarks) > 300
