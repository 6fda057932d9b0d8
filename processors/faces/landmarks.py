"""Faces and their landmarks in an RGB image, from MediaPipe's packaged models.

:class:`FaceLandmarker` runs three ``.tflite`` models (see
:mod:`processors.faces.models`): BlazeFace finds every face (box and six
keypoints), the face mesh gives 468 points (x, y in image pixels, z at the
same scale, larger is farther) for the largest faces, and the iris model gives
each eye's iris centre. It runs them with LiteRT (``ai-edge-litert``, one
thread); where that is not installed, OpenCV's DNN module reads the same files
(about three times slower). :class:`HaarFaceFinder` is the fallback when the
model files are missing: OpenCV's cascades find faces, with no landmarks.

Everything here is CPU work: call it from a worker thread, never on the event
loop. One instance is not thread-safe; use one per thread.

Mesh indices used elsewhere (image left/right as seen, for a face looking at
the camera): 1 nose tip, 10 forehead, 152 chin, 234 / 454 cheek edges
(image left / right), 33 / 133 outer / inner corner of the image-left eye,
362 / 263 inner / outer corner of the image-right eye, 159 / 145 and 386 / 374
upper / lower lids, 61 / 291 mouth corners, 13 / 14 inner lips, 105 / 334
brows, 107 / 336 inner brow ends.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from loguru import logger

from processors.faces.models import FaceModelPaths, FaceModelsNotInstalledError, face_model_paths

DETECTION_SIZE = 128
MESH_SIZE = 192
IRIS_SIZE = 64
DETECTION_SCORE_THRESHOLD = 0.5
NMS_IOU_THRESHOLD = 0.3
MESH_SCORE_THRESHOLD = 0.5
# The face mesh's crop: the detection box, squared and grown by this factor.
MESH_CROP_SCALE = 1.5
# The iris model's crop: the eye's corner-to-corner distance times this.
IRIS_CROP_SCALE = 2.3
# (outer corner, inner corner) of each eye in the mesh; the second eye is
# mirrored into the iris model's crop.
EYE_CORNERS = ((33, 133), (263, 362))


@dataclass
class FaceDetection:
    """One face found by BlazeFace, in image pixels.

    Parameters:
        box: ``(x0, y0, x1, y1)``.
        score: 0..1.
        keypoints: ``(6, 2)``: image-left eye, image-right eye, nose tip,
            mouth, image-left ear, image-right ear.
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass
class FaceMesh:
    """468 landmarks of one face, and its irises when the iris model ran.

    Parameters:
        points: ``(468, 3)``: x, y in image pixels, z at the same scale.
        score: The mesh model's face score, 0..1.
        irises: ``(2, 2)`` iris centres (image-left eye first), or None.
    """

    points: np.ndarray
    score: float
    irises: np.ndarray | None = None


@dataclass
class Face:
    """A face: where it is, and its landmarks when they were computed."""

    detection: FaceDetection
    mesh: FaceMesh | None = None


@dataclass
class FaceFinderInfo:
    """What a finder runs on (for logs and benchmarks)."""

    engine: str
    runtime: str
    models: list[str] = field(default_factory=list)


class _TFLiteModel:
    """One ``.tflite`` model on LiteRT, or on OpenCV's DNN when LiteRT is missing."""

    def __init__(self, path: Path, *, runtime: str):
        self.path = path
        self.runtime = runtime
        if runtime == "litert":
            from ai_edge_litert.interpreter import Interpreter

            self._interpreter = Interpreter(model_path=str(path), num_threads=1)
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]["index"]
            self._outputs = [d["index"] for d in self._interpreter.get_output_details()]
        else:
            self._net = cv2.dnn.readNetFromTFLite(str(path))
            self._names = self._net.getUnconnectedOutLayersNames()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """``x``: ``(1, H, W, 3)`` float32. Returns the outputs, flattened per batch, largest first."""
        if self.runtime == "litert":
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            outs = [self._interpreter.get_tensor(i).reshape(-1) for i in self._outputs]
        else:
            self._net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
            outs = [o.reshape(-1) for o in self._net.forward(self._names)]
        return sorted(outs, key=lambda o: -o.size)


