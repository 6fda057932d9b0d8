"""Replica assets: a portrait, its face landmarks and metadata, on disk.

A replica is a folder ``replicas/<replica_id>/`` holding

- ``portrait.jpg``: the face, square, eyes level, at the renderer's size;
- ``landmarks.json``: eye and mouth positions in portrait pixels
  (:class:`FaceLandmarks`);
- ``replica.json``: ``replica_id``, ``replica_name``, ``default_voice``,
  and where the image came from and under which licence;
- ``mesh.json`` (when the packaged face models are installed): the 468-point
  face mesh the renderer warps the mouth and jaw with
  (:mod:`processors.replica.mesh`).

:func:`create_replica` makes one from a photo. Faces are found with the
Haar cascades that ship inside OpenCV (``cv2.data``), so nothing is
downloaded: a face must show two eyes, and the mouth line is found from the
colour and darkness of the lips below them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from processors.replica.mesh import MeshNotFoundError, ReplicaMesh, find_mesh, read_mesh, write_mesh

DEFAULT_REPLICAS_DIR = Path(__file__).resolve().parents[2] / "replicas"
DEFAULT_VOICE = "en_US-joe-medium"
PORTRAIT_SIZE = 512
MIN_FACE_PX = 80

# Where features sit in a portrait, in units of the distance between the eyes.
_EYE_DISTANCE_IN_PORTRAIT = 0.215  # of the portrait width
_EYES_ABOVE_CENTRE = 0.32  # eye distances above the portrait centre
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


class ReplicaCreationError(Exception):
    """A replica can't be made from this image; the message says why.

    Retrying with the same image can't help; another photo can.
    """


class ReplicaNotFoundError(LookupError):
    """No replica folder with that id."""


@dataclass(frozen=True)
class FaceLandmarks:
    """Face geometry in portrait pixels (x right, y down).

    Parameters:
        eye_left: Centre of the eye on the image's left.
        eye_right: Centre of the eye on the image's right.
        eye_half_size: Half width and half height of an open eye.
        mouth: Centre of the line between the lips.
        mouth_half_width: Half the distance between the mouth corners.
        chin: Bottom of the chin.
        face_box: ``(x, y, w, h)`` of the face.
        detector: What found the landmarks (``opencv-haar``, ``drawn``).
    """

    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    eye_half_size: tuple[float, float]
    mouth: tuple[float, float]
    mouth_half_width: float
    chin: tuple[float, float]
    face_box: tuple[float, float, float, float]
    detector: str

    def scaled(self, factor: float) -> FaceLandmarks:
        """The same landmarks for the portrait resized by ``factor``."""

        def s(values):
            return tuple(float(v) * factor for v in values)

        return FaceLandmarks(
            eye_left=s(self.eye_left),
            eye_right=s(self.eye_right),
            eye_half_size=s(self.eye_half_size),
            mouth=s(self.mouth),
            mouth_half_width=self.mouth_half_width * factor,
            chin=s(self.chin),
            face_box=s(self.face_box),
            detector=self.detector,
        )

    def to_json(self) -> dict:
        """Plain JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> FaceLandmarks:
        """Parse what :meth:`to_json` wrote."""
        fields = dict(data)
        for key in ("eye_left", "eye_right", "eye_half_size", "mouth", "chin", "face_box"):
            fields[key] = tuple(float(v) for v in fields[key])
        fields["mouth_half_width"] = float(fields["mouth_half_width"])
        return cls(**fields)


@dataclass(frozen=True)
class Replica:
    """A loaded replica: portrait (RGB, HxWx3 uint8), landmarks and metadata."""

    replica_id: str
    name: str
    portrait: np.ndarray
    landmarks: FaceLandmarks
    metadata: dict
    path: Path | None = None
    mesh: ReplicaMesh | None = None


def list_replicas(replicas_dir: Path = DEFAULT_REPLICAS_DIR) -> list[str]:
    """Ids of the replicas in ``replicas_dir``, sorted."""
    if not replicas_dir.is_dir():
        return []
    return sorted(p.name for p in replicas_dir.iterdir() if (p / "replica.json").is_file())


