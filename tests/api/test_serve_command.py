"""``python run.py serve`` as a user starts it: a key made and printed once, the API answering with it."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVI_")}
    env.update(CVI_DATA_DIR=str(data_dir), CVI_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "run.py", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-warm"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_up(base: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            httpx.get(f"{base}/openapi.json", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError("run.py serve did not answer")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    return out


def test_serve_makes_a_key_once_and_answers_with_it(tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    try:
        _wait_up(base, proc)
        key = (tmp_path / "api_key").read_text().strip()
        assert httpx.get(f"{base}/v2/replicas").status_code == 401
        replicas = httpx.get(f"{base}/v2/replicas", headers={"x-api-key": key})
        assert replicas.status_code == 200 and replicas.json()["total_count"] >= 3
        created = httpx.post(
            f"{base}/v2/conversations", json={"persona_id": "ava", "test_mode": True}, headers={"x-api-key": key}
        )
        assert created.status_code == 200
    finally:
        first = _stop(proc)
    assert re.search(rf"API key .*{key}", first)
    assert f"http://127.0.0.1:{port}/v2" in first

    # A second start keeps the key, does not print it, and still has the conversation.
    proc = _start(tmp_path, port)
    try:
        _wait_up(base, proc)
        listed = httpx.get(f"{base}/v2/conversations", headers={"x-api-key": key}).json()
        assert listed["total_count"] == 1
    finally:
        second = _stop(proc)
    assert key not in second