def litert_available() -> bool:
    """Whether LiteRT (``ai-edge-litert``) is installed."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def _blazeface_anchors() -> np.ndarray:
    """The short-range BlazeFace anchor centres ``(896, 2)`` in 0..1."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = DETECTION_SIZE // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _crop_transform(center: tuple[float, float], size: float, angle: float, out: int) -> np.ndarray:
    """The 2x3 affine map from crop pixels (``out`` square) to image pixels.

    The crop is a square of side ``size`` centred at ``center`` whose x axis
    points along ``angle`` (radians, image coordinates, y down).
    """
    c, s = math.cos(angle), math.sin(angle)
    k = size / out
    cx, cy = center
    # image = center + R @ ((u - out/2) * k, (v - out/2) * k)
    return np.array(
        [
            [c * k, -s * k, cx - (c * out / 2 - s * out / 2) * k],
            [s * k, c * k, cy - (s * out / 2 + c * out / 2) * k],
        ],
        dtype=np.float64,
    )


def _apply(transform: np.ndarray, uv: np.ndarray) -> np.ndarray:
    return uv @ transform[:, :2].T + transform[:, 2]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


class FaceLandmarker:
    """Faces, face meshes and irises from MediaPipe's models.

    Args:
        paths: The three model files.
        runtime: ``"litert"``, ``"opencv"``, or ``"auto"`` (LiteRT when installed).
        iris: Also run the iris model on each meshed face.
    """

    engine = "mediapipe"

    def __init__(self, paths: FaceModelPaths, *, runtime: str = "auto", iris: bool = True):
        if runtime == "auto":
            runtime = "litert" if litert_available() else "opencv"
        if runtime not in ("litert", "opencv"):
            raise ValueError(f"runtime {runtime!r} is not one of: auto, litert, opencv")
        self.runtime = runtime
        self._detector = _TFLiteModel(paths.face_detection, runtime=runtime)
        self._mesh = _TFLiteModel(paths.face_landmark, runtime=runtime)
        self._iris = _TFLiteModel(paths.iris_landmark, runtime=runtime) if iris else None
        self._anchors = _blazeface_anchors()
        self.info = FaceFinderInfo(
            engine=self.engine,
            runtime=runtime,
            models=[p.name for p in (paths.face_detection, paths.face_landmark, paths.iris_landmark)],
        )

    def detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Every face in ``rgb`` (H, W, 3 uint8), most confident first."""
        height, width = rgb.shape[:2]
        side = max(height, width)
        # Letterbox to a square (as MediaPipe does), then scale to the model's input.
        pad_x, pad_y = (side - width) / 2, (side - height) / 2
        square = cv2.copyMakeBorder(
            rgb, int(pad_y), side - height - int(pad_y), int(pad_x), side - width - int(pad_x), cv2.BORDER_CONSTANT, value=0
        )
        x = cv2.resize(square, (DETECTION_SIZE, DETECTION_SIZE), interpolation=cv2.INTER_AREA)
        x = (x.astype(np.float32) / 127.5 - 1.0)[None]
        regressors, scores = self._detector.run(x)
        regressors = regressors.reshape(-1, 16)
        scores = 1.0 / (1.0 + np.exp(-np.clip(scores, -50.0, 50.0)))
        keep = np.nonzero(scores >= DETECTION_SCORE_THRESHOLD)[0]
        if keep.size == 0:
            return []
        raw = regressors[keep] / DETECTION_SIZE
        anchors = self._anchors[keep]
        cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
        w, h = raw[:, 2], raw[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        order = np.argsort(-scores[keep])
        faces: list[FaceDetection] = []
        remaining = order
        # Weighted non-maximum suppression: overlapping boxes are averaged by score.
        while remaining.size:
            best = remaining[0]
            overlap = _iou(boxes[best], boxes[remaining])
            group = remaining[overlap > NMS_IOU_THRESHOLD]
            remaining = remaining[overlap <= NMS_IOU_THRESHOLD]
            weights = scores[keep][group]
            box = (boxes[group] * weights[:, None]).sum(0) / weights.sum()
            kps = (keypoints[group] * weights[:, None, None]).sum(0) / weights.sum()
            # Back from the letterboxed square (0..1) to image pixels.
            box_px = box * side - np.array([pad_x, pad_y, pad_x, pad_y])
            kps_px = kps * side - np.array([pad_x, pad_y])
            faces.append(FaceDetection(box=tuple(float(v) for v in box_px), score=float(scores[keep][best]), keypoints=kps_px))
        return faces

    def mesh(self, rgb: np.ndarray, detection: FaceDetection) -> FaceMesh | None:
        """The face mesh (and irises) of one detected face; None when the mesh model sees no face there."""
        (ex0, ey0), (ex1, ey1) = detection.keypoints[0], detection.keypoints[1]
        angle = math.atan2(ey1 - ey0, ex1 - ex0)
        x0, y0, x1, y1 = detection.box
        size = max(x1 - x0, y1 - y0) * MESH_CROP_SCALE
        to_image = _crop_transform(((x0 + x1) / 2, (y0 + y1) / 2), size, angle, MESH_SIZE)
        crop = cv2.warpAffine(
            rgb, cv2.invertAffineTransform(to_image), (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        points, score = self._mesh.run((crop.astype(np.float32) / 255.0)[None])
        score = float(1.0 / (1.0 + math.exp(-float(np.clip(score[0], -100, 100)))))
        if score < MESH_SCORE_THRESHOLD:
            return None
        points = points.reshape(-1, 3)
        xyz = np.empty_like(points, dtype=np.float64)
        xyz[:, :2] = _apply(to_image, points[:, :2].astype(np.float64))
        xyz[:, 2] = points[:, 2] * size / MESH_SIZE
        irises = self._irises(rgb, xyz) if self._iris is not None else None
        return FaceMesh(points=xyz, score=score, irises=irises)

    def _irises(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        centres = np.zeros((2, 2), dtype=np.float64)
        for eye, (outer, inner) in enumerate(EYE_CORNERS):
            a, b = points[outer, :2], points[inner, :2]
            left, right = (a, b) if eye == 0 else (b, a)
            angle = math.atan2(right[1] - left[1], right[0] - left[0])
            size = float(np.linalg.norm(b - a)) * IRIS_CROP_SCALE
            to_image = _crop_transform(tuple((a + b) / 2), size, angle, IRIS_SIZE)
            crop = cv2.warpAffine(
                rgb, cv2.invertAffineTransform(to_image), (IRIS_SIZE, IRIS_SIZE), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            if eye == 1:
                crop = crop[:, ::-1]  # the model sees an image-left eye; the other is mirrored into it
            _contours, iris = self._iris.run((np.ascontiguousarray(crop, dtype=np.float32) / 255.0)[None])
            centre = iris.reshape(-1, 3)[0, :2].astype(np.float64)
            if eye == 1:
                centre[0] = IRIS_SIZE - centre[0]
            centres[eye] = _apply(to_image, centre[None])[0]
        return centres

    def find(self, rgb: np.ndarray, *, mesh_faces: int = 1) -> list[Face]:
        """Every face, largest first; the ``mesh_faces`` largest get landmarks."""
        detections = sorted(self.detect(rgb), key=lambda d: -d.width * d.height)
        faces = [Face(detection=d) for d in detections]
        for face in faces[:mesh_faces]:
            face.mesh = self.mesh(rgb, face.detection)
        return faces


class HaarFaceFinder:
    """The fallback: OpenCV's frontal-face cascade; faces without landmarks."""

    engine = "haar"

    def __init__(self) -> None:
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV cascade missing: {path}")
        self.runtime = "opencv"
        self.info = FaceFinderInfo(engine=self.engine, runtime="opencv", models=[Path(path).name])

    def find(self, rgb: np.ndarray, *, mesh_faces: int = 1) -> list[Face]:
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = min(gray.shape[:2])
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side // 10, side // 10))
        faces = []
        for x, y, w, h in sorted((tuple(f) for f in found), key=lambda f: -f[2] * f[3]):
            keypoints = np.array(
                [[x + 0.3 * w, y + 0.4 * h], [x + 0.7 * w, y + 0.4 * h], [x + 0.5 * w, y + 0.6 * h],
                 [x + 0.5 * w, y + 0.8 * h], [x, y + 0.45 * h], [x + w, y + 0.45 * h]]
            )
            faces.append(Face(detection=FaceDetection(box=(x, y, x + w, y + h), score=1.0, keypoints=keypoints)))
        return faces


def open_face_finder(*, cache_dir: Path, models_dir: Path | None = None, runtime: str = "auto", iris: bool = True):
    """The landmark models when they are in the cache, else OpenCV's cascades (logged)."""
    try:
        paths = face_model_paths(cache_dir=cache_dir, models_dir=models_dir)
    except FaceModelsNotInstalledError as e:
        logger.warning(f"face landmarks unavailable ({e}); falling back to OpenCV's Haar cascades (no landmarks)")
        return HaarFaceFinder()
    return FaceLandmarker(paths, runtime=runtime, iris=iris)
