"""What the guard against Whisper's repetition loops costs, and what it catches.

Transcribes the LibriVox clips (Debian pocketsphinx-testdata) and short
synthesized questions (espeak-ng, flite and festival voices from
``tests/voices.py``) twice each, interleaved so the machine's load falls on
both alike: once with the plain greedy decode on the trimmed window (what
``processors.stt.whisper`` did before the guard) and once with
``transcribe_trimmed`` as it is now (length limit, loop checks, a second
decode with more trailing silence when the first loops, repeats collapsed),
and once as the guard was first built (an unsure decode, below
``LOG_PROB_THRESHOLD``, decoded again too). Also on each synthesized question
cut at 60 %, as the bot transcribes a pause before the turn ends. Prints a
table (time, second decodes, loops, word error rate where the words are
known) and writes ``bench/results/whisper_guard.json``.

    .venv/bin/python bench/whisper_guard.py [--rounds 3]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.settings import Settings  # noqa: E402
from processors.stt import whisper as stt  # noqa: E402
from processors.weights import whisper_model  # noqa: E402
from tests.speech import word_error_rate  # noqa: E402
from tests.voices import VOICES, spoken  # noqa: E402

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
HOTWORDS = "Lisbon, Alfama, Belem, Sintra"  # persona ava's prompt
SENTENCES = [
    "I am feeling a little tired today.", "Do you have any advice?", "I am visiting Lisbon next week.",
    "What should I see first?", "My feet hurt from all the walking.", "Where can I sit down near the river?",
    "We have two small children.", "Which museum would they enjoy?", "I love seafood.",
    "Where should I eat tonight?", "It is raining a lot today.", "What can we do indoors?",
    "What would you suggest?", "My flight leaves on Sunday morning.", "How early should I get to the airport?",
    "I only have one day in the city.", "Is Sintra worth the trip?",
]
RESULTS = ROOT / "bench" / "results"


def plain(model, audio: np.ndarray) -> str:
    """The decode before the guard: greedy, 1 s of trailing silence, up to 200 tokens."""
    return stt._decode_trimmed(
        model, audio, tail_secs=stt.TAIL_SILENCE_SECS, language="en", prompt=HOTWORDS, max_tokens=200, beam_size=1
    ).text


def guarded(model, audio: np.ndarray) -> str:
    return stt.transcribe_trimmed(model, audio, language="en", prompt=HOTWORDS)


def guarded_unsure_too(model, audio: np.ndarray) -> str:
    """The guard as it was first built: an unsure decode (low log-probability) is decoded again too."""
    stt.RETRY_LOW_CONFIDENCE, stt.KEEP_WHOLE_SENTENCE_LOOPS = True, False
    try:
        return guarded(model, audio)
    finally:
        stt.RETRY_LOW_CONFIDENCE, stt.KEEP_WHOLE_SENTENCE_LOOPS = False, True


def guarded_always_again(model, audio: np.ndarray) -> str:
    """The guard before whole-sentence loops were kept once: every loop decoded again."""
    stt.KEEP_WHOLE_SENTENCE_LOOPS = False
    try:
        return guarded(model, audio)
    finally:
        stt.KEEP_WHOLE_SENTENCE_LOOPS = True


ARMS = {"plain": plain, "unsure_too": guarded_unsure_too, "always_again": guarded_always_again, "guarded": guarded}


def looping(text: str) -> bool:
    """Whisper's failure as a listener sees it: a run of words repeated back to back."""
    return stt.collapse_repeats(text) != text or stt.compression_ratio(text) > stt.COMPRESSION_RATIO_THRESHOLD


