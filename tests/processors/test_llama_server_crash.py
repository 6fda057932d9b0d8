"""A llama-server that dies while starting is said plainly, and nothing of it is left running.

The binary here is a stand-in that does what a miscompiled llama-server does
(ggml's AMX kernels on some Xeons): it starts, leaves a child in its process
group, and kills itself with SIGSEGV before it ever serves.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processors.llm.llama_server import LlamaServer, LlamaServerError, cpu_summary, describe_exit

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def crashing_binary(folder: Path, marker: str, *, signal_name: str = "SEGV") -> Path:
    """A script that spawns a long sleep (the marker in its command line) and dies by ``signal_name``."""
    path = folder / "llama-server"
    path.write_text(
        "#!/bin/sh\n"
        f"sleep {marker} &\n"
        'echo "load_tensors: loading model tensors"\n'
        f"kill -{signal_name} $$\n"
    )
    path.chmod(0o755)
    return path


def processes_with(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-model.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


def test_describe_exit_names_signals_and_codes():
    assert describe_exit(-signal.SIGSEGV) == "crashed with SIGSEGV"
    assert describe_exit(-signal.SIGILL) == "crashed with SIGILL"
    assert describe_exit(1) == "exited with code 1"
    assert "flags" in cpu_summary()


async def test_crash_at_start_is_one_line_and_leaves_nothing(tmp_path: Path, model: Path):
    marker = str(900000 + os.getpid() % 10000)
    binary = crashing_binary(tmp_path, marker)
    server = LlamaServer(binary=binary, model=model, start_timeout=30)
    started = time.monotonic()
    with pytest.raises(LlamaServerError) as err:
        await server.start()
    message = str(err.value)
    assert time.monotonic() - started < 5, "waited on a server that was already dead"
    assert "\n" not in message, message
    assert message.startswith("llama-server crashed with SIGSEGV while loading tiny-model.gguf on this CPU (")
    assert "flags" in message and str(binary) in message and "CVI_LLAMA_SERVER_BIN" in message
    assert server.pid is None
    time.sleep(0.2)
    assert processes_with(f"sleep\0{marker}") == [], "the crashed server's child is still running"


async def test_illegal_instruction_is_named_too(tmp_path: Path, model: Path):
    binary = crashing_binary(tmp_path, str(910000 + os.getpid() % 10000), signal_name="ILL")
    with pytest.raises(LlamaServerError, match="^llama-server crashed with SIGILL while loading"):
        await LlamaServer(binary=binary, model=model, start_timeout=30).start()


def test_prove_command_fails_in_one_line(tmp_path: Path, model: Path):
    """What scripts/setup.sh runs on every binary: a crash is one line on stderr and exit 1."""
    binary = crashing_binary(tmp_path, str(920000 + os.getpid() % 10000))
    proc = subprocess.run(
        [sys.executable, "-m", "processors.llm.llama_server", "prove", "--binary", str(binary), "--model", str(model)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: llama-server crashed with SIGSEGV"), proc.stderr
