"""The first clause of a reply goes to TTS early; the rest goes by sentence."""

import pytest

from processors.tts.first_clause import FirstClauseTextAggregator

pytestmark = pytest.mark.unit


async def feed(aggregator, tokens):
    out = []
    for token in tokens:
        out += [a.text async for a in aggregator.aggregate(token)]
    return out


def tokens(text):
    return [w + " " for w in text.split(" ")]


async def test_a_two_word_opening_leaves_at_once():
    agg = FirstClauseTextAggregator()
    out = await feed(agg, tokens("In Lisbon, there's a wide range of dishes. Try"))
    assert out == ["In Lisbon,", "there's a wide range of dishes."]


async def test_first_clause_leaves_early_then_sentences():
    agg = FirstClauseTextAggregator(min_words=3)
    out = await feed(agg, tokens("In Lisbon, there's a wide range, of dishes to try. Try the sardines. And"))
    assert out[0] == "In Lisbon, there's a wide range,"
    assert out[1] == "of dishes to try."
    assert out[2] == "Try the sardines."
    assert (await agg.flush()).text == "And"


async def test_short_clauses_and_numbers_wait():
    agg = FirstClauseTextAggregator(min_words=4)
    out = await feed(agg, tokens("Yes, it costs 1,000 euros in total, I think."))
    assert out == ["Yes, it costs 1,000 euros in total,"]
    assert (await agg.flush()).text == "I think."


async def test_each_reply_starts_with_a_clause_again():
    agg = FirstClauseTextAggregator(min_words=3)
    await feed(agg, tokens("One two three four, five. Six seven,"))
    await agg.flush()
    out = await feed(agg, tokens("Alpha beta gamma delta, epsilon."))
    assert out == ["Alpha beta gamma delta,"]
    assert (await agg.flush()).text == "epsilon."
    await agg.handle_interruption()
    out = await feed(agg, tokens("Alpha beta gamma delta, epsilon."))
    assert out[0] == "Alpha beta gamma delta,"


async def test_a_long_first_sentence_leaves_at_its_first_phrase_break():
    agg = FirstClauseTextAggregator()
    out = await feed(agg, tokens("You can watch the sunset at a miradouro in Graca. Go"))
    assert out == ["You can watch the sunset", "at a miradouro in Graca."]


async def test_no_phrase_break_before_enough_words_or_inside_a_word():
    agg = FirstClauseTextAggregator()
    # "in" comes too early; "Lisboa" is not a phrase start; the last word may be unfinished.
    assert await feed(agg, tokens("Stay in Lisboa for")) == []
    assert await feed(FirstClauseTextAggregator(), ["Stay in Lisboa for", " a week and"]) == ["Stay in Lisboa"]
    agg = FirstClauseTextAggregator(phrase_words=0, max_words=9)
    assert await feed(agg, tokens("You can watch the sunset at a miradouro in")) == []


async def test_a_subject_breaks_before_is_or_a_preposition_and_a_run_on_leaves_at_seven_words():
    """Piper makes a chunk's audio all at once: the first chunk is kept short (9 words took 1.0 s on busy cores)."""
    out = await feed(FirstClauseTextAggregator(), tokens("Shodai Dyn Lisbon is a traditional Portuguese restaurant. Go"))
    assert out == ["Shodai Dyn Lisbon", "is a traditional Portuguese restaurant."]
    out = await feed(FirstClauseTextAggregator(), tokens("Watching the sunset from the castle is lovely. Go"))
    assert out == ["Watching the sunset", "from the castle is lovely."]
    out = await feed(FirstClauseTextAggregator(), tokens("One two three four five six seven eight nine ten eleven. Go"))
    assert out == ["One two three four five six seven", "eight nine ten eleven."]
