"""The embedded LLM crashing at start is one plain line from `talk`, the dev room and setup.

``CVI_LLAMA_SERVER_BIN`` points at a stand-in that crashes the way a llama-server
built for the wrong CPU does (SIGSEGV before it serves), leaving a child behind.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.processors.test_llama_server_crash import crashing_binary, processes_with

pytestmark = pytest.mark.models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def crasher(tmp_path: Path) -> tuple[Path, str]:
    marker = str(930000 + os.getpid() % 10000)
    return crashing_binary(tmp_path, marker), marker


def run(args: list[str], binary: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "CVI_LLAMA_SERVER_BIN": str(binary)}
    env.pop("CVI_LLM_BASE_URL", None)
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_crash_line(proc: subprocess.CompletedProcess, prefix: str, marker: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if prefix in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    line = errors[0]
    assert "llama-server crashed with SIGSEGV while loading" in line and "on this CPU (" in line, line
    assert "CVI_LLAMA_SERVER_BIN" in line
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    time.sleep(0.2)
    assert processes_with(f"sleep\0{marker}") == [], "the crashed server's child is still running"


def test_talk_names_the_crash(crasher, tmp_path: Path):
    binary, marker = crasher
    wav = tmp_path / "hello.wav"
    soundfile.write(str(wav), np.zeros(16000, dtype=np.float32), 16000)
    proc = run([sys.executable, "run.py", "talk", "--wav", str(wav), "--out", str(tmp_path / "o.wav")], binary)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert_one_crash_line(proc, "error: ", marker)


def test_dev_room_names_the_crash_and_does_not_serve(crasher):
    binary, marker = crasher
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run([sys.executable, "run.py", "--port", str(port)], binary)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Dev room: open" not in proc.stdout
    assert_one_crash_line(proc, "error: ", marker)


def test_setup_refuses_a_binary_that_crashes(crasher):
    """scripts/setup.sh proves a given binary by generating, not by --version."""
    binary, marker = crasher
    env_run = [
        "env", "CVI_SKIP_APT=1", f"CVI_LLAMA_SERVER_BIN={binary}", "bash", "scripts/setup.sh",
    ]  # fmt: skip
    proc = run(env_run, binary, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_one_crash_line(proc, "setup: error: ", marker)
    assert "(CVI_LLAMA_SERVER_BIN) does not run here" in proc.stderr
