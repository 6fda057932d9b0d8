"""The perception tap: camera (and screen share) frames in, debounced cues out.

:class:`PerceptionProcessor` sits right after the transport's input. It
takes the user's camera frames (``UserImageRawFrame``, already sampled by the
transport at the persona's rate), analyses at most one at a time in its own
worker thread (a frame that arrives while one is being analysed is dropped,
never queued), and keeps the cues in a :class:`CueTracker`. Camera frames go
no further down the pipeline. It sends app messages on the way:

- ``conversation.perception_cues`` (ours) whenever a cue changes: the cues,
  each with when it began, and the line the LLM gets;
- ``conversation.perception_tool_call`` when a cue fires one of the persona's
  ``perception_tools``: ``{name, arguments, frames: [data URL]}``.

:meth:`cue_line` gives the current cues as the short line
:class:`PerceptionContextProcessor` puts before the user's words each turn
(no work at turn time: the cues are already there), and :meth:`analysis`
answers the ``perception_analysis_queries`` at the end of the call
(:meth:`final_analysis` is the same, awaitable: the vision LLM engine in
:mod:`processors.perception.vision_llm` asks its model then).
Screen-share frames are read with Tesseract OCR (``tesseract`` on the PATH),
at most every ``ocr_interval_s``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    LLMContextFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
    UserImageRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pydantic import BaseModel, ConfigDict, Field

from processors.perception.answers import answer_from_cues, camera_question
from processors.perception.cues import CueChange, CueTracker, FrameReading, read_frame
from processors.perception.queries import (
    PerceptionTool,
    answer_now,
    answer_over_call,
    parse_tools,
    tool_arguments,
    trigger_state,
)

CAMERA_SOURCE = "camera"
SCREEN_SOURCE = "screenVideo"
CUES_EVENT = "conversation.perception_cues"
TOOL_CALL_EVENT = "conversation.perception_tool_call"
# How the cue line starts in the user's message (the LLM reads it as what it sees).
CUE_LINE_PREFIX = "(What you see on camera: "
# Frames are not read from the end of the user's turn to the end of the reply
# (on two cores the LLM, the voice and the face need it all), for at most this long.
REPLY_PAUSE_MAX_S = 15.0
# A tool fires again for the same cue no sooner than this.
TOOL_COOLDOWN_S = 10.0
SCREEN_TEXT_CHARS = 300


class PerceptionParams(BaseModel):
    """What the perception tap does.

    Parameters:
        framerate: Camera frames analysed per second (the transport samples at this rate).
        hold_s: How long a cue must hold before it counts.
        cache_dir: The model cache (face models under ``models/``).
        models_dir: A folder holding the face models, instead of the cache's.
        ambient_awareness_queries: Answered from the cues in every turn's line.
        perception_analysis_queries: Answered at the end of the call.
        perception_tools: Tools that fire when a cue enters the state they name.
        perception_tool_prompt: When to call the tools (read with each tool's description).
        ocr: Read the text of a shared screen with Tesseract.
        ocr_interval_s: Seconds between two OCR reads.
        conversation_id: Goes in every event.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    conversation_id: str = ""
    framerate: float = Field(default=2.0, gt=0, le=30)
    hold_s: float = Field(default=1.0, ge=0)
    cache_dir: Path
    models_dir: Path | None = None
    ambient_awareness_queries: list[str] = Field(default_factory=list)
    perception_analysis_queries: list[str] = Field(default_factory=list)
    perception_tools: list[dict[str, Any]] = Field(default_factory=list)
    perception_tool_prompt: str | None = None
    ocr: bool = True
    ocr_interval_s: float = 5.0


def data_url(rgb: np.ndarray, *, quality: int = 80) -> str:
    """An RGB frame as a ``data:image/jpeg;base64,...`` URL."""
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


def read_screen_text(rgb: np.ndarray, *, timeout_s: float = 10.0) -> str:
    """The text on a screen image, by Tesseract (empty when none is read)."""
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        return ""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    if not ok:
        return ""
    result = subprocess.run(
        [tesseract, "stdin", "stdout", "--psm", "3"], input=png.tobytes(), capture_output=True, timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        logger.debug(f"tesseract failed: {result.stderr.decode(errors='replace')[:200]}")
        return ""
    return " ".join(result.stdout.decode(errors="replace").split())


def frame_rgb(frame: UserImageRawFrame) -> np.ndarray:
    """The RGB pixels of a camera or screen frame (a view of its bytes)."""
    width, height = frame.size
    return np.frombuffer(frame.image, dtype=np.uint8).reshape(height, width, 3)


class PerceptionProcessor(FrameProcessor):
    """Samples the user's camera into debounced cues, off the event loop.

    Args:
        params: What to analyse and answer.
        finder: A face finder (tests); by default the landmark models load
            in the worker thread when the pipeline starts.
    """

    def __init__(self, *, params: PerceptionParams, finder=None, **kwargs):
        super().__init__(**kwargs)
        self._params = params
        self._finder = finder
        self._executor: ThreadPoolExecutor | None = None
        self._loading: asyncio.Future | None = None
        self.tracker = CueTracker(hold_s=params.hold_s)
        self._busy = False
        self._screen_busy = False
        self._replying_since: float | None = None
        self.frames_in: dict[str, int] = {}
        self.frame_size: tuple[int, int] | None = None
        self._last_sample = -1e9
        self._last_ocr = -1e9
        self._started = time.monotonic()
        self._last_rgb: np.ndarray | None = None
        self._last_fired: dict[tuple[str, str], float] = {}
        self.tools = self._read_tools(params)
        self.screen_texts: list[str] = []
        self.readings = 0
        self.analysis_ms: list[float] = []
        self.tool_calls: list[dict[str, Any]] = []

    def _read_tools(self, params: PerceptionParams) -> list[PerceptionTool]:
        """The persona's tools with the cue states that fire them (a tool that names none is left out)."""
        tools, refused = parse_tools(params.perception_tools, params.perception_tool_prompt)
        for reason in refused:
            logger.warning(f"{self}: {reason}")
        return tools

    # -- lifecycle ---------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._start()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            self._stop()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._replying_since = time.monotonic()  # the reply is being written: leave it the CPU
        elif isinstance(frame, (BotStoppedSpeakingFrame, UserStartedSpeakingFrame)):
            self._replying_since = None
        if isinstance(frame, UserImageRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self.frames_in[frame.transport_source or CAMERA_SOURCE] = self.frames_in.get(frame.transport_source or CAMERA_SOURCE, 0) + 1
            self.frame_size = frame.size
            if not self.replying:
                self._take(frame)
            return  # camera frames end here: no later layer looks at them
        await self.push_frame(frame, direction)

    @property
    def analysis_queries(self) -> list[str]:
        """The persona's ``perception_analysis_queries``."""
        return self._params.perception_analysis_queries

    @property
    def replying(self) -> bool:
        """Between the end of the user's turn and the end of the reply (at most ``REPLY_PAUSE_MAX_S``): no frame is read."""
        since = self._replying_since
        return since is not None and time.monotonic() - since < REPLY_PAUSE_MAX_S

    def _start(self) -> None:
        if self._executor is not None:
            return
        self._started = time.monotonic()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perception")
        if self._finder is None:
            self._loading = asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self):
        from processors.faces.landmarks import open_face_finder

        finder = open_face_finder(cache_dir=self._params.cache_dir, models_dir=self._params.models_dir)
        logger.info(f"{self}: faces by {finder.info.engine} on {finder.info.runtime}")
        self._finder = finder
        return finder

    def _stop(self) -> None:
        seconds = time.monotonic() - self._started
        logger.debug(f"{self}: {self.frames_in} frames in over {seconds:.0f} s (last {self.frame_size}), {self.readings} read")
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- frames ------------------------------------------------------------

    def _take(self, frame: UserImageRawFrame) -> None:
        if self._executor is None or frame.format not in (None, "RGB"):
            return
        now = time.monotonic()
        if frame.transport_source == SCREEN_SOURCE:
            if self._params.ocr and not self._screen_busy and now - self._last_ocr >= self._params.ocr_interval_s:
                self._screen_busy = True
                self._last_ocr = now
                self.create_task(self._read_screen(frame_rgb(frame).copy()), name="perception-ocr")
            return
        # The transport samples at whole frames per second; this keeps the persona's rate.
        if self._busy or now - self._last_sample < 0.9 / self._params.framerate:
            return
        self._busy = True
        self._last_sample = now
        self.create_task(self._analyse(frame_rgb(frame).copy(), now), name="perception-frame")

    async def _analyse(self, rgb: np.ndarray, at: float) -> None:
        try:
            if self._finder is None and self._loading is not None:
                await self._loading
            executor = self._executor
            if executor is None:
                return
            started = time.perf_counter()
            reading: FrameReading = await asyncio.get_running_loop().run_in_executor(
                executor, lambda: read_frame(self._finder, rgb, at=at)
            )
            self.analysis_ms.append((time.perf_counter() - started) * 1000)
            self.readings += 1
            self._last_rgb = rgb
            changes = self.tracker.update(reading)
            if changes:
                await self._send(CUES_EVENT, self.cues_event())
                await self._fire_tools(changes, rgb)
        except RuntimeError as e:
            # The executor was shut down as the call ended.
            logger.debug(f"{self}: frame not analysed: {e}")
        finally:
            self._busy = False

    async def _read_screen(self, rgb: np.ndarray) -> None:
        try:
            executor = self._executor
            if executor is None:
                return
            text = await asyncio.get_running_loop().run_in_executor(executor, read_screen_text, rgb)
            text = text[:SCREEN_TEXT_CHARS]
            if text and (not self.screen_texts or self.screen_texts[-1] != text):
                self.screen_texts.append(text)
                await self._send(CUES_EVENT, self.cues_event())
                await self._fire_tools([CueChange("screen", "text", time.monotonic())], rgb)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            logger.debug(f"{self}: screen not read: {e}")
        finally:
            self._screen_busy = False

    # -- what the cues say ---------------------------------------------------

    @property
    def screen_text(self) -> str | None:
        return self.screen_texts[-1] if self.screen_texts else None

    def cue_line(self) -> str | None:
        """The current cues (and the ambient questions' answers) as one short line; None before any cue holds."""
        line = self.tracker.line(time.monotonic())
        if line is None:
            return None
        parts = [line]
        if self.screen_text:
            parts.append(f'their shared screen reads "{self.screen_text[:120]}"')
        cues = self.tracker.current(time.monotonic())
        for question in self._params.ambient_awareness_queries:
            parts.append(f"{question.strip()} {answer_now(question, cues, screen_text=self.screen_text)}")
        return "; ".join(parts)

    def cues_event(self) -> dict[str, Any]:
        now = time.monotonic()
        cues = {
            name: {"value": c["value"], "since_s": round(c["since"] - self._started, 2)}
            for name, c in self.tracker.current(now).items()
        }
        return {"cues": cues, "line": self.cue_line(), "screen_text": self.screen_text,
                "at_s": round(now - self._started, 2), "timestamp": time.time()}

    def analysis(self) -> dict[str, Any]:
        """The end-of-call perception analysis: each query answered over the whole call."""
        gestures = [(c.value, c.at) for c in self.tracker.history if c.cue == "gesture"]
        answers = [
            {"query": q, "answer": answer_over_call(q, self.tracker.durations, gestures, self.screen_texts)}
            for q in self._params.perception_analysis_queries
        ]
        summary = [
            answer_over_call("how many people", self.tracker.durations, gestures, self.screen_texts),
            answer_over_call("attention expression", self.tracker.durations, gestures, self.screen_texts),
            answer_over_call("gestures", self.tracker.durations, gestures, self.screen_texts),
        ]
        text = " ".join(f"{a['query'].strip()} {a['answer']}." for a in answers) or "; ".join(summary)
        return {"analysis": text, "queries": answers, "frames_analysed": self.readings}

    async def final_analysis(self) -> dict[str, Any]:
        """:meth:`analysis`, awaitable: what the end of a call awaits whichever the engine."""
        return self.analysis()

    # -- events ----------------------------------------------------------

    async def _send(self, event_type: str, properties: dict[str, Any]) -> None:
        message = {
            "message_type": "conversation",
            "event_type": event_type,
            "conversation_id": self._params.conversation_id,
            "properties": properties,
        }
        await self.push_frame(OutputTransportMessageUrgentFrame(message=message))

    async def _fire_tools(self, changes: list[CueChange], rgb: np.ndarray) -> None:
        now = time.monotonic()
        for change in changes:
            key = trigger_state(change.cue, change.value)
            for tool in self.tools:
                if key not in tool.triggers:
                    continue
                fired_key = (tool.name, f"{key[0]}={key[1]}")
                if now - self._last_fired.get(fired_key, -1e9) < TOOL_COOLDOWN_S:
                    continue
                self._last_fired[fired_key] = now
                await self._call_tool(tool, change, rgb)

    async def _call_tool(self, tool: PerceptionTool, change: CueChange, rgb: np.ndarray) -> None:
        description = self.tracker.line(time.monotonic()) or f"{change.cue}: {change.value}"
        if change.cue == "screen" and self.screen_text:
            description = f'the shared screen reads "{self.screen_text[:120]}"'
        executor = self._executor
        if executor is None:
            return
        url = await asyncio.get_running_loop().run_in_executor(executor, data_url, rgb)
        properties = {
            "name": tool.name,
            "arguments": tool_arguments(tool, description, change.value),
            "frames": [url],
            "cue": {"name": change.cue, "value": change.value, "since_s": round(change.at - self._started, 2)},
        }
        self.tool_calls.append(properties)
        logger.info(f"{self}: perception tool {tool.name} fired on {change.cue}={change.value}")
        await self._send(TOOL_CALL_EVENT, properties)


class PerceptionContextProcessor(FrameProcessor):
    """Puts the current cue line before the user's words in the turns' LLM context.

    Sits between the user context aggregator and the LLM. The line is read
    from :class:`PerceptionProcessor` (already computed), so a turn waits for
    nothing. Each user message gets at most one line; earlier turns keep
    theirs (the context's prefix, and the LLM's cache of it, stay unchanged).

    Args:
        perception: The camera tap whose cues are read.
        every_turn: Give the line every turn. Otherwise only when something
            worth saying has changed since it was last given (someone else is
            in view, the user left or came back, looks away, frowns, is
            surprised, the light went): with a small LLM, a line about an
            ordinary smiling face in every turn made its answers worse.
        answers: Told, for every context, the cues' own answer when the user
            asks about their picture ("Can you see me?"), else None.
    """

    def __init__(self, *, perception: PerceptionProcessor, every_turn: bool = True, answers=None, **kwargs):
        super().__init__(**kwargs)
        self._perception = perception
        self._every_turn = every_turn
        self._answers = answers
        self._given_state: tuple | None = notable_state({})
        # The line given with each user message (by its words): an early reply
        # runs on a copy of the context, and the turn is then written to the
        # real one without the line; it is put back so that the next turn's
        # prompt starts as the LLM (and its cache) saw this one.
        self._given: dict[str, str] = {}
        self.lines: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            if self._answers is not None:
                self._answers.expect(self._answer(newest_user_words(frame.context)))
            restore_cue_lines(frame.context, self._given)
            line = self._perception.cue_line()
            if line is not None and self._worth_giving() and add_cue_line(frame.context, line):
                self.lines.append(line)
                self._given[_key(newest_user_words(frame.context) or "")] = line
        await self.push_frame(frame, direction)

    def restore_given_lines(self, context) -> None:
        """Put back into ``context`` the lines given with its earlier user messages, as the next turn will."""
        restore_cue_lines(context, self._given)

    def _worth_giving(self) -> bool:
        state = notable_state(self._perception.tracker.current())
        if not self._every_turn and state == self._given_state:
            return False
        self._given_state = state
        return True

    def _answer(self, words: str | None) -> str | None:
        asked = camera_question(words or "")
        if asked is None:
            return None
        kind, state = asked
        return answer_from_cues(kind, state, self._perception.tracker.current(), screen_text=self._perception.screen_text)


def notable_state(cues: dict[str, Any]) -> tuple:
    """What of the cues is worth telling the LLM about; an ordinary face at the camera is ``(1, None, None, None)``."""
    def value(name):
        return (cues.get(name) or {}).get("value")

    faces = value("faces")
    expression = value("expression")
    return (
        1 if faces is None else faces,
        expression if expression in ("frowning", "surprised") else None,
        "away" if value("attention") == "away" else None,
        "dark" if value("lighting") == "dark" else None,
    )


def _key(words: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", words.lower()).split())


def restore_cue_lines(context, given: dict[str, str]) -> None:
    """Put back the line given with an earlier user message that the context now holds without it."""
    if not given:
        return
    for message in context.get_messages()[:-1]:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str) and not content.startswith(CUE_LINE_PREFIX):
            line = given.get(_key(content))
            if line is not None:
                message["content"] = f"{CUE_LINE_PREFIX}{line}.)\n{content}"


def newest_user_words(context) -> str | None:
    """The newest user message's words (without a cue line), or None."""
    for message in reversed(context.get_messages()):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            return None
        if content.startswith(CUE_LINE_PREFIX):
            content = content.split("\n", 1)[1] if "\n" in content else ""
        return content
    return None


def add_cue_line(context, line: str) -> bool:
    """Prefix the newest user message with the cue line (once). Returns whether it was added."""
    messages = context.get_messages()
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            if content.startswith(CUE_LINE_PREFIX):
                return False
            message["content"] = f"{CUE_LINE_PREFIX}{line}.)\n{content}"
            return True
        if isinstance(content, list):
            if any(isinstance(p, dict) and str(p.get("text", "")).startswith(CUE_LINE_PREFIX) for p in content):
                return False
            content.insert(0, {"type": "text", "text": f"{CUE_LINE_PREFIX}{line}.)"})
            return True
        return False
    return False
