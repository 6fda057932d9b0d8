"""The perception layer of a persona: its processors, and the fields its engine refuses.

``perception_model="off"`` builds nothing, asks for no camera and loads no
model. ``"landmarks"`` builds :class:`PerceptionProcessor` (the camera tap,
right after the transport's input) and :class:`PerceptionContextProcessor`
(the cue line into the turns' LLM context, right before the LLM); with the
embedded LLM also :class:`CueAnswerProcessor` (right after the LLM: a question
about the user's own picture is answered from the cues) and the line only when
something worth saying changed (every turn with ambient questions).
``"openai"`` builds :class:`VisionLLMPerceptionProcessor` in the tap's place:
every ``vision_interval_s`` it sends the latest frame to a vision LLM over
the OpenAI chat API (``model``, default ``gpt-4o-mini``; ``base_url`` for any
compatible server; the key from ``api_key``, else ``OPENAI_API_KEY``), and
the same context processor puts its description before the user's words.

The end-of-call analysis of either engine is :meth:`PerceptionLayer.analysis`
(awaitable): the vision LLM is asked then, within a timeout, and a failure is
an analysis that says so. The tap's synchronous ``analysis()`` gives the
vision LLM's answer only once that has run; before, what was seen, with the
queries unanswered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bot.settings import Settings
from personas.model import Persona
from processors.perception.answers import CueAnswerProcessor
from processors.perception.processor import PerceptionContextProcessor, PerceptionParams, PerceptionProcessor
from processors.perception.queries import parse_tools, topic_list, unanswerable
from processors.perception.vision_llm import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    VisionLLMParams,
    VisionLLMPerceptionProcessor,
)

# The size of the camera frames perception asks the page for.
PERCEPTION_FRAME_WIDTH = 320
PERCEPTION_FRAME_HEIGHT = 240
# Screen-share frames per second handed to perception (OCR reads one every few seconds).
SCREEN_FRAMERATE = 1


@dataclass
class PerceptionLayer:
    """The processors of one conversation's perception.

    ``tap`` right after the transport's input, ``context`` right before the
    LLM, and ``answers`` (landmarks with the embedded LLM) right after it.
    """

    tap: PerceptionProcessor
    context: PerceptionContextProcessor
    answers: CueAnswerProcessor | None = None

    async def analysis(self) -> dict[str, Any]:
        """The end-of-call analysis (``perception_analysis_queries`` answered), for either engine."""
        return await self.tap.final_analysis()

    @property
    def has_analysis(self) -> bool:
        """Whether the call has an analysis to report: a frame was read, or the persona asked questions.

        A call whose peer sent no camera (an API client, an audio-only page)
        under a persona with no analysis queries has nothing to say.
        """
        return self.tap.readings > 0 or bool(self.tap.analysis_queries)


def perception_on(persona: Persona) -> bool:
    return persona.layers.perception.perception_model != "off"


# The fields only the vision LLM engine takes.
VISION_FIELDS = ("model", "base_url", "api_key", "vision_interval_s")


def _vision_fields_set(persona: Persona) -> list[str]:
    """The vision-only fields the persona sets, each as ``name=value`` (a key is never shown)."""
    perception = persona.layers.perception
    named = []
    for name in VISION_FIELDS:
        value = getattr(perception, name)
        if name == "vision_interval_s" and name not in perception.model_fields_set:
            continue
        if value is None:
            continue
        named.append(f"{name} (set)" if name == "api_key" else f"{name}={value!r}")
    return named


def perception_refusals(persona: Persona) -> list[str]:
    """Perception fields set that would do nothing with the persona's engine, each with why."""
    perception = persona.layers.perception
    engine = perception.perception_model
    refused: list[str] = []
    for field in _vision_fields_set(persona) if engine != "openai" else []:
        refused.append(
            f"layers.perception.{field} does nothing with perception_model='{engine}'; "
            f"{', '.join(VISION_FIELDS)} are for perception_model='openai'"
        )
    if engine == "off":
        for name in ("ambient_awareness_queries", "perception_analysis_queries", "perception_tools", "perception_tool_prompt"):
            if getattr(perception, name):
                refused.append(f"layers.perception.{name} needs a perception_model; 'off' sees nothing")
        if "fps" in perception.model_fields_set:
            refused.append("layers.perception.fps needs a perception_model; 'off' samples no camera")
        return refused
    if perception.perception_tool_prompt and not perception.perception_tools:
        refused.append("layers.perception.perception_tool_prompt needs perception_tools to call")
    if engine == "openai":
        # The vision LLM answers any question and decides when to call a tool: only the tools' format is checked.
        from bot.engines import tool_problem

        for i, tool in enumerate(perception.perception_tools):
            problem = tool_problem(tool)
            if problem:
                refused.append(f"layers.perception.perception_tools[{i}]: {problem}")
        return refused
    for name in ("ambient_awareness_queries", "perception_analysis_queries"):
        for question in unanswerable(getattr(perception, name)):
            refused.append(
                f"layers.perception.{name}: {question!r} asks about nothing perception_model="
                f"'{perception.perception_model}' sees; it answers about: {topic_list()}"
            )
    _tools, tool_refusals = parse_tools(perception.perception_tools, perception.perception_tool_prompt)
    refused.extend(f"layers.perception.{reason}" for reason in tool_refusals)
    return refused


