"""Questions about what the camera shows, answered from the cues themselves.

"Can you see me?", "Am I smiling?", "How many people do you see?": the cues
already hold the answer. The packaged 0.5B LLM, given the cue line, answered
such questions wrongly or not at all in most tries (``bench/perception_replies.py``
counts it: "Yes, I am smiling!", "I see a pastel de nata"), so with the
embedded LLM the replica says the cues' answer itself.

:func:`camera_question` finds such a question in the user's words (strict
patterns: a question about the user's own picture, not any sentence with
"look" or "see" in it), :func:`answer_from_cues` words the answer, and
:class:`CueAnswerProcessor`, right after the LLM, speaks it in place of the
LLM's reply for that turn. It sits after the LLM's speculation gate, so an
early reply that is withdrawn is withdrawn here too, and it is told the
answer by :class:`~processors.perception.processor.PerceptionContextProcessor`
with each LLM context (so every reply has its own answer or none).
"""

from __future__ import annotations

import re
from typing import Any

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection

from processors.frames import StopReplyFrame
from processors.llm.spoken_reply import ReplyRewriter

_ASKED_STATE = {
    "smiling": "smiling", "happy": "smiling", "laughing": "smiling",
    "frowning": "frowning", "sad": "frowning", "angry": "frowning", "upset": "frowning", "worried": "frowning",
    "unhappy": "frowning", "annoyed": "frowning", "confused": "frowning",
    "surprised": "surprised", "shocked": "surprised",
}
_STATE_WORDS = "|".join(_ASKED_STATE)

# kind -> pattern, in the order they are tried (the most specific first).
QUESTIONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        ("screen", r"\b(?:can|do|could) you (?:see|read) (?:my|the) (?:shared )?screen\b|\bwhat(?:'s| is| does) on my screen\b"
                   r"|\bwhat does my screen say\b|\bread (?:my|the) (?:shared )?screen\b"),
        ("attention", r"\bam i (?:looking at (?:you|the camera|the lens)|making eye contact)\b"
                      r"|\bhow(?:'s| is) my eye contact\b|\bwhere am i looking\b"),
        ("expression", rf"\b(?:am i|do i look) (?:\w+ ){{0,2}}(?P<state>{_STATE_WORDS})\b"
                       r"|\bwhat(?:'s| is) my (?:facial )?(?:expression|mood)\b|\bwhat (?:face|expression) am i making\b"),
        ("people", r"\bhow many (?:people|faces|persons) (?:do you see|can you see|are with me|are in (?:the|my) (?:room|picture|frame|shot|video)"
                   r"|are (?:there|here)\b(?! (?:in|at|on|for|from|of|who|that|living)\b))"
                   r"|\b(?:is|are) there (?:anyone|someone|somebody|other people|others) (?:else )?(?:here|with me|behind me|in the (?:room|picture|frame|shot))\b"
                   r"|\bam i alone(?: here| in the (?:room|picture|frame|shot))?$"),
        ("light", r"\b(?:is it|am i) too dark(?: (?:here|in here|for you|on camera|to see me))?(?: (?:can|do|am|is|how|what)\b|$)|\bhow(?:'s| is) my (?:lighting|light)\b"
                  r"|\bis (?:my|the) (?:lighting|light) (?:ok|okay|good|fine|all right|alright|enough)\b"),
        ("look", r"\bhow do i look\b|\bhow am i looking\b|\bwhat do i look like\b|\bdo i look (?:ok|okay|good|fine|all right|alright)\b"),
        ("see", r"\b(?:can|do|could) you (?:see|hear and see) (?:me|us|my face)\b|\bare you (?:seeing|watching) me\b"
                r"|\bwhat (?:do|can) you see\b|\bwhat are you seeing\b|\bam i (?:on camera|in (?:the )?(?:picture|frame|shot|view))\b"
                r"|\bis my (?:camera|video) (?:on|working)\b"),
    )
)

_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def camera_question(text: str) -> tuple[str, str | None] | None:
    """``(kind, asked state)`` when ``text`` asks about the user's own picture, else None."""
    words = " ".join(re.sub(r"[^a-z' ]+", " ", text.lower().replace("’", "'")).split())
    for kind, pattern in QUESTIONS:
        match = pattern.search(words)
        if match:
            state = match.groupdict().get("state")
            return kind, (_ASKED_STATE.get(state) if state else None)
    return None


def _value(cues: dict[str, Any], name: str) -> Any:
    return (cues.get(name) or {}).get("value")


def _expression_phrase(expression: str | None) -> str | None:
    return {
        "smiling": "you're smiling",
        "frowning": "you seem to be frowning",
        "surprised": "you look surprised",
        "neutral": "you look calm",
    }.get(expression or "")


def _attention_phrase(attention: str | None) -> str | None:
    return {"looking": "looking right at me", "away": "looking away from the camera"}.get(attention or "")


