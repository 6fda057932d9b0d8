"""Face detection, mesh and iris on real photographs, through the packaged models."""

import math
from pathlib import Path

import numpy as np
import pytest

from processors.faces.landmarks import FaceLandmarker, HaarFaceFinder, open_face_finder
from processors.faces.models import FaceModelsNotInstalledError, face_model_paths
from tests import face_images

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def finder(settings) -> FaceLandmarker:
    return face_images.packaged_face_finder(settings)


def eye_line_degrees(points: np.ndarray) -> float:
    return math.degrees(math.atan2(points[263, 1] - points[33, 1], points[263, 0] - points[33, 0]))


def test_the_astronaut_has_one_face_with_its_features_in_place(finder):
    faces = finder.find(face_images.astronaut())
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].detection.box
    assert 160 < x0 < 200 and 60 < y0 < 100 and 250 < x1 < 290 and 160 < y1 < 200, faces[0].detection.box
    mesh = faces[0].mesh
    assert mesh is not None and mesh.points.shape == (468, 3) and mesh.score > 0.9
    p = mesh.points
    # Eyes above the nose tip, the nose above the mouth, the mouth above the chin.
    assert p[33, 1] < p[1, 1] < p[13, 1] < p[152, 1]
    assert p[33, 0] < p[133, 0] < p[1, 0] < p[362, 0] < p[263, 0]
    # Each iris sits between its eye's corners, near the middle (she looks at the camera).
    for (outer, inner), iris in zip(((33, 133), (263, 362)), mesh.irises):
        lo, hi = sorted((p[outer, 0], p[inner, 0]))
        assert lo + 0.25 * (hi - lo) < iris[0] < hi - 0.25 * (hi - lo)
        assert abs(iris[1] - (p[outer, 1] + p[inner, 1]) / 2) < 0.3 * (hi - lo)


def test_a_mirrored_photo_gives_the_mirrored_mesh(finder):
    image = face_images.astronaut()
    p = finder.find(image)[0].mesh.points
    q = finder.find(face_images.mirrored(image))[0].mesh.points
    width = image.shape[1]
    # The mesh is anatomical: the mirror's image-left eye is the original's image-right one.
    assert np.abs((width - q[263, 0]) - p[33, 0]) < 4
    assert np.abs(q[1, :2] - [width - p[1, 0], p[1, 1]]).max() < 4


@pytest.mark.parametrize("degrees", [-30, 25])
def test_a_tilted_head_is_meshed_along_its_tilt(finder, degrees):
    p = finder.find(face_images.rolled(face_images.astronaut(), degrees))[0].mesh.points
    upright = eye_line_degrees(finder.find(face_images.astronaut())[0].mesh.points)
    # cv2's rotation is counter-clockwise on screen, which is a negative image angle.
    assert abs(eye_line_degrees(p) - (upright - degrees)) < 5


def test_a_dark_room_still_shows_the_face(finder):
    assert len(finder.find(face_images.darkened(face_images.astronaut(), 0.15))) == 1


def test_a_close_up_crop_is_one_face(finder):
    faces = finder.find(face_images.cropped_face(face_images.astronaut()))
    assert len(faces) == 1 and faces[0].mesh is not None


def test_two_people_are_two_faces_and_nobody_is_none(finder):
    assert len(finder.find(face_images.two_people(face_images.astronaut()), mesh_faces=2)) == 2
    assert finder.find(face_images.no_one()) == []


def test_opencv_runs_the_same_models_to_the_same_points(settings, finder):
    if finder.runtime != "litert":
        pytest.skip("LiteRT is not installed: OpenCV is already the runtime")
    slow = FaceLandmarker(face_model_paths(cache_dir=settings.cvi_cache_dir), runtime="opencv")
    image = face_images.astronaut()
    a, b = finder.find(image)[0].mesh, slow.find(image)[0].mesh
    assert np.abs(a.points - b.points).max() < 0.5
    assert np.abs(a.irises - b.irises).max() < 0.5


def test_without_the_model_files_the_haar_cascade_finds_the_face(tmp_path: Path):
    with pytest.raises(FaceModelsNotInstalledError, match="setup.sh"):
        face_model_paths(cache_dir=tmp_path)
    finder = open_face_finder(cache_dir=tmp_path)
    assert isinstance(finder, HaarFaceFinder)
    faces = finder.find(face_images.astronaut())
    assert len(faces) == 1 and faces[0].mesh is None