def vision_api_key(persona: Persona, settings: Settings) -> SecretStr | None:
    """The vision LLM's key: the persona's, else ``OPENAI_API_KEY``; None for a ``base_url`` with neither.

    Raises:
        MissingKeyError: OpenAI itself (no ``base_url``) and no key anywhere.
    """
    perception = persona.layers.perception
    if perception.api_key is not None:
        return perception.api_key
    if perception.base_url and settings.openai_api_key is None:
        return None  # a local server (vLLM, Ollama, llama.cpp) needs none
    return SecretStr(
        settings.require_key("OPENAI_API_KEY", persona=persona.persona_name, needed_by="perception=openai")
    )


def build_perception(persona: Persona, settings: Settings, *, conversation_id: str = "") -> PerceptionLayer | None:
    """The persona's perception processors; None when it is off (nothing built, nothing loaded)."""
    perception = persona.layers.perception
    if perception.perception_model == "off":
        return None
    if perception.perception_model == "openai":
        vision = VisionLLMPerceptionProcessor(
            params=VisionLLMParams(
                framerate=perception.fps,
                conversation_id=conversation_id,
                model=perception.model or DEFAULT_MODEL,
                base_url=perception.base_url or DEFAULT_BASE_URL,
                api_key=vision_api_key(persona, settings),
                interval_s=perception.vision_interval_s,
                ambient_awareness_queries=perception.ambient_awareness_queries,
                perception_analysis_queries=perception.perception_analysis_queries,
                perception_tools=perception.perception_tools,
                perception_tool_prompt=perception.perception_tool_prompt,
            )
        )
        return PerceptionLayer(tap=vision, context=PerceptionContextProcessor(perception=vision))
    tap = PerceptionProcessor(
        params=PerceptionParams(
            framerate=perception.fps,
            conversation_id=conversation_id,
            cache_dir=settings.cvi_cache_dir,
            ambient_awareness_queries=perception.ambient_awareness_queries,
            perception_analysis_queries=perception.perception_analysis_queries,
            perception_tools=perception.perception_tools,
            perception_tool_prompt=perception.perception_tool_prompt,
        )
    )
    # The packaged small LLM answers questions about the user's picture wrongly
    # and answers worse with a line about an ordinary face in every turn
    # (bench/perception_replies.py): with it, the cues answer those questions
    # themselves, and the line comes when something worth saying changed, or
    # every turn when the persona asks ambient questions.
    embedded = persona.layers.llm.engine == "llama_cpp"
    answers = CueAnswerProcessor() if embedded else None
    every_turn = not embedded or bool(perception.ambient_awareness_queries)
    context = PerceptionContextProcessor(perception=tap, every_turn=every_turn, answers=answers)
    return PerceptionLayer(tap=tap, context=context, answers=answers)


def camera_request_for(persona: Persona) -> dict | None:
    """The dev room app message that asks the page for the camera perception needs; None when off."""
    if not perception_on(persona):
        return None
    from bot.devroom import camera_request

    return camera_request(
        framerate=persona.layers.perception.fps, width=PERCEPTION_FRAME_WIDTH, height=PERCEPTION_FRAME_HEIGHT
    )
