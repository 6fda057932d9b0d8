"""What the guard against Whisper's repetition loops costs, and what it catches.

Transcribes the LibriVox clips (Debian pocketsphinx-testdata) and short
synthesized questions (espeak-ng, flite and festival voices from
``tests/voices.py``) twice each, interleaved so the machine's load falls on
both alike: once with the plain greedy decode on the trimmed window (what
``processors.stt.whisper`` did before the guard) and once with
``transcribe_trimmed`` as it is now (length limit, loop checks, a second
decode with more trailing silence when the first looks degenerate, repeats
collapsed). Prints a table and writes ``bench/results/whisper_guard.json``.

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


def looping(text: str) -> bool:
    """Whisper's failure as a listener sees it: a run of words repeated back to back."""
    return stt.collapse_repeats(text) != text or stt.compression_ratio(text) > stt.COMPRESSION_RATIO_THRESHOLD


def clips() -> dict[str, list[tuple[str, np.ndarray]]]:
    sets: dict[str, list[tuple[str, np.ndarray]]] = {"librivox": [], "synthesized": []}
    for path in sorted(LIBRIVOX.glob("*.wav")):
        audio, _ = soundfile.read(str(path), dtype="float32")
        sets["librivox"].append((path.stem, audio))
    for sentence in SENTENCES:
        for name, voice in VOICES.items():
            audio = spoken([sentence], voice, pause_secs=0).astype(np.float32) / 32768.0
            sets["synthesized"].append((f"{name}: {sentence}", audio))
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
        fallbacks = 0
        for label, audio in items:
            times: dict[str, list[float]] = {"plain": [], "guarded": []}
            texts: dict[str, str] = {}
            for _ in range(args.rounds):
                for name, fn in (("plain", lambda a: plain(model, a)), ("guarded", lambda a: guarded(model, a))):
                    started = time.perf_counter()
                    texts[name] = fn(audio)
                    times[name].append((time.perf_counter() - started) * 1000)
            rows.append({
                "clip": label,
                "secs": round(len(audio) / 16000, 2),
                "plain_ms": round(statistics.median(times["plain"]), 1),
                "guarded_ms": round(statistics.median(times["guarded"]), 1),
                "plain_text": texts["plain"],
                "guarded_text": texts["guarded"],
                "plain_loops": looping(texts["plain"]),
                "guarded_loops": looping(texts["guarded"]),
            })
        summary = {
            "clips": len(rows),
            "plain_ms_mean": round(statistics.mean(r["plain_ms"] for r in rows), 1),
            "guarded_ms_mean": round(statistics.mean(r["guarded_ms"] for r in rows), 1),
            "plain_ms_median": round(statistics.median(r["plain_ms"] for r in rows), 1),
            "guarded_ms_median": round(statistics.median(r["guarded_ms"] for r in rows), 1),
            "plain_loops": sum(r["plain_loops"] for r in rows),
            "guarded_loops": sum(r["guarded_loops"] for r in rows),
            "second_decodes": fallbacks // args.rounds,
        }
        report["sets"][set_name] = {"summary": summary, "clips": rows}
    stt._decode_trimmed = original

    print(f"\nWhisper repetition guard ({args.rounds} interleaved runs per clip, median each)\n")
    print("| clips | n | plain mean / median ms | guarded mean / median ms | added (mean) | second decodes | loops plain -> guarded |")
    print("|---|---|---|---|---|---|---|")
    for set_name, data in report["sets"].items():
        s = data["summary"]
        print(
            f"| {set_name} | {s['clips']} | {s['plain_ms_mean']} / {s['plain_ms_median']} | "
            f"{s['guarded_ms_mean']} / {s['guarded_ms_median']} | {s['guarded_ms_mean'] - s['plain_ms_mean']:+.1f} | "
            f"{s['second_decodes']} | {s['plain_loops']} -> {s['guarded_loops']} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "whisper_guard.json").write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {RESULTS / 'whisper_guard.json'}")


if __name__ == "__main__":
    main()
