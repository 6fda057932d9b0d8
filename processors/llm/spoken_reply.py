"""Shape an LLM's streamed reply into what a person accepts hearing.

Small models on a token budget end replies mid-sentence ("The moon is also
known for its"), greet the user by the persona's own name ("Hello, Ava!")
and answer with lists or markdown. ``SpokenReplyShaper`` fixes the text as
it streams; ``SpokenReplyProcessor`` runs it between the LLM and the TTS.

- The reply stops by sentences: at most ``max_sentences`` whole sentences
  are spoken, and an unfinished sentence at the end of the stream (the token
  budget ran out) is dropped.
- The persona's name is removed where it addresses the listener ("Hello,
  Ava." -> "Hello."; "Enjoy your trip, Ava!" -> "Enjoy your trip!"), and
  kept where the persona names itself ("I'm Ava").
- List markers, markdown emphasis, headings, code fences and emoji go;
  line breaks become spaces.

The first sentence streams on at once (the TTS may start on its first
clause); only a word that might begin an address by name ("Hello," then
"Av...") is held until the next word shows what it is. Later sentences are
released whole: the TTS speaks them whole anyway, so holding them costs
nothing audible, and it lets the limit and the trim act before anything of
them is heard.
"""

from __future__ import annotations

import re

from loguru import logger
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.string import match_endofsentence

from processors.frames import SentenceEndFrame, StopReplyFrame

# Words that open or close an address to someone ("Hello, Ava", "Thanks Ava").
_GREETINGS = (
    r"hi|hello|hey|hiya|goodbye|bye|farewell|welcome|thanks|thank you|cheers|sure|of course|ok|okay|"
    r"great|well|yes|no|sorry|dear|good morning|good afternoon|good evening|good night|good luck|"
    r"see you|take care|enjoy|congratulations|wow|oh|absolutely|certainly|nice to meet you"
)
_SENTENCE_END = ".!?"
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U00002b00-\U00002bff\ufe0f\u200d]"
)
_MARKER = r"[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+"
_LIST_MARKER = re.compile(rf"\n{_MARKER}")
_LIST_MARKER_AT_START = re.compile(rf"^{_MARKER}")
_HEADING = re.compile(r"\n[ \t]*#{1,6}[ \t]*")
_HEADING_AT_START = re.compile(r"^[ \t]*#{1,6}[ \t]*")
_EMPHASIS = re.compile(r"\*{1,3}|_{2,3}|`+")
# A fenced code block is not read aloud: dropped whole (an unclosed one is held until it closes).
_CODE_BLOCK = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)
_LEAD_IN_TO_CODE = re.compile(r"[ \t]*:[ \t]*\n*[ \t]*```.*?```", re.DOTALL)
# A line so far that may still turn out to start with a list marker or a heading.
_MARKER_PREFIX = re.compile(r"[ \t]*(?:[-*+•]|#{1,6}|\d{1,2}[.)]?)?[ \t]*")


def clean_markup(text: str, *, at_line_start: bool = True) -> str:
    """Markdown, list markers and emoji removed; line breaks become spaces.

    A list item or a heading on its own line ends with a full stop if it had
    none, so it is spoken as a sentence and not run into the next line.
    Line breaks at the very end are kept: the next line may start a list item.

    Args:
        text: The text to clean.
        at_line_start: Whether ``text`` starts at the start of a line (so a
            marker there is a list marker).
    """
    # A colon that introduced a code block ends its sentence ("Here it is:" + code -> "Here it is.").
    text = _LEAD_IN_TO_CODE.sub(".", _EMOJI.sub("", text))
    text = _CODE_BLOCK.sub("", text)
    text = _HEADING.sub("\n", text)
    text = _LIST_MARKER.sub("\n", text)
    if at_line_start:
        text = _HEADING_AT_START.sub("", text)
        text = _LIST_MARKER_AT_START.sub("", text)
    text = _EMPHASIS.sub("", text)
    # A line that ends without punctuation (a list item, a heading) ends its sentence.
    text = re.sub(r"([^\s.!?,;:])[ \t]*\n", r"\1.\n", text)
    text = re.sub(r"[ \t]*\n+[ \t]*(?=\S)", " ", text)
    return re.sub(r"[ \t]{2,}", " ", text)


