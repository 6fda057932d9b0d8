"""Send a reply's first clause to TTS as soon as it exists, then whole sentences."""

import re
from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

# A clause break: , ; : or a dash, followed by a space (so "1,000" is not one).
CLAUSE_BREAK = re.compile(r"(?<=[^\d\s])[,;:](?=\s)|\s[-–—](?=\s)")


class FirstClauseTextAggregator(SimpleTextAggregator):
    """Sentence aggregation, except that the first words of a reply leave early.

    The LLM writes about 50 tokens a second here; waiting for a whole first
    sentence ("In Lisbon, there's a wide range of dishes to choose from.")
    costs 0.3 s before the voice can start. The first clause of at least
    ``min_words`` words ("In Lisbon,") is enough to begin speaking; the rest
    of the reply goes sentence by sentence.

    Args:
        min_words: Fewest words the first chunk may have.
        **kwargs: Passed to ``SimpleTextAggregator``.
    """

    def __init__(self, *, min_words: int = 2, **kwargs):
        super().__init__(**kwargs)
        self._min_words = min_words
        self._first_sent = False

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """Yield sentences, and the reply's first clause as soon as it is complete."""
        async for aggregation in super().aggregate(text):
            self._first_sent = True
            yield aggregation
        if self._first_sent or self._aggregation_type == TextType.TOKEN:
            return
        for match in CLAUSE_BREAK.finditer(self._text):
            head = self._text[: match.end()]
            if len(head.split()) >= self._min_words:
                self._text = self._text[match.end() :]
                self._first_sent = True
                yield Aggregation(text=head.strip(), type=TextType.SENTENCE)
                return

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
