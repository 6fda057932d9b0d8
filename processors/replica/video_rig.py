"""The talking head of a replica made from a video: its idle loop, with its own mouths placed in.

:class:`VideoRig` draws a frame at time ``t``: the loop frame for ``t``
(decoded from JPEG), and, when the pose's mouth is not at rest, the lower
face from the replica's mouth bank whose measured shape (inner-lip gap and
mouth width) is closest to the viseme's, blended with the runner-up, its
colours scaled by the light on the upper face in its frame and in the loop
frame, warped onto the loop
frame's face (a similarity from the rigid points stored per
loop frame) and feathered in with the bank's mask. Blinks, gaze and head
motion are the person's own, from the loop; the pose's are not used.

:func:`make_rig` picks :class:`VideoRig` for a replica folder with a video
loop and :class:`processors.replica.face.FaceRig` otherwise;
:func:`render_rig` draws with either.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from processors.replica.assets import FaceLandmarks, Replica
from processors.replica.face import FacePose, FaceRig

# Mouth vectors whose largest entry is below this are at rest: the loop's own mouth.
_REST_LEVEL = 0.08


@lru_cache(maxsize=8)
def _load_video(path: Path, mtime_ns: int) -> dict[str, np.ndarray]:
    """The arrays of a replica's ``video.npz``, shared by every rig in the process (read-only)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def is_video_replica(replica: Replica) -> bool:
    """Whether the replica was made from a video (its folder has the loop and mouth bank)."""
    video = replica.metadata.get("video")
    return bool(video) and replica.path is not None and (replica.path / video["file"]).is_file()


