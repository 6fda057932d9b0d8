"""Cues from camera frames: who is there, where they look, their expression, the light.

:func:`read_frame` turns one RGB frame into :class:`FrameReading` (CPU work:
run it in a worker thread). :class:`CueTracker` turns the readings into
debounced cues: a state counts once it has held ``hold_s`` (about a second),
head nods and shakes are found in the recent head pose, and every change is
timestamped. :meth:`CueTracker.line` says the current cues in one short
sentence for the LLM ("the user is smiling and looking at you").

Geometry is measured on the face mesh after undoing the head's tilt, in units
of the distance between the outer eye corners (``D``):

- head yaw: the nose tip between the cheek edges, and the mesh's depth;
  pitch: the mesh's forehead-to-chin depth, relative to a face looking ahead;
- gaze: each iris between its eye's corners (0 image-left .. 1 image-right),
  added to the head's yaw; looking at the camera is within ``LOOK_DEGREES``;
- smiling: a wide mouth, or mouth corners lifted above the lips' line;
  frowning: corners below it, or the inner brows drawn down and together;
  surprised: the mouth open with the brows raised or the eyes wide.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

# Looking at the camera: the head's and eyes' direction within this many degrees.
LOOK_DEGREES = 15.0
LOOK_PITCH_DEGREES = 20.0
# The mesh reads a face looking straight ahead as pitched down by about this much.
PITCH_AHEAD_DEGREES = 12.0
# Degrees of eye rotation when the iris reaches an eye corner (gaze ratio 0 or 1).
EYE_RANGE_DEGREES = 60.0
# Mean luma (0..255) of the face (or of the frame, with no face) below which it is too dark.
DARK_LUMA = 45.0
# Expression thresholds (units of D; see the module docstring).
SMILE_WIDTH = 0.64
SMILE_LIFT, SMILE_LIFT_WIDTH = 0.06, 0.58
FROWN_CORNERS = -0.04
FROWN_INNER_BROW, FROWN_BROW_GAP = 0.17, 0.28
SURPRISE_MOUTH_OPEN = 0.28
SURPRISE_BROW, SURPRISE_EYE_OPEN = 0.24, 0.14
# Nods and shakes: the head pose over this many seconds.
GESTURE_WINDOW_S = 2.5
GESTURE_DEGREES = 8.0
# A gesture stays a cue this long after it was seen.
GESTURE_HOLD_S = 4.0

EXPRESSIONS = ("smiling", "frowning", "surprised", "neutral")


@dataclass(frozen=True)
class FrameReading:
    """What one frame shows.

    Parameters:
        at: When the frame was taken (seconds, any monotonic clock).
        faces: How many faces.
        luma: Mean brightness (0..255) of the main face, or of the frame without one.
        yaw: Head yaw in degrees (+: the nose points to the image right); None without landmarks.
        pitch: Head pitch in degrees (+: down), relative to looking ahead.
        gaze: Degrees the eyes add to the head's ``(yaw, pitch)``.
        looking: At the camera (head and eyes), or None without landmarks.
        expression: One of ``EXPRESSIONS``, or None without landmarks.
    """

    at: float
    faces: int
    luma: float
    yaw: float | None = None
    pitch: float | None = None
    gaze: tuple[float, float] | None = None
    looking: bool | None = None
    expression: str | None = None
    measures: dict[str, float] = field(default_factory=dict)

    @property
    def dark(self) -> bool:
        return self.luma < DARK_LUMA


def _luma(rgb: np.ndarray, box: tuple[float, float, float, float] | None) -> float:
    if box is not None:
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 - x0 > 4 and y1 - y0 > 4:
            rgb = rgb[y0:y1, x0:x1]
    return float(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).mean())


def face_measures(points: np.ndarray, irises: np.ndarray | None) -> dict[str, float]:
    """Head pose, gaze and expression measures of one face mesh (see the module docstring)."""
    p = points[:, :2]
    eyes = float(np.linalg.norm(p[263] - p[33])) or 1.0
    roll = math.atan2(p[263, 1] - p[33, 1], p[263, 0] - p[33, 0])
    c, s = math.cos(roll), math.sin(roll)
    # Undo the head's tilt: rows of q are the points in the face's own axes.
    unroll = np.array([[c, -s], [s, c]])
    q = p @ unroll
    nose = (q[1, 0] - q[234, 0]) / max(q[454, 0] - q[234, 0], 1e-6)
    yaw_depth = math.degrees(math.atan2(points[454, 2] - points[234, 2], points[454, 0] - points[234, 0]))
    yaw = float(0.5 * (yaw_depth + (nose - 0.5) * 90.0))
    pitch = math.degrees(math.atan2(points[152, 2] - points[10, 2], points[152, 1] - points[10, 1])) - PITCH_AHEAD_DEGREES
    lips_y = (q[13, 1] + q[14, 1]) / 2
    m = {
        "roll": math.degrees(roll),
        "yaw": yaw,
        "pitch": pitch,
        "mouth_width": float(np.linalg.norm(q[291] - q[61]) / eyes),
        "corner_lift": float((lips_y - (q[61, 1] + q[291, 1]) / 2) / eyes),
        "mouth_open": float((q[14, 1] - q[13, 1]) / eyes),
        "brow_raise": float(((q[159, 1] - q[105, 1]) + (q[386, 1] - q[334, 1])) / 2 / eyes),
        "inner_brow": float(((q[133, 1] - q[107, 1]) + (q[362, 1] - q[336, 1])) / 2 / eyes),
        "brow_gap": float(np.linalg.norm(q[336] - q[107]) / eyes),
        "eye_open": float(((q[145, 1] - q[159, 1]) + (q[374, 1] - q[386, 1])) / 2 / eyes),
    }
    if irises is not None:
        i = irises @ unroll
        gx = ((i[0, 0] - q[33, 0]) / max(q[133, 0] - q[33, 0], 1e-6) + (i[1, 0] - q[362, 0]) / max(q[263, 0] - q[362, 0], 1e-6)) / 2
        eye_mid_y = np.array([(q[33, 1] + q[133, 1]) / 2, (q[362, 1] + q[263, 1]) / 2])
        gy = float(((i[:, 1] - eye_mid_y) / eyes).mean())
        m["gaze_x"] = float(gx)
        m["gaze_y"] = gy
    return m


def expression_of(m: dict[str, float]) -> str:
    """``smiling``, ``frowning``, ``surprised`` or ``neutral`` from :func:`face_measures`."""
    if m["mouth_open"] > SURPRISE_MOUTH_OPEN and (m["brow_raise"] > SURPRISE_BROW or m["eye_open"] > SURPRISE_EYE_OPEN):
        return "surprised"
    if m["mouth_width"] > SMILE_WIDTH or (m["corner_lift"] > SMILE_LIFT and m["mouth_width"] > SMILE_LIFT_WIDTH):
        return "smiling"
    if m["corner_lift"] < FROWN_CORNERS or (m["inner_brow"] < FROWN_INNER_BROW and m["brow_gap"] < FROWN_BROW_GAP):
        return "frowning"
    return "neutral"


def read_frame(finder, rgb: np.ndarray, *, at: float) -> FrameReading:
    """One frame's :class:`FrameReading` (CPU work: call it off the event loop)."""
    faces = finder.find(rgb, mesh_faces=1)
    if not faces:
        return FrameReading(at=at, faces=0, luma=_luma(rgb, None))
    main = faces[0]
    luma = _luma(rgb, main.detection.box)
    if main.mesh is None:
        return FrameReading(at=at, faces=len(faces), luma=luma)
    m = face_measures(main.mesh.points, main.mesh.irises)
    gaze = (0.0, 0.0)
    if "gaze_x" in m:
        gaze = (float((m["gaze_x"] - 0.5) * EYE_RANGE_DEGREES), float(m["gaze_y"] * 2 * EYE_RANGE_DEGREES))
    looking = bool(abs(m["yaw"] + gaze[0]) < LOOK_DEGREES and abs(m["pitch"] + gaze[1]) < LOOK_PITCH_DEGREES)
    return FrameReading(
        at=at, faces=len(faces), luma=luma, yaw=m["yaw"], pitch=m["pitch"], gaze=gaze,
        looking=looking, expression=expression_of(m), measures=m,
    )


