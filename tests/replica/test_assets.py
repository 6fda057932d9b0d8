"""Replica folders: the stock ones, and making one from a photo."""

import json

import cv2
import numpy as np
import pytest
from skimage import data

from processors.replica.assets import (
    DEFAULT_REPLICAS_DIR,
    ReplicaCreationError,
    ReplicaNotFoundError,
    create_replica,
    list_replicas,
    load_replica,
)

pytestmark = pytest.mark.unit


def _write(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)
    return path


def test_stock_replicas_are_complete_small_and_sourced():
    ids = list_replicas()
    assert {"eileen", "ada", "leo"} <= set(ids)
    for rid in ids:
        folder = DEFAULT_REPLICAS_DIR / rid
        meta = json.loads((folder / "replica.json").read_text())
        assert meta["replica_id"] == rid
        assert meta["replica_name"] and meta["default_voice"]
        assert meta["image_source"] and meta["image_licence"]
        for f in folder.iterdir():
            assert f.stat().st_size < 1_000_000
        replica = load_replica(rid)
        assert replica.portrait.shape == (512, 512, 3)
        lm = replica.landmarks
        assert lm.eye_left[0] < lm.mouth[0] < lm.eye_right[0]
        assert lm.eye_left[1] < lm.mouth[1] < lm.chin[1]


def test_unknown_replica_lists_the_available_ones():
    with pytest.raises(ReplicaNotFoundError, match="available: .*ada"):
        load_replica("nobody")


def test_create_from_real_photo(tmp_path):
    photo = _write(tmp_path / "astronaut.png", data.astronaut())
    replicas = tmp_path / "replicas"
    folder = create_replica(photo, "Eileen Collins", replicas)
    assert folder == replicas / "eileen-collins"
    replica = load_replica("eileen-collins", replicas)
    assert replica.name == "Eileen Collins"
    lm = replica.landmarks
    # Eyes levelled and placed; the mouth between the lips of the real photo.
    assert abs(lm.eye_left[1] - lm.eye_right[1]) < 1
    assert 95 < lm.eye_right[0] - lm.eye_left[0] < 125
    assert 300 < lm.mouth[1] < 345
    assert sorted(p.name for p in replicas.iterdir()) == ["eileen-collins"]
    with pytest.raises(ReplicaCreationError, match="already exists"):
        create_replica(photo, "Eileen Collins", replicas)


def _face_crop():
    return data.astronaut()[20:260, 120:330]


@pytest.mark.parametrize(
    "case, make, message",
    [
        ("flat", lambda: np.full((400, 400, 3), 128, np.uint8), "no face found"),
        ("coins", lambda: data.coins(), "no face found"),
        ("two", lambda: np.hstack([_face_crop(), _face_crop()]), "found 2 faces"),
        ("small", lambda: cv2.resize(data.astronaut(), (300, 300), interpolation=cv2.INTER_AREA), "px wide; at least"),
    ],
)
def test_bad_photos_fail_clearly_and_write_nothing(tmp_path, case, make, message):
    photo = _write(tmp_path / f"{case}.png", make())
    replicas = tmp_path / "replicas"
    replicas.mkdir()
    with pytest.raises(ReplicaCreationError, match=message):
        create_replica(photo, "Someone", replicas)
    assert list(replicas.iterdir()) == []


def test_not_an_image_and_missing_file(tmp_path):
    text = tmp_path / "face.jpg"
    text.write_text("not a picture")
    replicas = tmp_path / "replicas"
    with pytest.raises(ReplicaCreationError, match="not an image"):
        create_replica(text, "Someone", replicas)
    with pytest.raises(ReplicaCreationError, match="no such file"):
        create_replica(tmp_path / "missing.png", "Someone", replicas)
    assert not replicas.exists() or list(replicas.iterdir()) == []