def clips() -> dict[str, list[tuple[str, str | None, np.ndarray]]]:
    """(label, the words said or None, audio) per set. ``cut mid-sentence``: the first 60 % of each
    synthesized question, as the bot transcribes a pause before the turn ends."""
    sets: dict[str, list] = {"librivox": [], "synthesized": [], "cut mid-sentence": []}
    for path in sorted(LIBRIVOX.glob("*.wav")):
        audio, _ = soundfile.read(str(path), dtype="float32")
        sets["librivox"].append((path.stem, None, audio))
    for sentence in SENTENCES:
        for name, voice in VOICES.items():
            audio = spoken([sentence], voice, pause_secs=0).astype(np.float32) / 32768.0
            sets["synthesized"].append((f"{name}: {sentence}", sentence, audio))
            sets["cut mid-sentence"].append((f"{name}: {sentence} (60 %)", None, audio[: int(len(audio) * 0.6)]))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per clip and decoder (median kept)")
    args = parser.parse_args()
    settings = Settings(_env_file=None)
    model = stt.shared_whisper_model(whisper_model(None, cache_dir=settings.cvi_cache_dir))
    fallbacks = 0
    original = stt._decode_trimmed

    def counting(*a, **kw):
        nonlocal fallbacks
        if kw.get("tail_secs") == stt.FALLBACK_TAIL_SILENCE_SECS:
            fallbacks += 1
        return original(*a, **kw)

    stt._decode_trimmed = counting
    guarded(model, np.zeros(16000, np.float32))  # warm up
    report: dict = {"rounds": args.rounds, "sets": {}}
    for set_name, items in clips().items():
        rows = []
        seconds = {name: 0 for name in ARMS}
        for label, said, audio in items:
            times: dict[str, list[float]] = {name: [] for name in ARMS}
            texts: dict[str, str] = {}
            for _ in range(args.rounds):
                for name, fn in ARMS.items():
                    before = fallbacks
                    started = time.perf_counter()
                    texts[name] = fn(model, audio)
                    times[name].append((time.perf_counter() - started) * 1000)
                    seconds[name] += fallbacks - before
            row = {"clip": label, "secs": round(len(audio) / 16000, 2)}
            for name in ARMS:
                row[f"{name}_ms"] = round(statistics.median(times[name]), 1)
                row[f"{name}_text"] = texts[name]
                row[f"{name}_loops"] = looping(texts[name])
                if said is not None:
                    row[f"{name}_wer"] = word_error_rate([said], [texts[name]])
            rows.append(row)
        summary = {"clips": len(rows)}
        for name in ARMS:
            summary[f"{name}_ms_mean"] = round(statistics.mean(r[f"{name}_ms"] for r in rows), 1)
            summary[f"{name}_ms_median"] = round(statistics.median(r[f"{name}_ms"] for r in rows), 1)
            summary[f"{name}_loops"] = sum(r[f"{name}_loops"] for r in rows)
            summary[f"{name}_second_decodes"] = seconds[name] // args.rounds
            if rows and f"{name}_wer" in rows[0]:
                summary[f"{name}_wer"] = round(statistics.mean(r[f"{name}_wer"] for r in rows), 4)
        report["sets"][set_name] = {"summary": summary, "clips": rows}
    stt._decode_trimmed = original

    print(f"\nWhisper repetition guard ({args.rounds} interleaved runs per clip, median each)")
    print("arms: plain (no guard) | unsure_too (the guard as first built: unsure decodes retried too) | "
          "always_again (every loop decoded again) | guarded (now: loops of whole sentences kept once, other loops decoded again)\n")
    print("| clips | n | arm | mean / median ms | second decodes | loops | WER |")
    print("|---|---|---|---|---|---|---|")
    for set_name, data in report["sets"].items():
        s = data["summary"]
        for name in ARMS:
            wer = f"{100 * s[name + '_wer']:.1f} %" if f"{name}_wer" in s else "-"
            print(f"| {set_name} | {s['clips']} | {name} | {s[name + '_ms_mean']} / {s[name + '_ms_median']} | "
                  f"{s[name + '_second_decodes']} | {s[name + '_loops']} | {wer} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "whisper_guard.json").write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {RESULTS / 'whisper_guard.json'}")


if __name__ == "__main__":
    main()