def _details(cues: dict[str, Any]) -> str:
    """What the cues say of the person, as one clause: "you're smiling and looking right at me"."""
    expression = _expression_phrase(_value(cues, "expression"))
    attention = _attention_phrase(_value(cues, "attention"))
    if expression and attention:
        return f"{expression} and {attention}"
    if attention:
        return f"you're {attention}"
    return expression or ""


def _extras(cues: dict[str, Any]) -> str:
    parts = []
    gesture = _value(cues, "gesture")
    if gesture == "nodded":
        parts.append(" You just nodded, too.")
    elif gesture == "shook head":
        parts.append(" You just shook your head, too.")
    if _value(cues, "lighting") == "dark":
        parts.append(" It's quite dark where you are, though.")
    return "".join(parts)


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] if text else text


def answer_from_cues(kind: str, asked: str | None, cues: dict[str, Any], *, screen_text: str | None = None) -> str:
    """The replica's answer to a question of ``kind`` (see :data:`QUESTIONS`) from the current cues."""
    faces = _value(cues, "faces")
    if kind == "screen":
        if screen_text:
            return f'Yes, I can see your shared screen. It reads: "{screen_text[:100].strip()}".'
        return "I don't see a shared screen right now."
    if faces is None:
        return "I can't see you yet; your camera hasn't come through to me."
    if faces == 0:
        dark = " It's also too dark to make much out." if _value(cues, "lighting") == "dark" else ""
        return "I can't see anyone right now. Are you in front of the camera?" + dark
    others = f" I can see {_NUMBERS.get(faces, str(faces))} people, too." if faces > 1 else ""
    expression = _value(cues, "expression")
    attention = _value(cues, "attention")
    details = _details(cues)
    if kind == "people":
        if faces == 1:
            return "I can see just you."
        return f"I can see {_NUMBERS.get(faces, str(faces))} people."
    if kind == "light":
        if _value(cues, "lighting") == "dark":
            return "It's quite dark where you are; a bit more light on your face would help me see you."
        return "Your lighting looks fine; I can see you clearly."
    if kind == "attention":
        if attention == "looking":
            return "Yes, you're looking right at me." + others
        if attention == "away":
            return "Not right now; you're looking away from the camera." + others
        return "I can see you, but I can't tell where you're looking." + others
    if kind == "expression":
        phrase = _expression_phrase(expression)
        if phrase is None:
            return "I can see you, but I can't make out your expression." + others
        if asked is not None and asked == expression:
            return f"Yes, {phrase}." + others
        if asked is not None:
            return f"Not that I can see; {phrase}." + others
        return _sentence(f"{phrase}.") + others
    if kind == "look":
        mood = {"smiling": "happy", "frowning": "a little worried", "surprised": "surprised", "neutral": "calm"}
        look = mood.get(expression or "", "fine")
        tail = f", {details}" if details else ""
        return f"You look {look} from here{tail}." + others + _extras(cues)
    # "see": can you see me, what do you see.
    if faces > 1:
        return f"Yes, I can see {_NUMBERS.get(faces, str(faces))} people" + (f", and {details}." if details else ".") + _extras(cues)
    return "Yes, I can see you" + (f": {details}." if details else ".") + _extras(cues)


class CueAnswerProcessor(ReplyRewriter):
    """Right after the LLM: for a turn that asked about the camera, say the cues' answer instead of the LLM's.

    :meth:`expect` is called for every LLM context on its way to the LLM
    (``None``: that reply is the LLM's own). The answer is the whole reply,
    pushed and ended at the reply's start frame, so it is spoken as soon as
    the reply is let through; the LLM's words and end for it are dropped.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._expected: str | None = None
        self._replacing = False
        self.answered: list[str] = []

    def expect(self, answer: str | None) -> None:
        """The answer the next reply says instead of the LLM's (None: the LLM's own)."""
        self._expected = answer

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, LLMFullResponseStartFrame):
                self._replacing = self._expected is not None
                answer, self._expected = self._expected, None
                await self.push_frame(frame, direction)
                if answer is not None:
                    # The whole reply at once, ended here: the voice does not
                    # wait for the LLM to finish the words it drops.
                    self.answered.append(answer)
                    await self.push_frame(StopReplyFrame(), FrameDirection.UPSTREAM)
                    await self.push_frame(LLMTextFrame(answer))
                    await self.push_frame(LLMFullResponseEndFrame())
                return
            if isinstance(frame, (LLMTextFrame, LLMFullResponseEndFrame)) and self._replacing:
                if isinstance(frame, LLMFullResponseEndFrame):
                    self._replacing = False
                return  # the LLM's words (and end) for a question the cues answered
            if isinstance(frame, (InterruptionFrame, EagerEndOfTurnCancelFrame)):
                self._replacing = False
        await self.push_frame(frame, direction)
