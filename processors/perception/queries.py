"""A persona's perception questions and tools, answered and fired from the cues.

The landmarks engine sees a fixed set of things (:data:`TOPICS`): whether
someone is there and how many, where they look, their expression, nods and
shakes, the light, and the text of a shared screen. A question
(``ambient_awareness_queries``, ``perception_analysis_queries``) is matched to
the topics its words name and answered from the cues; a question that names
none of them cannot be answered by this engine, and :func:`unanswerable`
says so at start-up. A perception tool (``perception_tools``) fires when a
cue enters the state its name and description name (:data:`TRIGGERS`), with
the sentences of ``perception_tool_prompt`` that name the tool read as part of
its description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# topic -> words (whole-word prefixes) that name it in a question.
TOPICS: dict[str, tuple[str, ...]] = {
    "presence": ("present", "there", "in view", "visible", "anyone", "anybody", "someone", "somebody",
                 "absent", "left", "leave", "away from", "show", "appear"),
    "people": ("how many", "people", "person", "others", "alone", "multiple", "faces", "crowd", "group"),
    "attention": ("look", "attention", "gaze", "eye contact", "eyes", "distract", "focus", "engaged", "watching"),
    "expression": ("smil", "happy", "frown", "upset", "sad", "angry", "unhappy", "surprise", "expression", "mood",
                   "emotion", "feel", "facial", "confus", "neutral"),
    "gesture": ("nod", "shak", "shook", "agree", "disagree", "gesture"),
    "lighting": ("dark", "light", "bright", "dim"),
    "screen": ("screen", "share", "shared", "text", "reading", "document", "slide", "code", "window"),
}

# (cue, state) -> words in a tool's name or description that ask for it.
TRIGGERS: dict[tuple[str, Any], tuple[str, ...]] = {
    ("faces", 0): ("leave", "left", "absent", "not in view", "out of view", "no one", "nobody", "steps away",
                   "walks away", "disappear", "empty"),
    ("faces", "many"): ("another person", "someone else", "other people", "multiple people", "second person",
                        "more than one", "two people", "others join"),
    ("expression", "smiling"): ("smil", "happy", "laugh"),
    ("expression", "frowning"): ("frown", "upset", "unhappy", "sad", "angry", "confus", "frustrat"),
    ("expression", "surprised"): ("surprise", "shock", "astonish"),
    ("attention", "away"): ("looks away", "looking away", "look away", "distract", "not paying attention",
                            "loses focus", "lost focus", "inattent"),
    ("gesture", "nodded"): ("nod",),
    ("gesture", "shook head"): ("shake", "shakes", "shook"),
    ("lighting", "dark"): ("dark", "poor light", "low light", "dim"),
    ("screen", "text"): ("screen", "shared", "share"),
}


def _words(text: str) -> str:
    return " " + re.sub(r"[^a-z0-9]+", " ", text.lower()).strip() + " "


def _names(text: str, stems: tuple[str, ...]) -> bool:
    words = _words(text)
    # A stem matches at the start of a word (so "smil" finds "smiling", "left" not "cleft").
    return any(re.search(r"(?<![a-z0-9])" + re.escape(stem.lower()), words) for stem in stems)


def topics_of(question: str, *, screen: bool = True) -> list[str]:
    """The topics a question names, in :data:`TOPICS` order."""
    return [t for t, stems in TOPICS.items() if (screen or t != "screen") and _names(question, stems)]


def unanswerable(questions: list[str], *, screen: bool = True) -> list[str]:
    """The questions that name no topic this engine sees."""
    return [q for q in questions if not topics_of(q, screen=screen)]


def topic_list() -> str:
    return ", ".join(TOPICS)


@dataclass(frozen=True)
class PerceptionTool:
    """One perception tool and the cue states that fire it."""

    name: str
    definition: dict[str, Any]
    triggers: tuple[tuple[str, Any], ...]


def _tool_text(tool: dict[str, Any], prompt: str | None) -> tuple[str, str]:
    function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = str(function.get("name") or "")
    parts = [name.replace("_", " "), str(function.get("description") or "")]
    for prop in ((function.get("parameters") or {}).get("properties") or {}).values():
        if isinstance(prop, dict) and prop.get("description"):
            parts.append(str(prop["description"]))
    if prompt and name:
        # The prompt's sentences that name this tool describe when to call it.
        for sentence in re.split(r"(?<=[.!?])\s+", prompt):
            if name in sentence or name.replace("_", " ") in sentence.lower():
                parts.append(sentence)
    return name, " ".join(parts)


def parse_tools(tools: list[dict[str, Any]], prompt: str | None) -> tuple[list[PerceptionTool], list[str]]:
    """The tools with their triggers, and a reason for each tool that cannot fire."""
    parsed, refused = [], []
    for index, tool in enumerate(tools):
        name, text = _tool_text(tool, prompt)
        if not name:
            refused.append(f"perception_tools[{index}] has no function.name")
            continue
        triggers = tuple(key for key, stems in TRIGGERS.items() if _names(text, stems))
        if not triggers:
            refused.append(
                f"perception_tools[{index}] {name!r} names no cue this engine sees; its name, description or the "
                f"perception_tool_prompt must name one of: {trigger_list()}"
            )
            continue
        parsed.append(PerceptionTool(name=name, definition=tool, triggers=triggers))
    return parsed, refused


def trigger_list() -> str:
    return "; ".join(f"{cue}={state} ({stems[0]})" for (cue, state), stems in TRIGGERS.items())


def trigger_state(cue: str, value: Any) -> tuple[str, Any]:
    """The trigger key a cue's new value matches (``faces`` of 2 or more is ``many``)."""
    if cue == "faces" and isinstance(value, int) and value >= 2:
        return ("faces", "many")
    return (cue, value)