@dataclass
class CueChange:
    """A cue that changed, and when (the time its new state began)."""

    cue: str
    value: Any
    at: float


@dataclass
class _Debounced:
    value: Any = None
    since: float | None = None
    candidate: Any = None
    candidate_since: float | None = None


class CueTracker:
    """Debounced cues over time.

    Cues: ``faces`` (how many), ``attention`` (``looking`` / ``away``),
    ``expression``, ``lighting`` (``ok`` / ``dark``) and ``gesture``
    (``nodded`` / ``shook head``, kept ``GESTURE_HOLD_S`` after it is seen).

    Args:
        hold_s: How long a state must hold before it counts.
    """

    STATES = ("faces", "attention", "expression", "lighting")

    def __init__(self, *, hold_s: float = 1.0):
        self.hold_s = hold_s
        self._states = {name: _Debounced() for name in self.STATES}
        self._poses: deque[tuple[float, float, float]] = deque()
        self.gesture: tuple[str, float] | None = None
        self.last_at: float | None = None
        self.history: list[CueChange] = []
        # Seconds each stable state was held (for the end-of-call analysis).
        self.durations: dict[str, dict[Any, float]] = {name: {} for name in self.STATES}

    def _observe(self, name: str, value: Any, at: float) -> CueChange | None:
        state = self._states[name]
        if value != state.candidate:
            state.candidate, state.candidate_since = value, at
        if state.candidate != state.value and at - state.candidate_since >= self.hold_s:
            state.value, state.since = state.candidate, state.candidate_since
            return CueChange(name, state.value, state.since)
        return None

    def update(self, reading: FrameReading) -> list[CueChange]:
        """Take one frame's reading; returns the cues that changed."""
        at = reading.at
        if self.last_at is not None:
            for name, state in self._states.items():
                if state.value is not None and state.value != "unknown":
                    spent = self.durations[name]
                    spent[state.value] = spent.get(state.value, 0.0) + (at - self.last_at)
        self.last_at = at
        values = {
            "faces": reading.faces,
            "lighting": "dark" if reading.dark else "ok",
            "attention": None if reading.looking is None else ("looking" if reading.looking else "away"),
            "expression": reading.expression,
        }
        changes = []
        for name in self.STATES:
            value = values[name]
            if value is None:
                continue  # no landmarks this frame: the state stands
            change = self._observe(name, value, at)
            if change is not None:
                changes.append(change)
        if reading.yaw is not None and reading.pitch is not None:
            self._poses.append((at, reading.yaw, reading.pitch))
        while self._poses and at - self._poses[0][0] > GESTURE_WINDOW_S:
            self._poses.popleft()
        gesture = self._gesture()
        if gesture is not None and (self.gesture is None or at - self.gesture[1] > GESTURE_WINDOW_S):
            self.gesture = (gesture, at)
            self._poses.clear()
            changes.append(CueChange("gesture", gesture, at))
        self.history.extend(changes)
        return changes

    def _gesture(self) -> str | None:
        if len(self._poses) < 3:
            return None
        yaws = np.array([p[1] for p in self._poses])
        pitches = np.array([p[2] for p in self._poses])
        if _swung(pitches) and np.ptp(yaws) < np.ptp(pitches) * 0.7:
            return "nodded"
        if _swung(yaws) and np.ptp(pitches) < np.ptp(yaws) * 0.7:
            return "shook head"
        return None

    def value(self, name: str) -> Any:
        """A cue's current debounced value (None until one has held)."""
        return self._states[name].value

    def current(self, now: float | None = None) -> dict[str, Any]:
        """The current cues, with when each began (for events and the dev room)."""
        out: dict[str, Any] = {}
        for name, state in self._states.items():
            if state.value is not None:
                out[name] = {"value": state.value, "since": state.since}
        gesture = self.recent_gesture(now)
        if gesture is not None:
            out["gesture"] = {"value": gesture[0], "since": gesture[1]}
        return out

    def recent_gesture(self, now: float | None = None) -> tuple[str, float] | None:
        now = self.last_at if now is None else now
        if self.gesture is None or now is None or now - self.gesture[1] > GESTURE_HOLD_S:
            return None
        return self.gesture

    def line(self, now: float | None = None) -> str | None:
        """The current cues as one short sentence; None before any cue has held."""
        faces = self.value("faces")
        lighting = self.value("lighting")
        if faces is None:
            return None
        if faces == 0:
            text = "the user is not in view of the camera"
            if lighting == "dark":
                text += " (the picture is too dark to see much)"
            return text
        states = []
        expression = self.value("expression")
        attention = self.value("attention")
        if expression and expression != "neutral":
            states.append(expression)
        if attention == "looking":
            states.append("looking at you")
        elif attention == "away":
            states.append("looking away")
        text = "the user is " + (_and(states) if states else "in view")
        gesture = self.recent_gesture(now)
        if gesture is not None:
            text += f" and just {gesture[0]}"
        if faces > 1:
            text += f"; {faces} people are in view"
        if lighting == "dark":
            text += "; the room is too dark to see them well"
        return text


def _swung(series: np.ndarray) -> bool:
    """A swing out and back: an extreme at least ``GESTURE_DEGREES`` beyond both ends' sides."""
    if len(series) < 3:
        return False
    for i in range(1, len(series) - 1):
        before, after = series[:i], series[i + 1:]
        peak = series[i]
        if (peak - before.min() >= GESTURE_DEGREES and peak - after.min() >= GESTURE_DEGREES) or (
            before.max() - peak >= GESTURE_DEGREES and after.max() - peak >= GESTURE_DEGREES
        ):
            return True
    return False


def _and(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]