class VideoRig:
    """Renders a video replica: the idle loop, with the bank's mouth for the pose's viseme.

    Args:
        replica: A replica made by :func:`processors.replica.video_replica.create_video_replica`.
        size: Output ``(width, height)``; the 512x512 frames are scaled to fit.
    """

    def __init__(self, replica: Replica, size: tuple[int, int] = (512, 512)):
        meta = replica.metadata["video"]
        path = replica.path / meta["file"]
        arrays = _load_video(path, path.stat().st_mtime_ns)
        self.size = size
        self.fps = float(meta["fps"])
        self._jpeg = arrays["loop_jpeg"]
        self._offsets = arrays["loop_offsets"]
        self._placements = arrays["loop_placements"].astype(np.float64)
        self._bank = arrays["bank_crops"]
        self._mask = arrays["mask"].astype(np.float32) / 255.0
        self._bank_light = arrays["bank_light"]
        self._loop_light = arrays["loop_light"]
        self.frame_count = len(self._offsets) - 1
        shapes = meta["mouth_shapes"]
        self._gap_rest, self._gap_max = shapes["gap_rest"], shapes["gap_max"]
        self._width_rest = shapes["width_rest"]
        self._width_min, self._width_max = shapes["width_min"], shapes["width_max"]
        gap_range = max(1e-3, self._gap_max - self._gap_rest)
        width_range = max(1e-3, self._width_max - self._width_min)
        self._scale = np.array([1.0 / gap_range, 0.7 / width_range], np.float32)
        self._bank_shapes = arrays["bank_measures"] * self._scale
        bh, bw = self._mask.shape
        self._box_corners = np.array([[0, 0], [bw, 0], [0, bh], [bw, bh]], np.float64)
        frame_size = replica.portrait.shape[1], replica.portrait.shape[0]
        self._factor = min(size[0] / frame_size[0], size[1] / frame_size[1])
        self.landmarks: FaceLandmarks = replica.landmarks.scaled(self._factor)
        self._cached: tuple[int, np.ndarray] | None = None
        self.last_bank_choice: int | None = None  # for tests and benchmarks

    def frame_index(self, t: float) -> int:
        """The loop frame shown at ``t`` seconds."""
        return int(np.floor(t * self.fps)) % self.frame_count

    def loop_frame(self, index: int) -> np.ndarray:
        """Loop frame ``index`` (RGB, 512x512), decoded; the last one is kept."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        data = self._jpeg[self._offsets[index] : self._offsets[index + 1]]
        frame = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        self._cached = (index, frame)
        return frame

    def target_measures(self, mouth: np.ndarray) -> np.ndarray:
        """``[inner-lip gap, mouth width]`` (eye distances) that a mouth vector asks for."""
        open_, width = float(mouth[0]), float(mouth[1])
        press = float(mouth[4]) if len(mouth) > 4 else 0.0
        gap = self._gap_rest + max(0.0, open_) * (1.0 - min(1.0, press)) * (self._gap_max - self._gap_rest)
        if width >= 0:
            w = self._width_rest + width * (self._width_max - self._width_rest)
        else:
            w = self._width_rest + width * (self._width_rest - self._width_min)
        return np.array([gap, w], np.float32)

    def _mouth_patch(self, mouth: np.ndarray, index: int) -> np.ndarray:
        """The bank's mouth for ``mouth``, its colours matched to loop frame ``index``'s light."""
        first, second, w = self._closest(mouth)
        patch = self._bank[first].astype(np.float32)
        light = self._bank_light[first]
        if w < 1.0:
            patch = patch * w + self._bank[second].astype(np.float32) * (1.0 - w)
            light = light * w + self._bank_light[second] * (1.0 - w)
        # Light that changed during the video (exposure, a cloud): each channel scaled by how much
        # brighter the loop frame's upper face is than the bank mouth's frame's.
        gain = np.clip(self._loop_light[index] / np.maximum(light, 1.0), 0.7, 1.4).astype(np.float32)
        return np.minimum(patch * gain, 255.0)

    def _closest(self, mouth: np.ndarray) -> tuple[int, int, float]:
        """The closest bank mouth, the runner-up, and the first's weight (1: the first alone)."""
        target = self.target_measures(mouth) * self._scale
        d = np.sum((self._bank_shapes - target) ** 2, axis=1)
        if len(d) == 1:
            self.last_bank_choice = 0
            return 0, 0, 1.0
        first, second = np.argpartition(d, 1)[:2]
        if d[second] < d[first]:
            first, second = second, first
        self.last_bank_choice = int(first)
        # Mostly the closest; the runner-up softens the step between shapes.
        w = float(np.clip(0.5 + 1.5 * (d[second] - d[first]) / (d[first] + d[second] + 1e-9), 0.5, 1.0))
        return int(first), int(second), 1.0 if w > 0.97 else w

    def render(self, pose: FacePose, t: float = 0.0) -> np.ndarray:
        """One RGB frame (height x width x 3, uint8) at ``t`` seconds with the pose's mouth."""
        index = self.frame_index(t)
        frame = self.loop_frame(index)
        mouth = np.asarray(pose.mouth, np.float32)
        amount = float(np.clip(np.max(np.abs(mouth)) / _REST_LEVEL, 0.0, 1.0)) if mouth.size else 0.0
        if amount > 0.0:
            frame = frame.copy()
            self._place(frame, self._mouth_patch(mouth, index), self._placements[index], amount)
        else:
            self.last_bank_choice = None
        if self._factor != 1.0 or frame.shape[1] != self.size[0] or frame.shape[0] != self.size[1]:
            return _fit(frame, self.size, self._factor)
        return frame if amount > 0.0 else frame.copy()

    def _place(self, frame: np.ndarray, patch: np.ndarray, m: np.ndarray, amount: float) -> None:
        corners = self._box_corners @ m[:, :2].T + m[:, 2]
        h, w = frame.shape[:2]
        x0, y0 = np.floor(corners.min(axis=0)).astype(int)
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            return
        local = m.copy()
        local[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(patch, local, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(self._mask, local, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
        alpha = (alpha * amount)[..., None]
        roi = frame[y0:y1, x0:x1]
        roi[:] = (roi * (1.0 - alpha) + warped * alpha).astype(np.uint8)


def _fit(frame: np.ndarray, size: tuple[int, int], factor: float) -> np.ndarray:
    width, height = size
    new_size = (round(frame.shape[1] * factor), round(frame.shape[0] * factor))
    scaled = cv2.resize(frame, new_size, interpolation=cv2.INTER_AREA)
    if scaled.shape[:2] == (height, width):
        return scaled
    out = np.zeros((height, width, 3), np.uint8)
    oy, ox = (height - scaled.shape[0]) // 2, (width - scaled.shape[1]) // 2
    out[oy : oy + scaled.shape[0], ox : ox + scaled.shape[1]] = scaled
    return out


def make_rig(replica: Replica, size: tuple[int, int] = (512, 512)) -> FaceRig | VideoRig:
    """The rig that draws this replica: its video loop when it has one, else its portrait."""
    return VideoRig(replica, size) if is_video_replica(replica) else FaceRig(replica, size)


def render_rig(rig: FaceRig | VideoRig, pose: FacePose, t: float, *, i420: bool = False) -> np.ndarray:
    """A frame from either rig, RGB or I420: a video rig also needs the time (its loop plays with the clock)."""
    if isinstance(rig, VideoRig):
        image = rig.render(pose, t)
        return cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420) if i420 else image
    return rig.render_i420(pose) if i420 else rig.render(pose)
