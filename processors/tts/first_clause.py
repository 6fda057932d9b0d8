"""Send a reply's first clause to TTS as soon as it exists, then whole sentences."""

import re
from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.string import SENTENCE_ENDING_PUNCTUATION
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator, _LookaheadState

# A clause break: , ; : or a dash, followed by a space (so "1,000" is not one).
CLAUSE_BREAK = re.compile(r"(?<=[^\d\s])[,;:](?=\s)|\s[-–—](?=\s)")


# Words a spoken phrase can start with: a first chunk may end just before one.
PHRASE_STARTS = frozenset(
    "and but or so because at in on for with from by near to where when which while after before if then "
    "is are was were".split()
)


class FirstClauseTextAggregator(SimpleTextAggregator):
    """Sentence aggregation, except that the first words of a reply leave early.

    The LLM writes about 30 tokens a second here; waiting for a whole first
    sentence ("In Lisbon, there's a wide range of dishes to choose from.")
    costs 0.3 s or more before the voice can start. The first clause of at
    least ``min_words`` words ("In Lisbon,") is enough to begin speaking. A
    first sentence with no early comma leaves at its first phrase break after
    ``phrase_words`` words ("You can watch the sunset | at a miradouro."):
    just before a preposition, conjunction or "is", where a speaker may
    breathe; failing that, at ``max_words``. Piper makes a chunk's audio all
    at once, in time that grows with its length: a 9-word first chunk took
    1.0 s on two busy cores before the first sound, so it is kept short.
    The rest of the reply goes sentence by sentence.

    Args:
        min_words: Fewest words the first chunk may have at a clause break.
        phrase_words: Fewest words it may have at a phrase break (0: never).
        max_words: With neither break, the first chunk leaves at this many words.
        **kwargs: Passed to ``SimpleTextAggregator``.
    """

    def __init__(self, *, min_words: int = 2, phrase_words: int = 3, max_words: int = 7, **kwargs):
        super().__init__(**kwargs)
        self._min_words = min_words
        self._phrase_words = phrase_words
        self._max_words = max_words
        self._first_sent = False

    def _phrase_break(self) -> int | None:
        """Where the text so far may be cut before a phrase, if anywhere."""
        if not self._phrase_words:
            return None
        words = list(re.finditer(r"\S+", self._text))
        for i, word in enumerate(words[:-1]):  # the last word may be unfinished
            if i >= self._phrase_words and word.group().lower() in PHRASE_STARTS:
                return word.start()
        if len(words) > self._max_words:
            return words[self._max_words].start()  # no break in sight: don't wait for one
        return None

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """Yield sentences, and the reply's first clause as soon as it is complete."""
        async for aggregation in super().aggregate(text):
            self._first_sent = True
            yield aggregation
        if self._first_sent or self._aggregation_type == TextType.TOKEN:
            return
        cut = None
        for match in CLAUSE_BREAK.finditer(self._text):
            if len(self._text[: match.end()].split()) >= self._min_words:
                cut = match.end()
                break
        if cut is None:
            cut = self._phrase_break()
        if cut is not None:
            head, self._text = self._text[:cut], self._text[cut:]
            self._first_sent = True
            yield Aggregation(text=head.strip(), type=TextType.SENTENCE)

    def take_sentence(self) -> Aggregation | None:
        """What the buffer holds, if it ends a sentence, without waiting for the words after it.

        For a source that vouches the sentence is whole (see
        ``processors.frames.SentenceEndFrame``); the reply goes on, so the
        next chunk is not a first clause.
        """
        text = self._text.strip()
        if not text or text[-1] not in SENTENCE_ENDING_PUNCTUATION:
            return None
        self._text = ""
        self._lookahead_state = _LookaheadState.IDLE
        self._first_sent = True
        return Aggregation(text=text, type=TextType.SENTENCE)

    async def flush(self) -> Aggregation | None:
        """End of a reply: the next reply starts with a clause again."""
        self._first_sent = False
        return await super().flush()

    async def reset(self):
        """Forget the buffer and start a new reply."""
        self._first_sent = False
        await super().reset()

    async def handle_interruption(self):
        """An interruption ends the reply."""
        self._first_sent = False
        await super().handle_interruption()
