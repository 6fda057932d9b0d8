"""`run.py talk`: one recorded utterance through the real pipeline, end to end."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import soxr

from tests.speech import normalise, word_error_rate

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[2]
CLIP = "sense_and_sensibility_01_austen_64kb-0930.wav"


def llama_servers() -> set[int]:
    """Pids of running llama-server processes."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "llama-server":
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids


def talk(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", "talk", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def stereo_44k_question(tmp_path_factory, librivox) -> tuple[Path, str]:
    """A real recording re-encoded as 44.1 kHz stereo: any rate and channel count is accepted."""
    source = next(p for p in librivox if p.name == CLIP)
    audio, rate = soundfile.read(str(source), dtype="float32")
    resampled = soxr.resample(audio, rate, 44100)
    path = tmp_path_factory.mktemp("talk") / "question.wav"
    soundfile.write(str(path), np.stack([resampled, resampled * 0.8], axis=1), 44100)
    return path, librivox[source]


def test_talk_writes_a_spoken_reply_and_reports_every_stage(stereo_44k_question, tmp_path, settings):
    wav, reference = stereo_44k_question
    out = tmp_path / "reply.wav"
    before = llama_servers()
    proc = talk("--wav", str(wav), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert llama_servers() - before == set(), "talk left its llama-server running"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"transcript", "reply", "timings_ms"}
    assert word_error_rate([reference], [result["transcript"]]) <= 0.15, result["transcript"]
    assert result["reply"].strip()
    timings = result["timings_ms"]
    for stage in ("end_of_turn", "transcript", "llm_first_token", "llm_first_sentence", "tts_first_audio", "total"):
        assert timings[stage] is not None and timings[stage] > 0, (stage, timings)
    assert timings["llm_first_token"] <= timings["llm_first_sentence"] <= timings["tts_first_audio"]

    # The reply is real speech: transcribe it back and find the reply's words.
    audio, rate = soundfile.read(str(out), dtype="float32")
    assert rate == 24000 and len(audio) / rate > 0.5
    from faster_whisper import WhisperModel

    from processors.weights import whisper_model

    model = WhisperModel(whisper_model(None, cache_dir=settings.cvi_cache_dir), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(soxr.resample(audio, rate, 16000), language="en")
    heard = " ".join(s.text for s in segments)
    assert word_error_rate([result["reply"]], [heard]) <= 0.25, (result["reply"], heard)


def test_talk_hears_a_question_that_starts_at_once(tmp_path):
    # espeak-ng starts speaking in the file's first milliseconds.
    wav = tmp_path / "question.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), "What should I eat in Lisbon?"], check=True)
    audio, rate = soundfile.read(str(wav), dtype="float32")
    assert np.abs(audio[: rate // 20]).max() > 0.01, "the test needs speech within the first 50 ms"
    proc = talk("--wav", str(wav), "--out", str(tmp_path / "reply.wav"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = normalise(json.loads(proc.stdout.strip().splitlines()[-1])["transcript"]).split()
    # Whisper base mishears this robotic voice in the middle ("What Shonai Dyn
    # Lisbon?"), but all of it must be heard: it once came out as just "and".
    assert len(words) >= 4 and words[0] == "what" and words[-1] == "lisbon", words


def test_talk_writes_replica_video_as_mp4(tmp_path, librivox):
    wav = next(p for p in librivox if p.name == "sense_and_sensibility_01_austen_64kb-0880.wav")
    out = tmp_path / "reply.mp4"
    proc = talk("--wav", str(wav), "--out", str(out), "--persona", "max")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with av.open(str(out)) as container:
        streams = {s.type: s for s in container.streams}
        assert streams["video"].codec_context.name == "h264"
        assert streams["audio"].codec_context.name == "aac"
        assert (streams["video"].width, streams["video"].height) == (512, 512)


@pytest.mark.parametrize(
    ("make_input", "expected"),
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: (d / "junk.wav").write_bytes(b"this is not audio") and d / "junk.wav", "not a readable audio file"),
        (lambda d: soundfile.write(str(d / "empty.wav"), np.zeros(0), 16000) or d / "empty.wav", "empty"),
    ],
)
def test_unreadable_input_gets_a_clear_error(tmp_path, make_input, expected):
    path = make_input(tmp_path)
    proc = talk("--wav", str(path), "--out", str(tmp_path / "o.wav"), timeout=60)
    assert proc.returncode == 2
    assert expected in proc.stderr and "--wav" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.wav").exists()


def test_bad_output_suffix_and_unknown_persona(tmp_path, librivox):
    wav = str(next(iter(librivox)))
    proc = talk("--wav", wav, "--out", str(tmp_path / "o.ogg"), timeout=60)
    assert proc.returncode == 2 and ".wav or .mp4" in proc.stderr
    proc = talk("--wav", wav, "--out", str(tmp_path / "o.wav"), "--persona", "nobody", timeout=60)
    assert proc.returncode == 2 and "persona 'nobody' not found; available: ava" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_personas_command_lists_engines():
    proc = subprocess.run([sys.executable, "run.py", "personas"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "ava" in proc.stdout and "llm=llama_cpp" in proc.stdout and "tts=cartesia" in proc.stdout
    assert normalise(proc.stdout)


def test_talk_answers_a_two_sentence_recording_as_one_question(tmp_path):
    # Two sentences of one thought with a 0.6 s pause between them, as people
    # speak: one question, transcribed whole, and a reply to all of it.
    from tests.voices import VOICES, spoken, write_wav

    first, second = "I am feeling a little tired today.", "Do you have any advice?"
    wav = write_wav(tmp_path / "question.wav", spoken([first, second], VOICES["espeak-us"], pause_secs=0.6))
    proc = talk("--wav", str(wav), "--out", str(tmp_path / "reply.wav"), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(result)
    # Both sentences (12 words) in the one transcript; a busy machine may mishear some.
    words = normalise(result["transcript"]).split()
    assert "tired" in words and len(words) >= 10, result["transcript"]
    reply = normalise(result["reply"])
    assert reply, result
    # What the reply says is the 0.5B's quality (bench/answer_quality.py, issue 15): at
    # temperature 0.6 it now and then answers "Sure, I'd be happy to help." Here the
    # point is one question in, one reply out, covering the whole transcript.
