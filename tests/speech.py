"""Helpers for judging recognised speech: normalisation and word error rate."""

import re

import jiwer

_SPOKEN = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalise(text: str) -> str:
    """Lower case, no punctuation, hyphens as spaces, common abbreviations spelled out."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()
    return " ".join(_SPOKEN.get(w, w) for w in words)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """WER over several utterances, after ``normalise``."""
    return jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses])
