"""Whisper's repetition loops, as they came out of it on synthesized questions, collapse to one copy;
a person's own repeats stay."""

import pytest

from processors.stt.whisper import collapse_repeats, compression_ratio

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("looped", "meant"),
    [
        # Cut off by the length limit mid-copy, as Whisper base wrote them.
        ("I love seafood I love seafood I love seafood I love seafood I", "I love seafood"),
        ("Where should I eat tonight? Where should I eat tonight? Where sh", "Where should I eat tonight?"),
        ("It is mainly a lot of money. It is mainly a lot of money. It i", "It is mainly a lot of money."),
        ("Sintra, Sintra, Lotte, Sintra, Sintra, Lotte, Sintra, Sintra, Lotte, Sintr", "Sintra, Sintra, Lotte,"),
        ("Do you have any advice? Do you have any advice?", "Do you have any advice?"),
        ("I am tired. Do you have any advice? Do you have any advice? Do you", "I am tired. Do you have any advice?"),
    ],
)
def test_loops_collapse_to_one_copy(looped, meant):
    assert collapse_repeats(looped) == meant


@pytest.mark.parametrize(
    "said",
    ["very very good", "no, no, no.", "Hello? Hello?", "I think, I think we should go.", "the the the cat", ""],
)
def test_a_persons_own_repeats_stay(said):
    assert collapse_repeats(said) == said


def test_a_long_loop_compresses_past_the_threshold():
    assert compression_ratio("What would you skate? " * 20) > 2.4 > compression_ratio("What would you suggest?")


def test_a_cut_off_copy_at_the_end_goes():
    assert collapse_repeats("Let's dream a lot today. What can we do indoors? What can we") == (
        "Let's dream a lot today. What can we do indoors?"
    )
    # ... but not a sentence that merely starts like the one before it.
    said = "Where is the castle? Where is the best view of it?"
    assert collapse_repeats(said) == said


def test_an_unsure_decode_is_kept_and_only_a_looping_one_is_decoded_again():
    """On the bot's pauses an unsure decode (an unfinished sentence, an unusual voice) gave the same words again."""
    from processors.stt.whisper import _Decoded

    unsure = _Decoded(text="What so naive", avg_logprob=-1.4, hit_limit=False, no_speech_prob=0.1)
    loop = _Decoded(text="My feet hurt, my feet hurt, my feet hurt", avg_logprob=-0.3, hit_limit=False, no_speech_prob=0.1)
    cut = _Decoded(text="Where can I", avg_logprob=-0.2, hit_limit=True, no_speech_prob=0.1)
    assert not unsure.degenerate
    assert loop.degenerate and cut.degenerate


@pytest.mark.parametrize(
    ("first", "decoded_again"),
    [
        # Whole sentences read twice into the trailing silence: kept once, no second decode.
        ("Is Sintra worth a day trip? Is Sintra worth a day trip", False),
        ("I love seafood. I love seafood. I love seafood.", False),
        # A loop that is not a whole sentence: decoded again with more silence.
        ("I love seafood I love seafood I love seafood I love seafood I", True),
        ("Where can I Where can I Where can I", True),
    ],
)
def test_a_loop_of_whole_sentences_is_kept_once_without_a_second_decode(monkeypatch, first, decoded_again):
    """The second decode costs as much as the first (a 2-core machine: about 0.2-0.5 s); where the loop
    merely repeats a whole sentence, its first copy is what was said."""
    import numpy as np

    from processors.stt import whisper as stt

    calls = []

    def decode(model, audio, *, tail_secs, **_options):
        calls.append(tail_secs)
        text = first if tail_secs == stt.TAIL_SILENCE_SECS else "What was said."
        return stt._Decoded(text=text, avg_logprob=-0.3, hit_limit=False, no_speech_prob=0.1)

    monkeypatch.setattr(stt, "_decode_trimmed", decode)
    text = stt.transcribe_trimmed(None, np.zeros(16000, np.float32))
    assert (len(calls) == 2) == decoded_again
    assert text == ("What was said." if decoded_again else stt.collapse_repeats(first))
