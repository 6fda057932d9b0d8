"""The perception layer of a persona: its processors, and the fields its engine refuses.

``perception_model="off"`` builds nothing, asks for no camera and loads no
model. ``"landmarks"`` builds :class:`PerceptionProcessor` (the camera tap,
right after the transport's input) and :class:`PerceptionContextProcessor`
(the cue line into each turn's LLM context, right before the LLM).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.settings import Settings
from personas.model import Persona
from processors.perception.processor import PerceptionContextProcessor, PerceptionParams, PerceptionProcessor
from processors.perception.queries import parse_tools, topic_list, unanswerable

# The size of the camera frames perception asks the page for.
PERCEPTION_FRAME_WIDTH = 320
PERCEPTION_FRAME_HEIGHT = 240
# Screen-share frames per second handed to perception (OCR reads one every few seconds).
SCREEN_FRAMERATE = 1


@dataclass
class PerceptionLayer:
    """The two processors of one conversation's perception."""

    tap: PerceptionProcessor
    context: PerceptionContextProcessor


def perception_on(persona: Persona) -> bool:
    return persona.layers.perception.perception_model != "off"


def perception_refusals(persona: Persona) -> list[str]:
    """Perception fields set that would do nothing with the persona's engine, each with why."""
    perception = persona.layers.perception
    refused: list[str] = []
    if perception.perception_model == "off":
        for name in ("ambient_awareness_queries", "perception_analysis_queries", "perception_tools", "perception_tool_prompt"):
            if getattr(perception, name):
                refused.append(f"layers.perception.{name} needs a perception_model; 'off' sees nothing")
        if "fps" in perception.model_fields_set:
            refused.append("layers.perception.fps needs a perception_model; 'off' samples no camera")
        return refused
    for name in ("ambient_awareness_queries", "perception_analysis_queries"):
        for question in unanswerable(getattr(perception, name)):
            refused.append(
                f"layers.perception.{name}: {question!r} asks about nothing perception_model="
                f"'{perception.perception_model}' sees; it answers about: {topic_list()}"
            )
    _tools, tool_refusals = parse_tools(perception.perception_tools, perception.perception_tool_prompt)
    refused.extend(f"layers.perception.{reason}" for reason in tool_refusals)
    if perception.perception_tool_prompt and not perception.perception_tools:
        refused.append("layers.perception.perception_tool_prompt needs perception_tools to call")
    return refused


def build_perception(persona: Persona, settings: Settings, *, conversation_id: str = "") -> PerceptionLayer | None:
    """The persona's perception processors; None when it is off (nothing built, nothing loaded)."""
    perception = persona.layers.perception
    if perception.perception_model == "off":
        return None
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
    return PerceptionLayer(tap=tap, context=PerceptionContextProcessor(perception=tap))


def camera_request_for(persona: Persona) -> dict | None:
    """The dev room app message that asks the page for the camera perception needs; None when off."""
    if not perception_on(persona):
        return None
    from bot.devroom import camera_request

    return camera_request(
        framerate=persona.layers.perception.fps, width=PERCEPTION_FRAME_WIDTH, height=PERCEPTION_FRAME_HEIGHT
    )
