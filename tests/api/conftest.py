"""The API app under test: real storage in a temporary folder, lifespan on.

``CVI_TEST_DATABASE_URL`` (e.g. ``postgresql+asyncpg://...``) runs the same
tests against that database instead of SQLite.
"""

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api import create_app
from bot.engines import EmbeddedModels
from bot.settings import Settings

KEY = "test-key-one"
OTHER_KEY = "test-key-two"
AUTH = {"x-api-key": KEY}


class NoEngines(EmbeddedModels):
    """Embedded engines that load nothing: for tests where no peer ever joins."""

    async def prepare(self, persona) -> None:
        return None


def api_settings(data_dir: Path, **overrides) -> Settings:
    fields = dict(
        _env_file=None,
        cvi_data_dir=data_dir,
        cvi_api_keys=f"{KEY},{OTHER_KEY}",
        cvi_webhook_attempts=4,
        cvi_webhook_backoff_s=0.05,
        cvi_webhook_timeout_s=5.0,
    )
    if os.environ.get("CVI_TEST_DATABASE_URL"):
        fields["cvi_database_url"] = os.environ["CVI_TEST_DATABASE_URL"]
    fields.update(overrides)
    return Settings(**fields)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data_dir: Path) -> Iterator[TestClient]:
    """The app with engines that load nothing, through its lifespan."""
    with TestClient(create_app(api_settings(data_dir), models=NoEngines(api_settings(data_dir)))) as c:
        yield c


class WebhookReceiver:
    """A real HTTP receiver on loopback that answers 500 to the first ``failures`` posts of each event."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.received: list[tuple[dict, bytes, dict]] = []  # (json, raw body, headers) of accepted posts
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                event = json.loads(body)
                key = f"{event['conversation_id']}/{event['event_type']}"
                with receiver._lock:
                    receiver.attempts[key] = receiver.attempts.get(key, 0) + 1
                    fail = receiver.attempts[key] <= receiver.failures
                    if not fail:
                        receiver.received.append((event, body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(500 if fail else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def events(self, conversation_id: str) -> list[str]:
        with self._lock:
            return [e["event_type"] for e, _, _ in self.received if e["conversation_id"] == conversation_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(failures=2)
    yield r
    r.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serve_api(app) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 in this event loop; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.025)
        else:
            raise TimeoutError("API server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
