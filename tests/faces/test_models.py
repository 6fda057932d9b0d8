"""The face models come out of the mediapipe wheel, checked, once."""

import zipfile
from pathlib import Path

import pytest

from processors.faces import models
from processors.faces.models import FACE_MODEL_FILES, extract_from_wheel, face_models_dir, prepare

pytestmark = pytest.mark.unit


def test_a_wheel_with_other_files_is_refused_by_name(tmp_path: Path):
    wheel = tmp_path / "mediapipe-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, _sha in FACE_MODEL_FILES.values():
            archive.writestr(member, b"not a model")
    with pytest.raises(ValueError, match="face_detection_short_range.tflite has an unexpected sha256"):
        extract_from_wheel(wheel, tmp_path / "out")


def test_prepare_finds_the_files_in_place_and_downloads_nothing(settings, tmp_path: Path, monkeypatch):
    source = face_models_dir(settings.cvi_cache_dir)
    if not source.is_dir():
        pytest.fail("face models missing: run scripts/setup.sh")
    target = face_models_dir(tmp_path)
    target.mkdir(parents=True)
    for path in source.glob("*.tflite"):
        (target / path.name).write_bytes(path.read_bytes())

    def no_download(*args, **kwargs):
        raise AssertionError("prepare downloaded although the files were there")

    monkeypatch.setattr(models.subprocess, "run", no_download)
    assert prepare(cache_dir=tmp_path) == target