def _open_code_fence(text: str) -> int | None:
    """Where an unclosed ``` code fence starts in ``text`` (or a ` run that may become one), if any."""
    if text.count("```") % 2:
        return text.rfind("```")
    trailing = re.search(r"(?<!`)`{1,2}\Z", text)  # a closing ``` is whole: not held
    return trailing.start() if trailing else None


class SpokenReplyShaper:
    """Text in as the LLM streams it, spoken text out. One instance per conversation.

    Call ``feed()`` with each piece of the reply and pass on what it returns;
    call ``finish()`` at the end of the reply and pass on what it returns.
    ``reset()`` forgets a reply (an interruption).

    Args:
        persona_name: The persona's own name, never used to address the user.
        max_sentences: Most sentences a reply may have (None: no limit).
        max_tokens: The LLM's token budget per reply, when known. A reply fed
            in fewer pieces (each streamed piece is about one token) ended by
            itself, not by the budget: an unpunctuated first sentence is then
            closed with a full stop instead of left hanging.
    """

    def __init__(self, *, persona_name: str, max_sentences: int | None = None, max_tokens: int | None = None):
        if max_sentences is not None and max_sentences < 1:
            raise ValueError(f"max_sentences must be at least 1 or None, got {max_sentences}")
        self._name = persona_name.strip()
        self._max_sentences = max_sentences
        self._max_tokens = max_tokens
        name = re.escape(self._name)
        # While streaming, a name counts as an address once punctuation follows
        # it; at the end of the reply, the end counts too.
        self._patterns = {}
        for final, after in ((False, r"(?=[ \t]*[,.!?])"), (True, r"(?=[ \t]*(?:[,.!?]|\Z))")):
            self._patterns[final] = (
                # "Hello, Ava." / "Thanks Ava!" / "Hi Ava, ..." -> keep the greeting and the punctuation.
                (re.compile(rf"\b({_GREETINGS})\b[ \t]*,?[ \t]*{name}\b{after}", re.IGNORECASE), r"\1"),
                # "Enjoy your trip, Ava!" / "That's right, Ava, and ..." -> the name and its comma go.
                (re.compile(rf"[ \t]*,[ \t]*{name}\b{after}"), ""),
            )
        # "Ava, try the tram." at the start of a sentence -> "Try the tram."
        sentence_start = {True: r"^[ \t]*|[.!?][ \t]+", False: r"[.!?][ \t]+"}
        self._leading_name = {
            at_start: re.compile(rf"({starts}){name}[ \t]*,[ \t]*(\w)") for at_start, starts in sentence_start.items()
        }
        # What may still grow into one of the above: held until the next word shows.
        self._risky_tail = re.compile(
            rf"(?:\b(?:{_GREETINGS})\b[ \t]*,?|,|^|[.!?])[ \t]*(?P<word>[^\s,.!?]*)\Z", re.IGNORECASE
        )
        self.reset()

    def reset(self) -> None:
        """Start a new reply."""
        self._raw = ""  # everything fed so far, as the LLM wrote it
        self._pieces = 0  # pieces fed (about one token each)
        self._pending = ""  # cleaned text not yet released (a last line may be raw: see _split_line)
        self._line_start = True  # _pending starts at the start of a line
        self._sentence_start = True  # _pending starts at the start of a sentence
        self._released: list[str] = []
        self._sentences = 0  # whole sentences released
        self._done = False  # the sentence limit is reached: the rest is dropped
        self.dropped = ""  # what was not spoken (an unfinished tail, or past the limit)

    @property
    def raw(self) -> str:
        """The reply as the LLM wrote it."""
        return self._raw

    @property
    def sentences(self) -> int:
        """Whole sentences released so far."""
        return self._sentences

    @property
    def ends_sentence(self) -> bool:
        """Whether the text released so far ends with a whole sentence."""
        return bool(self._released) and self._sentence_start

    @property
    def done(self) -> bool:
        """Whether the sentence limit is reached (the rest of the reply is dropped)."""
        return self._done

    @property
    def spoken(self) -> str:
        """Everything released so far."""
        return "".join(self._released)

    def _address_removed(self, text: str, *, final: bool) -> str:
        for pattern, repl in self._patterns[final]:
            text = pattern.sub(repl, text)
        leading = self._leading_name[self._sentence_start]
        return leading.sub(lambda m: m.group(1) + m.group(2).upper(), text)

    def _split_line(self, text: str) -> tuple[str, str]:
        """``text`` as (settled, unsettled): a last line that may still become a list marker is unsettled."""
        newline = text.rfind("\n")
        if newline < 0 and not self._line_start:
            return text, ""
        line = text[newline + 1 :]
        if line and _MARKER_PREFIX.fullmatch(line):
            return text[: newline + 1], line
        return text, ""

    def _hold_from(self, text: str) -> int:
        """Where the part of ``text`` that may still become an address by name starts."""
        match = self._risky_tail.search(text)
        if match and self._name.lower().startswith(match.group("word").lower()):
            return match.start()
        return len(text)

    def _release(self, text: str, *, whole: bool) -> str:
        if text:
            self._released.append(text)
            self._line_start = False
            self._sentence_start = whole
        return text

    def _limit_reached(self) -> bool:
        return self._max_sentences is not None and self._sentences >= self._max_sentences

    def feed(self, text: str) -> str:
        """Take the next piece of the reply; return the text that may be spoken now."""
        self._raw += text
        self._pieces += 1
        if self._done:
            self.dropped += text
            return ""
        settled, unsettled = self._split_line(self._pending + text)
        fence = _open_code_fence(settled + unsettled)
        if fence is not None:  # inside a code block: hold it until it closes
            settled, unsettled = settled[:fence], settled[fence:] + unsettled
            if not settled:
                self._pending = unsettled
                return ""
        said = self.spoken.rstrip()
        if said and said[-1] not in ".!?,;:" and re.match(r"[ \t]*\n", settled):
            # A line already spoken (a list item) ends here: end its sentence.
            settled = "." + settled.lstrip(" \t")
        pending = self._address_removed(clean_markup(settled, at_line_start=self._line_start), final=False)
        out = []
        while True:
            end = match_endofsentence(pending)
            # A sentence is whole once something follows its end ("Dr." or "3." may go on).
            if not end or not (pending[end:] + unsettled).strip():
                break
            out.append(self._release(pending[:end], whole=True))
            pending = pending[end:]
            self._sentences += 1
            if self._limit_reached():
                self._done = True
                self.dropped += pending + unsettled
                self._pending = ""
                return "".join(out)
        if self._sentences == 0 and pending.strip() and not match_endofsentence(pending):
            # Inside the first sentence: stream on, except what may become "Hello, Ava".
            head = pending[: self._hold_from(pending)]
            # Keep the last word back while it may still grow (or get its comma),
            # and a line break, which may be followed by a list marker.
            head = head[: len(head) - len(re.search(r"\S*\Z", head).group())]
            head = re.sub(r"\s*\n\s*\Z", "", head)
            # A colon waits for what it introduces: code or a list may follow,
            # which is never spoken, and "Here it is:" must not end the reply.
            head = re.sub(r"[ \t]*:[ \t]*\Z", "", head)
            if head.strip():
                out.append(self._release(head, whole=False))
                pending = pending[len(head) :]
        self._pending = pending + unsettled
        return "".join(out)

    def finish(self) -> str:
        """The reply has ended: return what is left to speak.

        Final sentences that end in ``.``, ``!`` or ``?`` are spoken; an
        unfinished one (the token budget ran out) is dropped. When the first
        sentence itself is unfinished, what was already streamed of it cannot
        be taken back, so the rest of it is spoken: as it stands when the
        budget cut it, closed with a full stop when the LLM simply ended
        without one (or what followed its colon was not speakable).
        """
        if self._done:
            return ""
        pending = self._address_removed(
            clean_markup(self._pending, at_line_start=self._line_start), final=True
        ).rstrip()
        self._pending = ""
        out = []
        while pending.strip():
            end = match_endofsentence(pending)
            if not end:
                break
            out.append(self._release(pending[:end], whole=True))
            pending = pending[end:]
            self._sentences += 1
            if self._limit_reached():
                self.dropped += pending
                return "".join(out)
        if self._sentences == 0 and self._ended_by_itself():
            closed = re.sub(r"[ \t,;:]+\Z", "", pending)
            said = self.spoken.rstrip()
            if closed.strip() or (said and not ends_whole(said)):
                out.append(self._release(closed + ".", whole=True))
                self._sentences += 1
        elif pending.strip():
            if self._sentences == 0:
                out.append(self._release(pending, whole=False))
            else:
                self.dropped += pending
        return "".join(out)

    def _ended_by_itself(self) -> bool:
        """The LLM stopped before its token budget (unknown budget: assume it may have been cut)."""
        return self._max_tokens is not None and self._pieces < self._max_tokens - 1