def tool_arguments(tool: PerceptionTool, description: str, cue_value: Any) -> dict[str, Any]:
    """Arguments for a tool call: what was seen, in the fields its parameters ask for."""
    function = tool.definition.get("function") if isinstance(tool.definition.get("function"), dict) else tool.definition
    properties = ((function.get("parameters") or {}).get("properties") or {})
    args: dict[str, Any] = {}
    for key, prop in properties.items():
        if not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        if prop.get("enum"):
            choices = [str(c) for c in prop["enum"]]
            match = next((c for c in choices if _names(description, (c,))), choices[0])
            args[key] = match
        elif kind in ("integer", "number"):
            args[key] = cue_value if isinstance(cue_value, int) and not isinstance(cue_value, bool) else 1
        elif kind == "boolean":
            args[key] = True
        else:
            args[key] = description
    return args


def answer_now(question: str, cues: dict[str, Any], *, screen_text: str | None = None) -> str:
    """A short answer to ``question`` from the current cues (``CueTracker.current()``)."""
    answers = []
    faces = (cues.get("faces") or {}).get("value")
    for topic in topics_of(question):
        if topic in ("presence", "people"):
            if faces is None:
                answers.append("not known yet")
            elif faces == 0:
                answers.append("no one is in view")
            else:
                answers.append(f"{faces} {'person is' if faces == 1 else 'people are'} in view")
        elif faces == 0 and topic in ("attention", "expression", "gesture"):
            answers.append("no one is in view")
        elif topic == "attention":
            value = (cues.get("attention") or {}).get("value")
            answers.append({"looking": "looking at the camera", "away": "looking away"}.get(value, "not known"))
        elif topic == "expression":
            value = (cues.get("expression") or {}).get("value")
            answers.append(value or "not known")
        elif topic == "gesture":
            value = (cues.get("gesture") or {}).get("value")
            answers.append(f"just {value}" if value else "no nod or shake just now")
        elif topic == "lighting":
            value = (cues.get("lighting") or {}).get("value")
            answers.append({"dark": "too dark", "ok": "light enough"}.get(value, "not known"))
        elif topic == "screen":
            answers.append(f"the shared screen reads: {screen_text}" if screen_text else "no screen text seen")
    # One answer per distinct fact.
    return "; ".join(dict.fromkeys(answers)) or "not something the camera shows"


def _share(durations: dict[Any, float]) -> str:
    total = sum(durations.values())
    if total <= 0:
        return "not seen"
    parts = sorted(durations.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{value} {round(100 * seconds / total)}%" for value, seconds in parts)


def answer_over_call(question: str, durations: dict[str, dict[Any, float]], gestures: list[tuple[str, float]],
                     screen_texts: list[str]) -> str:
    """An end-of-call answer to ``question``: how much of the time each state held."""
    answers = []
    for topic in topics_of(question):
        if topic in ("presence", "people"):
            faces = durations.get("faces", {})
            answers.append("faces in view: " + _share({f"{k} {'person' if k == 1 else 'people'}": v for k, v in faces.items()}))
        elif topic == "attention":
            answers.append("attention: " + _share(durations.get("attention", {})))
        elif topic == "expression":
            answers.append("expression: " + _share(durations.get("expression", {})))
        elif topic == "gesture":
            counts: dict[str, int] = {}
            for gesture, _at in gestures:
                counts[gesture] = counts.get(gesture, 0) + 1
            answers.append("gestures: " + (", ".join(f"{g} {n}x" for g, n in counts.items()) or "none seen"))
        elif topic == "lighting":
            answers.append("lighting: " + _share(durations.get("lighting", {})))
        elif topic == "screen":
            answers.append("screen text: " + (" | ".join(screen_texts[-3:]) if screen_texts else "none seen"))
    return "; ".join(dict.fromkeys(answers)) or "not something the camera shows"
