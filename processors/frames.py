"""Frames this project adds to pipecat's set."""

from dataclasses import dataclass, field

from pipecat.frames.frames import DataFrame, SystemFrame


@dataclass
class PhonemeTimingFrame(DataFrame):
    """Phoneme timing for the TTS audio that immediately follows this frame.

    A TTS service that knows its phoneme timing (piper) pushes one of these
    just before the ``TTSAudioRawFrame``s of the same sentence. The replica
    renderer lines the phonemes up with the audio samples that follow it.

    Parameters:
        phonemes: ``(phoneme, num_samples)`` pairs in order, IPA symbols as
            espeak-ng writes them (a space or punctuation is a pause).
        sample_rate: Sample rate the sample counts refer to.
        context_id: The TTS context the audio belongs to.
    """

    phonemes: list[tuple[str, int]] = field(default_factory=list)
    sample_rate: int = 22050
    context_id: str | None = None


@dataclass
class UtteranceTranscribedFrame(DataFrame):
    """The STT is done with one VAD-bounded utterance (pushed after its transcript, if any).

    With it, the turn strategy knows when the words of every utterance of the
    turn are in, even when one of them held no words (a cough), instead of
    guessing from a timeout; a busy machine can deliver a transcript seconds late.

    Parameters:
        text: The utterance's transcript; empty when it held no words.
    """

    text: str = ""


@dataclass
class SentenceEndFrame(DataFrame):
    """The reply text pushed so far ends with a whole sentence.

    The spoken-reply shaper pushes it after a sentence it knows is complete
    (it releases a sentence only once the words after it have begun), while
    it holds the next sentence back until that one is whole too. A TTS that
    waits for the next words to confirm a sentence's end (pipecat's sentence
    aggregators do) may speak what it holds at once: otherwise the end of a
    sentence waits for the whole next one, and the voice falls silent
    between them when the LLM writes slowly.
    """


@dataclass
class StopReplyFrame(SystemFrame):
    """Upstream, to the LLM: nothing more of the reply it is writing will be spoken; it may stop.

    The spoken-reply shaper sends it once the reply has its last sentence,
    and the cue answers once they speak in the LLM's place. On two cores the
    tokens nobody hears take CPU from the voice and the video.
    """