def ends_whole(text: str) -> bool:
    """Whether ``text`` ends at the end of a sentence (closing quotes and brackets aside)."""
    stripped = text.rstrip().rstrip("\"')]”’")
    return bool(stripped) and stripped[-1] in _SENTENCE_END


def addresses_by_name(text: str, name: str) -> bool:
    """Whether ``text`` calls the listener ``name`` ("Hello, Ava", "Bye, Ava!", "Ava, try ...")."""
    name = re.escape(name.strip())
    return bool(
        re.search(rf"\b({_GREETINGS})\b[ \t]*,?[ \t]*{name}\b", text, re.IGNORECASE)
        or re.search(rf",[ \t]*{name}\b[ \t]*(?:[,.!?]|\Z)", text)
        or re.search(rf"(?:^|[.!?][ \t]+){name}[ \t]*,", text.strip())
    )


def has_markup(text: str) -> bool:
    """Whether ``text`` has list markers, markdown, code or emoji (nothing a voice should read)."""
    return bool(
        re.search(r"(^|\n)[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+\S", text)
        or re.search(r"\*\*|__|`|(^|\n)[ \t]*#{1,6}[ \t]", text)
        or _EMOJI.search(text)
    )


def is_list(text: str) -> bool:
    """Whether ``text`` was written as a list (two or more lines starting with a marker)."""
    return len(re.findall(r"(?:^|\n)[ \t]*(?:[-*+•]|\d{1,2}[.)])[ \t]+\S", text)) >= 2