def load_replica(replica_id: str, replicas_dir: Path = DEFAULT_REPLICAS_DIR) -> Replica:
    """Load ``replicas_dir/<replica_id>``.

    Raises:
        ReplicaNotFoundError: No such replica; the message lists those there are.
    """
    folder = replicas_dir / replica_id
    meta_path = folder / "replica.json"
    if not meta_path.is_file():
        available = ", ".join(list_replicas(replicas_dir)) or "none"
        raise ReplicaNotFoundError(
            f"replica '{replica_id}' not found in {replicas_dir}; available: {available}"
        )
    metadata = json.loads(meta_path.read_text())
    landmarks = FaceLandmarks.from_json(json.loads((folder / "landmarks.json").read_text()))
    bgr = cv2.imread(str(folder / metadata.get("portrait", "portrait.jpg")), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ReplicaNotFoundError(f"replica '{replica_id}': portrait image missing or unreadable")
    return Replica(
        replica_id=metadata["replica_id"],
        name=metadata["replica_name"],
        portrait=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
        landmarks=landmarks,
        metadata=metadata,
        path=folder,
        mesh=read_mesh(folder),
    )


def replica_id_from_name(name: str) -> str:
    """A folder-safe id from a display name: ``"Ada Lovelace"`` -> ``ada-lovelace``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")[:48]
    return slug


def write_replica(
    replicas_dir: Path,
    *,
    replica_id: str,
    name: str,
    portrait_rgb: np.ndarray,
    landmarks: FaceLandmarks,
    image_source: str,
    image_licence: str,
    default_voice: str = DEFAULT_VOICE,
    mesh: ReplicaMesh | None = None,
) -> Path:
    """Write a replica folder atomically: into a temporary folder, then renamed.

    Raises:
        ReplicaCreationError: The id is not folder-safe or already taken.
    """
    if not _ID_PATTERN.match(replica_id):
        raise ReplicaCreationError(
            f"replica id {replica_id!r} is not allowed; use lowercase letters, digits, '-' or '_'"
        )
    final = replicas_dir / replica_id
    if final.exists():
        raise ReplicaCreationError(f"replica '{replica_id}' already exists in {replicas_dir}")
    replicas_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{replica_id}.", dir=replicas_dir))
    try:
        ok, jpg = cv2.imencode(
            ".jpg", cv2.cvtColor(portrait_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        if not ok:
            raise ReplicaCreationError(f"replica '{replica_id}': could not encode the portrait")
        (tmp / "portrait.jpg").write_bytes(jpg.tobytes())
        (tmp / "landmarks.json").write_text(json.dumps(landmarks.to_json(), indent=2) + "\n")
        metadata = {
            "replica_id": replica_id,
            "replica_name": name,
            "default_voice": default_voice,
            "portrait": "portrait.jpg",
            "image_source": image_source,
            "image_licence": image_licence,
            "landmarks_detector": landmarks.detector,
        }
        if mesh is not None:
            write_mesh(tmp, mesh)
            metadata["mesh_detector"] = mesh.detector
        (tmp / "replica.json").write_text(json.dumps(metadata, indent=2) + "\n")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --- Finding a face in a photo -------------------------------------------------


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, name)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"OpenCV cascade {name} missing from {cv2.data.haarcascades}")
    return cascade


@dataclass(frozen=True)
class _FoundFace:
    box: tuple[int, int, int, int]
    eye_left: tuple[float, float]
    eye_right: tuple[float, float]
    eye_box_size: float


def _find_eyes(gray: np.ndarray, box, eye_cascade) -> _FoundFace | None:
    x, y, w, h = box
    top = gray[y : y + int(h * 0.6), x : x + w]
    min_eye = max(8, w // 10)
    eyes = eye_cascade.detectMultiScale(top, 1.1, 4, minSize=(min_eye, min_eye), maxSize=(w // 2, w // 2))
    left = [e for e in eyes if e[0] + e[2] / 2 < w / 2]
    right = [e for e in eyes if e[0] + e[2] / 2 >= w / 2]
    if not left or not right:
        return None
    # The biggest eye on each side; eyebrows and nostrils come out smaller.
    el = max(left, key=lambda e: e[2])
    er = max(right, key=lambda e: e[2])
    return _FoundFace(
        box=(int(x), int(y), int(w), int(h)),
        eye_left=(x + el[0] + el[2] / 2, y + el[1] + el[3] / 2),
        eye_right=(x + er[0] + er[2] / 2, y + er[1] + er[3] / 2),
        eye_box_size=float(el[2] + er[2]) / 2,
    )


def find_faces(rgb: np.ndarray) -> list[_FoundFace]:
    """Frontal faces with two visible eyes, largest first."""
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    face_cascade = _cascade("haarcascade_frontalface_default.xml")
    eye_cascade = _cascade("haarcascade_eye.xml")
    boxes = face_cascade.detectMultiScale(gray, 1.1, 5, minSize=(24, 24))
    faces = [f for f in (_find_eyes(gray, b, eye_cascade) for b in boxes) if f is not None]
    return sorted(faces, key=lambda f: -f.box[2])


def _mouth_line(rgb: np.ndarray, eye_mid: np.ndarray, d: float) -> float:
    """Image row of the line between the lips, searched below the eyes.

    Lips are redder than skin and the gap between them is the darkest row
    there; the search band is where mouths sit in frontal faces.
    """
    h = rgb.shape[0]
    y0 = int(max(0, eye_mid[1] + 0.8 * d))
    y1 = int(min(h - 1, eye_mid[1] + 1.4 * d))
    x0 = int(max(0, eye_mid[0] - 0.25 * d))
    x1 = int(min(rgb.shape[1], eye_mid[0] + 0.25 * d))
    if y1 - y0 < 3 or x1 - x0 < 3:
        return float(eye_mid[1] + 1.05 * d)
    band = rgb[y0:y1, x0:x1].astype(np.float32)
    brightness = band.mean(axis=2).mean(axis=1)
    redness = (band[..., 0] - band[..., 1]).mean(axis=1)
    kernel = np.ones(3, np.float32) / 3
    brightness = np.convolve(brightness, kernel, mode="same")
    redness = np.convolve(redness, kernel, mode="same")
    # Favour dark rows inside the reddest stretch.
    score = -brightness + 0.5 * redness
    centre_prior = -np.abs(np.arange(len(score)) - (1.05 - 0.8) * d) * 0.3
    row = int(np.argmax(score + centre_prior))
    # A smile showing teeth: the darkest row is above the upper teeth; the
    # mouth opens between upper and lower teeth, lower down.
    saturation = band.max(axis=2).mean(axis=1) - band.min(axis=2).mean(axis=1)
    skin = float(np.median(brightness))
    teeth = 0
    for i in range(row + 1, min(len(brightness), row + 1 + int(0.3 * d))):
        if brightness[i] > skin * 1.05 and saturation[i] < 0.8 * float(np.median(saturation)):
            teeth += 1
        elif teeth or i > row + 0.1 * d:
            break
    if teeth >= 3:
        row = i - teeth + int(0.6 * teeth)
    return float(y0 + row)


def create_replica(
    image_path: str | Path,
    name: str,
    replicas_dir: Path = DEFAULT_REPLICAS_DIR,
    *,
    replica_id: str | None = None,
    default_voice: str = DEFAULT_VOICE,
    image_source: str | None = None,
    image_licence: str = "provided by the user",
    mesh_finder=None,
) -> Path:
    """Make a replica from a photo of one face and write its folder.

    The face is found, the image rotated so the eyes are level, cropped
    square around the face and scaled to 512x512; landmarks are stored with
    it. The folder appears whole or not at all.

    Args:
        image_path: A photo (PNG, JPEG, ...) showing exactly one frontal face.
        name: Display name; the id is made from it unless ``replica_id`` is given.
        replicas_dir: Where replica folders live.
        replica_id: Folder name to use instead of one made from ``name``.
        default_voice: Voice id recorded in the metadata.
        image_source: Where the photo came from (defaults to its file name).
        image_licence: Licence of the photo, recorded in the metadata.
        mesh_finder: The packaged face models
            (:func:`processors.replica.mesh.open_mesh_finder`); the face mesh
            found with them on the portrait is stored as ``mesh.json``. None
            stores no mesh (the renderer then draws the mouth without it).

    Returns:
        The new replica folder.

    Raises:
        ReplicaCreationError: Not an image, no face, several faces, a face
            too small, or the id is taken; nothing is written.
    """
    path = Path(image_path)
    if not path.is_file():
        raise ReplicaCreationError(f"{path}: no such file")
    raw = np.fromfile(str(path), dtype=np.uint8)
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if bgr is None:
        raise ReplicaCreationError(f"{path}: not an image OpenCV can read (use a PNG or JPEG photo)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rid = replica_id or replica_id_from_name(name)
    if not rid:
        raise ReplicaCreationError(f"name {name!r} gives an empty replica id; use letters or digits")
    if (replicas_dir / rid).exists():
        raise ReplicaCreationError(f"replica '{rid}' already exists in {replicas_dir}")

    faces = find_faces(rgb)
    if not faces:
        raise ReplicaCreationError(
            f"{path}: no face found (need one frontal face with both eyes visible)"
        )
    if len(faces) > 1:
        raise ReplicaCreationError(
            f"{path}: found {len(faces)} faces; the photo must show exactly one person"
        )
    face = faces[0]
    if face.box[2] < MIN_FACE_PX:
        raise ReplicaCreationError(
            f"{path}: the face is {face.box[2]} px wide; at least {MIN_FACE_PX} px is needed "
            "(use a larger or closer photo)"
        )

    landmarks, portrait = _normalise_portrait(rgb, face)
    mesh = None
    if mesh_finder is not None:
        try:
            mesh = find_mesh(portrait, mesh_finder)
        except MeshNotFoundError as e:
            raise ReplicaCreationError(f"{path}: {e}") from None
    return write_replica(
        replicas_dir,
        replica_id=rid,
        name=name,
        portrait_rgb=portrait,
        landmarks=landmarks,
        image_source=image_source or path.name,
        image_licence=image_licence,
        default_voice=default_voice,
        mesh=mesh,
    )


def _normalise_portrait(rgb: np.ndarray, face: _FoundFace) -> tuple[FaceLandmarks, np.ndarray]:
    el = np.array(face.eye_left, np.float64)
    er = np.array(face.eye_right, np.float64)
    d = float(np.linalg.norm(er - el))
    angle = float(np.degrees(np.arctan2(er[1] - el[1], er[0] - el[0])))
    mid = (el + er) / 2
    size = PORTRAIT_SIZE
    scale = _EYE_DISTANCE_IN_PORTRAIT * size / d
    # Rotate about the eye midpoint, scale, and put the eyes where they belong.
    m = cv2.getRotationMatrix2D((float(mid[0]), float(mid[1])), angle, scale)
    target = np.array([size / 2, size / 2 - _EYES_ABOVE_CENTRE * _EYE_DISTANCE_IN_PORTRAIT * size])
    m[:, 2] += target - mid
    portrait = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)

    def apply(p):
        return m @ np.array([p[0], p[1], 1.0])

    pl, pr = apply(el), apply(er)
    pd = float(np.linalg.norm(pr - pl))
    eye_mid = (pl + pr) / 2
    mouth_y = _mouth_line(portrait, eye_mid, pd)
    fx, fy, fw, fh = face.box
    corners = np.array([apply((fx, fy)), apply((fx + fw, fy + fh))])
    landmarks = FaceLandmarks(
        eye_left=(float(pl[0]), float(pl[1])),
        eye_right=(float(pr[0]), float(pr[1])),
        eye_half_size=(0.27 * face.eye_box_size * scale, 0.11 * face.eye_box_size * scale),
        mouth=(float(eye_mid[0]), mouth_y),
        mouth_half_width=0.4 * pd,
        chin=(float(eye_mid[0]), mouth_y + 0.72 * pd),
        face_box=(
            float(corners[:, 0].min()),
            float(corners[:, 1].min()),
            float(np.ptp(corners[:, 0])),
            float(np.ptp(corners[:, 1])),
        ),
        detector="opencv-haar",
    )
    return landmarks, portrait
