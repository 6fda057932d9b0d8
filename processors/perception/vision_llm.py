"""The cloud path of perception: a vision LLM, over the OpenAI chat API, looks at sampled frames.

:class:`VisionLLMPerceptionProcessor` is the perception tap of
``perception_model="openai"``. It is a :class:`PerceptionProcessor` (the
same place in the pipeline, frame intake, events, :meth:`cue_line` for
:class:`PerceptionContextProcessor`, :meth:`final_analysis` at the end) that
asks a vision LLM instead of running face models:

- Camera frames still arrive at the persona's ``fps``. Every ``interval_s``
  the latest one (and the latest shared-screen frame, labelled as the screen)
  goes to ``POST {base_url}/chat/completions`` as a small JPEG
  ``image_url``, with a short instruction: one sentence describing the user
  as seen, then an answer to each ``ambient_awareness_queries``.
- The reply, cleaned and capped, is the cue line every turn reads (turns
  never wait for a request), and ``conversation.perception_cues`` is sent
  when it changes (``cues`` is ``{"description": ...}``).
- The persona's ``perception_tools`` go with the same request as OpenAI
  ``tools``; a call the model returns is sent as
  ``conversation.perception_tool_call`` with the frame, at most once per
  ``TOOL_COOLDOWN_S`` per tool.
- At most one request is in flight: a frame that comes meanwhile is skipped,
  never queued. A rejected key (HTTP 401/403) stops the requests for the
  call; any other failure is logged (no frame data, no key) and the next
  interval tries again.
- Up to ``kept_frames`` JPEGs, evenly spread over the call, are kept in
  memory; :meth:`final_analysis` answers ``perception_analysis_queries`` from
  them within ``analysis_timeout_s``, and says so when it cannot.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from loguru import logger
from pipecat.frames.frames import UserImageRawFrame
from pydantic import Field, SecretStr

from processors.perception.processor import (
    CUES_EVENT,
    SCREEN_SOURCE,
    TOOL_CALL_EVENT,
    TOOL_COOLDOWN_S,
    PerceptionParams,
    PerceptionProcessor,
    data_url,
    frame_rgb,
)
from processors.perception.queries import PerceptionTool

# OpenAI itself, and its small vision model.
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
# The longest cue line (characters) and answer to one analysis query.
LINE_CHARS = 400
ANSWER_CHARS = 500
AMBIENT_MAX_TOKENS = 160
ANALYSIS_MAX_TOKENS_PER_QUERY = 120
# Descriptions kept over the call (for the end-of-call analysis).
DESCRIPTIONS_KEPT = 30
# The cue line is dropped once no reply came for this many intervals (plus one request's timeout).
STALE_AFTER_INTERVALS = 5


class VisionLLMError(RuntimeError):
    """The vision LLM gave no answer. ``retryable`` says whether the next request may fare better."""

    def __init__(self, reason: str, *, retryable: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class VisionLLMParams(PerceptionParams):
    """What the vision LLM engine asks, and where.

    Parameters:
        model: The vision model's name on the server.
        base_url: The OpenAI-compatible API (``.../v1``).
        api_key: Sent as ``Authorization: Bearer``; None sends no key (a local server).
        interval_s: Seconds between two requests (frames in between are not sent).
        request_timeout_s: The longest one ambient request may take.
        analysis_timeout_s: The longest the end-of-call analysis may take.
        kept_frames: Frames kept over the call for the analysis.
        jpeg_quality: JPEG quality of the frames sent.
    """

    cache_dir: Path | None = None
    model: str = DEFAULT_MODEL
    base_url: str = DEFAULT_BASE_URL
    api_key: SecretStr | None = None
    interval_s: float = Field(default=3.0, gt=0, le=300)
    request_timeout_s: float = Field(default=10.0, gt=0, le=120)
    analysis_timeout_s: float = Field(default=15.0, gt=0, le=120)
    kept_frames: int = Field(default=4, ge=1, le=16)
    jpeg_quality: int = Field(default=80, ge=10, le=100)


def ambient_instruction(
    queries: list[str], *, camera: bool, screen: bool, tools: bool, tool_prompt: str | None
) -> str:
    """The system message of an ambient request."""
    parts = ["You are the eyes of an assistant on a video call with the user."]
    if camera:
        parts.append(
            "Describe the user as the camera shows them, in one short sentence: whether anyone is there and how "
            "many people, where they look, their expression, and anything they hold up or show."
        )
    else:
        parts.append("No camera image came: say the camera shows nothing.")
    if screen:
        parts.append("Then say in a few words what their shared screen shows.")
    if queries:
        numbered = " ".join(f"({i}) {q.strip()}" for i, q in enumerate(queries, 1))
        parts.append(f"Then answer each of these questions in a few words, in order, separated by semicolons: {numbered}")
    parts.append("Write plain text on one line: no lists, no markdown, no preamble.")
    if tools:
        parts.append("Call a tool only when what you see calls for it." + (f" {tool_prompt.strip()}" if tool_prompt else ""))
    return " ".join(parts)


ANALYSIS_INSTRUCTION = (
    "You are the eyes of an assistant that has just finished a video call with the user. From the frames of "
    "the user's camera over the call (in order) and the notes made during it, answer each question about the "
    "call in one or two sentences. Answer as numbered lines, one per question, in order: '1. ...'. Plain text, "
    "no markdown."
)


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat completion's message (a string, or text parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def clean_line(text: str, limit: int) -> str:
    """One line of plain text, at most ``limit`` characters, without markdown or a closing period."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    text = re.sub(r"[*#`]+", "", text)
    text = " ".join(text.split()).strip(" \"'")
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
        text = cut.rstrip(" ,;:") + "…"
    # The context line is wrapped as "(What you see on camera: <line>.)".
    return text.rstrip(" .")


def split_answers(text: str, count: int) -> list[str]:
    """The answers of a reply made of numbered lines (``1. ...``); the whole reply where they are not found."""
    numbered: dict[int, str] = {}
    for match in re.finditer(r"^\s*(\d+)\s*[.):-]\s*(.+)$", text, flags=re.MULTILINE):
        numbered.setdefault(int(match.group(1)), match.group(2))
    whole = clean_line(text, ANSWER_CHARS) or "no answer"
    return [clean_line(numbered[i], ANSWER_CHARS) if i in numbered else whole for i in range(1, count + 1)]


class VisionLLMPerceptionProcessor(PerceptionProcessor):
    """Asks a vision LLM what the camera shows, every ``interval_s``, never blocking a turn.

    Args:
        params: What to ask, and the server.
    """

    def __init__(self, *, params: VisionLLMParams, **kwargs):
        super().__init__(params=params, **kwargs)
        self._params: VisionLLMParams = params
        self._client: httpx.AsyncClient | None = None
        self._ask_task: asyncio.Task | None = None
        self._final: asyncio.Future | None = None
        self._last_ask = -1e9
        self._camera: tuple[UserImageRawFrame, float] | None = None
        self._screen: tuple[UserImageRawFrame, float] | None = None
        self._rejected = False
        self._last_failure: str | None = None
        self._line: str | None = None
        self._line_since = 0.0
        self._line_at = -1e9
        self._kept: list[tuple[int, float, str]] = []
        self._stride = 1
        self._sent = 0
        self._latest: tuple[int, float, str] | None = None
        self.descriptions: deque[tuple[float, str]] = deque(maxlen=DESCRIPTIONS_KEPT)
        self.requests = 0

    def _read_tools(self, params: PerceptionParams) -> list[PerceptionTool]:
        """Every tool in the OpenAI function format: the model decides when to call it."""
        tools = []
        for index, tool in enumerate(params.perception_tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(name, str) or not name:
                logger.warning(f"{self}: perception_tools[{index}] has no function.name; left out")
                continue
            tools.append(PerceptionTool(name=name, definition=tool, triggers=()))
        return tools

    @property
    def rejected(self) -> bool:
        """Whether the server rejected the key (no more requests this call)."""
        return self._rejected

    # -- lifecycle ---------------------------------------------------------

    def _start(self) -> None:
        if self._executor is not None:
            return
        self._started = time.monotonic()
        # JPEG encoding, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perception")
        self._client = httpx.AsyncClient(timeout=self._params.request_timeout_s, headers=self._headers())
        logger.info(f"{self}: frames to {self._params.model} at {self._server} every {self._params.interval_s:g} s")

    async def cleanup(self):
        if self._ask_task is not None and not self._ask_task.done():
            await self.cancel_task(self._ask_task)
        await super().cleanup()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _headers(self) -> dict[str, str]:
        key = self._params.api_key
        return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}

    @property
    def _server(self) -> str:
        # Host and port only: a URL may carry credentials.
        url = httpx.URL(self._params.base_url)
        return f"{url.host}:{url.port}" if url.port else url.host

    # -- frames ------------------------------------------------------------

    def _take(self, frame: UserImageRawFrame) -> None:
        if self._executor is None or self._rejected or frame.format not in (None, "RGB"):
            return
        now = time.monotonic()
        if frame.transport_source == SCREEN_SOURCE:
            self._screen = (frame, now)
        else:
            self._camera = (frame, now)
        if self._busy or now - self._last_ask < self._params.interval_s:
            return
        self._busy = True
        self._last_ask = now
        # The latest of each, if it is recent: a camera turned off, or a share ended, is not shown again.
        recent = max(2 * self._params.interval_s, 2.0)
        camera = self._camera[0] if self._camera and now - self._camera[1] <= recent else None
        screen = self._screen[0] if self._screen and now - self._screen[1] <= recent else None
        self._ask_task = self.create_task(self._ask(camera, screen, now), name="perception-vision")

    def _encode(self, frame: UserImageRawFrame | None) -> str | None:
        return None if frame is None else data_url(frame_rgb(frame), quality=self._params.jpeg_quality)

    async def _ask(self, camera: UserImageRawFrame | None, screen: UserImageRawFrame | None, at: float) -> None:
        try:
            executor, client = self._executor, self._client
            if executor is None or client is None:
                return
            loop = asyncio.get_running_loop()
            camera_url = await loop.run_in_executor(executor, self._encode, camera)
            screen_url = await loop.run_in_executor(executor, self._encode, screen)
            shown = camera_url or screen_url
            if shown is None:
                return
            if camera_url is not None:
                self._keep(camera_url, at)  # the analysis looks at the user
            started = time.perf_counter()
            try:
                message = await self._complete(client, self._ambient_request(camera_url, screen_url))
            except VisionLLMError as e:
                self._failed(e)
                return
            self.analysis_ms.append((time.perf_counter() - started) * 1000)
            self.readings += 1
            if self._last_failure is not None:
                logger.info(f"{self}: the vision LLM at {self._server} answers again")
                self._last_failure = None
            await self._take_reply(message, shown, at)
        except RuntimeError as e:
            # The executor was shut down as the call ended.
            logger.debug(f"{self}: frame not sent: {e}")
        finally:
            self._busy = False

    def _keep(self, url: str, at: float) -> None:
        """Keep every ``stride``-th frame sent, doubling the stride when more than ``kept_frames`` are kept."""
        index = self._sent
        self._sent += 1
        self._latest = (index, at, url)
        if index % self._stride == 0:
            self._kept.append((index, at, url))
        while len(self._kept) > self._params.kept_frames:
            self._stride *= 2
            self._kept = [k for k in self._kept if k[0] % self._stride == 0]

    def kept_frames(self) -> list[tuple[float, str]]:
        """The frames the analysis sees: those kept, and the latest sent; ``(seconds into the call, data URL)``."""
        kept = list(self._kept)
        if self._latest is not None and (not kept or kept[-1][0] != self._latest[0]):
            kept.append(self._latest)
        return [(round(at - self._started, 1), url) for _i, at, url in kept]

    def _failed(self, error: VisionLLMError) -> None:
        if not error.retryable:
            if not self._rejected:
                self._rejected = True
                logger.warning(f"{self}: the vision LLM at {self._server} {error.reason}; no more frames are sent this call")
            return
        # One warning per kind of failure; repeats at DEBUG until it answers again.
        log = logger.warning if error.reason != self._last_failure else logger.debug
        log(f"{self}: the vision LLM at {self._server} gave no answer ({error.reason}); trying again in "
            f"{self._params.interval_s:g} s")
        self._last_failure = error.reason

    # -- requests ----------------------------------------------------------

    def _ambient_request(self, camera_url: str | None, screen_url: str | None) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if camera_url:
            content += [{"type": "text", "text": "The user's camera now:"}, _image_part(camera_url)]
        if screen_url:
            content += [{"type": "text", "text": "The screen the user shares now:"}, _image_part(screen_url)]
        instruction = ambient_instruction(
            self._params.ambient_awareness_queries, camera=camera_url is not None, screen=screen_url is not None,
            tools=bool(self.tools), tool_prompt=self._params.perception_tool_prompt,
        )
        body: dict[str, Any] = {
            "model": self._params.model,
            "messages": [{"role": "system", "content": instruction}, {"role": "user", "content": content}],
            "max_tokens": AMBIENT_MAX_TOKENS,
            "temperature": 0.2,
            "stream": False,
        }
        if self.tools:
            body["tools"] = [t.definition for t in self.tools]
            body["tool_choice"] = "auto"
        return body

    async def _complete(self, client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion's message.

        Raises:
            VisionLLMError: no answer; not retryable when the key was rejected.
        """
        self.requests += 1
        try:
            response = await client.post(f"{self._params.base_url.rstrip('/')}/chat/completions", json=body)
        except httpx.TimeoutException as e:
            raise VisionLLMError(f"timed out ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise VisionLLMError(f"could not be reached ({type(e).__name__})") from e
        if response.status_code in (401, 403):
            raise VisionLLMError(f"rejected the key (HTTP {response.status_code})", retryable=False)
        if response.status_code != 200:
            raise VisionLLMError(f"HTTP {response.status_code}")
        try:
            message = response.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise VisionLLMError("an answer that is not a chat completion") from e
        if not isinstance(message, dict):
            raise VisionLLMError("an answer that is not a chat completion")
        return message

    async def _take_reply(self, message: dict[str, Any], url: str, at: float) -> None:
        line = clean_line(message_text(message), LINE_CHARS)
        if line:
            self._line_at = time.monotonic()
            if line != self._line:
                self._line = line
                self._line_since = at
                self.descriptions.append((round(at - self._started, 1), line))
                await self._send(CUES_EVENT, self.cues_event())
        for call in message.get("tool_calls") or []:
            await self._tool_called(call, url, at)

    async def _tool_called(self, call: Any, url: str, at: float) -> None:
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            logger.debug(f"{self}: the vision LLM called {name!r}, not one of the persona's perception tools")
            return
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(arguments, dict):
            logger.warning(f"{self}: the vision LLM called {name} with arguments that are not a JSON object; not sent")
            return
        now = time.monotonic()
        key = (tool.name, "vision")
        if now - self._last_fired.get(key, -1e9) < TOOL_COOLDOWN_S:
            return
        self._last_fired[key] = now
        properties = {
            "name": tool.name,
            "arguments": arguments,
            "frames": [url],
            "cue": {"name": "description", "value": self._line, "since_s": round(at - self._started, 2)},
        }
        self.tool_calls.append(properties)
        logger.info(f"{self}: perception tool {tool.name} called by the vision LLM")
        await self._send(TOOL_CALL_EVENT, properties)

    # -- what it says ------------------------------------------------------

    def cue_line(self) -> str | None:
        """The vision LLM's latest description (with the ambient answers); None before one, or once it is stale."""
        stale_after = STALE_AFTER_INTERVALS * self._params.interval_s + self._params.request_timeout_s
        if self._line is None or time.monotonic() - self._line_at > stale_after:
            return None
        return self._line

    def cues_event(self) -> dict[str, Any]:
        now = time.monotonic()
        line = self.cue_line()
        cues = {"description": {"value": line, "since_s": round(self._line_since - self._started, 2)}} if line else {}
        return {"cues": cues, "line": line, "screen_text": self.screen_text,
                "at_s": round(now - self._started, 2), "timestamp": time.time()}

    def _seen_summary(self) -> str:
        if not self.descriptions:
            return "Nothing was seen: the vision LLM described no frame."
        return "Seen over the call: " + "; ".join(f"at {at:g} s, {line}" for at, line in list(self.descriptions)[-5:])

    def analysis(self) -> dict[str, Any]:
        """The end-of-call analysis if :meth:`final_analysis` has made it; else what was seen, with the
        queries unanswered (the vision LLM is asked only by :meth:`final_analysis`)."""
        if self._final is not None and self._final.done() and not self._final.cancelled() and not self._final.exception():
            return self._final.result()
        queries = [{"query": q, "answer": "not answered: the vision LLM was not asked yet"}
                   for q in self._params.perception_analysis_queries]
        return {"analysis": self._seen_summary(), "queries": queries, "frames_analysed": self.readings}

    async def final_analysis(self) -> dict[str, Any]:
        """Each ``perception_analysis_queries`` answered by the vision LLM from the frames kept over the call.

        Asked once (later calls get the same answer), within ``analysis_timeout_s``; never raises: a failure
        is an analysis that says it failed.
        """
        if self._final is None:
            self._final = asyncio.ensure_future(self._analyse_call())
        return await asyncio.shield(self._final)

    async def _analyse_call(self) -> dict[str, Any]:
        queries = self._params.perception_analysis_queries
        if not queries:
            return {"analysis": self._seen_summary(), "queries": [], "frames_analysed": self.readings}
        frames = self.kept_frames()
        if not frames:
            return self._failed_analysis("no camera frame was seen")
        if self._rejected:
            return self._failed_analysis("the vision LLM rejected the key")
        timeout = self._params.analysis_timeout_s
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=self._headers()) as client:
                message = await asyncio.wait_for(self._complete(client, self._analysis_request(frames)), timeout)
        except VisionLLMError as e:
            logger.warning(f"{self}: the perception analysis failed: the vision LLM at {self._server} {e.reason}")
            return self._failed_analysis(f"the vision LLM {e.reason}")
        except TimeoutError:
            logger.warning(f"{self}: the perception analysis failed: no answer in {timeout:g} s")
            return self._failed_analysis(f"no answer in {timeout:g} s")
        except Exception as e:  # the call's end must never fail here
            logger.opt(exception=e).error(f"{self}: the perception analysis failed")
            return self._failed_analysis(type(e).__name__)
        answers = split_answers(message_text(message), len(queries))
        pairs = [{"query": q, "answer": a} for q, a in zip(queries, answers)]
        text = " ".join(f"{p['query'].strip()} {p['answer']}." for p in pairs)
        return {"analysis": text, "queries": pairs, "frames_analysed": self.readings}

    def _analysis_request(self, frames: list[tuple[float, str]]) -> dict[str, Any]:
        queries = self._params.perception_analysis_queries
        questions = "\n".join(f"{i}. {q.strip()}" for i, q in enumerate(queries, 1))
        notes = "\n".join(f"at {at:g} s: {line}" for at, line in self.descriptions) or "none"
        content: list[dict[str, Any]] = [
            {"type": "text", "text": f"Questions:\n{questions}\n\nNotes made during the call:\n{notes}"}
        ]
        for at, url in frames:
            content += [{"type": "text", "text": f"The camera at {at:g} s:"}, _image_part(url)]
        return {
            "model": self._params.model,
            "messages": [{"role": "system", "content": ANALYSIS_INSTRUCTION}, {"role": "user", "content": content}],
            "max_tokens": ANALYSIS_MAX_TOKENS_PER_QUERY * len(queries),
            "temperature": 0.2,
            "stream": False,
        }

    def _failed_analysis(self, reason: str) -> dict[str, Any]:
        return {
            "analysis": f"The perception analysis failed: {reason}.",
            "queries": [{"query": q, "answer": f"not answered ({reason})"} for q in self._params.perception_analysis_queries],
            "frames_analysed": self.readings,
            "error": reason,
        }


def _image_part(url: str) -> dict[str, Any]:
    # "low": one small tile (OpenAI bills it as 85 tokens); other servers ignore it.
    return {"type": "image_url", "image_url": {"url": url, "detail": "low"}}