class ReplyRewriter(FrameProcessor):
    """A stage between the LLM and the TTS that rewrites the reply.

    The words it receives are not what the replica says (it pushes its own
    text frames, and its own end frame after the words it let through), so
    observers take the reply from what leaves the last such stage.
    """


class SpokenReplyProcessor(ReplyRewriter):
    """Between the LLM and the TTS: replies end on whole sentences and never address the user by the persona's name.

    Consumes ``LLMTextFrame``s and pushes the shaped text as new ones; every
    other frame passes through in order. See ``SpokenReplyShaper``.

    Args:
        persona_name: The persona's own name.
        max_sentences: Most sentences a spoken reply may have (None: no limit).
        max_tokens: The LLM's token budget per reply (see ``SpokenReplyShaper``).
        **kwargs: Passed to ``FrameProcessor``.
    """

    def __init__(
        self, *, persona_name: str, max_sentences: int | None = None, max_tokens: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self._shaper = SpokenReplyShaper(persona_name=persona_name, max_sentences=max_sentences, max_tokens=max_tokens)
        self._stop_sent = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Shape reply text; pass everything else on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame) and direction == FrameDirection.DOWNSTREAM:
            text = self._shaper.feed(frame.text)
            if self._shaper.done and not self._stop_sent:
                # The reply has its last sentence: the LLM need not write on.
                self._stop_sent = True
                await self.push_frame(StopReplyFrame(), FrameDirection.UPSTREAM)
            if text:
                await self._push_text(text, frame)
                if self._shaper.ends_sentence and not frame.skip_tts:
                    await self.push_frame(SentenceEndFrame())
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            self._shaper.reset()
            self._stop_sent = False
        elif isinstance(frame, LLMFullResponseEndFrame):
            text = self._shaper.finish()
            if text:
                await self._push_text(text, None)
            if self._shaper.dropped.strip():
                tail = self._shaper.dropped.strip()
                reason = "past the sentence limit or unfinished"
                logger.debug(f"{self}: dropped {len(tail)} characters ({reason}): {tail!r}")
            # A new end frame: observers see a frame once, at its first push,
            # and the reply ends here, after its last shaped words, not where
            # the LLM pushed its own end while this still held them.
            end = LLMFullResponseEndFrame()
            end.skip_tts, end.metadata = frame.skip_tts, frame.metadata
            frame = end
        elif isinstance(frame, (InterruptionFrame, EagerEndOfTurnCancelFrame)):
            self._shaper.reset()  # the reply in progress is abandoned
        await self.push_frame(frame, direction)

    async def _push_text(self, text: str, source: LLMTextFrame | None) -> None:
        out = LLMTextFrame(text)
        if source is not None:
            out.skip_tts = source.skip_tts
            out.append_to_context = source.append_to_context
        await self.push_frame(out)
