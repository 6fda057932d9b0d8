"""The API app under test: real storage (SQLite in a temporary folder, and
PostgreSQL started in one), lifespan on."""

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
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


def api_settings(data_dir: Path, database_url: str | None = None, **overrides) -> Settings:
    """Settings for a test server; ``database_url`` None: SQLite in ``data_dir``."""
    fields = dict(
        _env_file=None,
        cvi_data_dir=data_dir,
        cvi_api_keys=f"{KEY},{OTHER_KEY}",
        cvi_database_url=database_url,
        cvi_webhook_attempts=4,
        cvi_webhook_backoff_s=0.05,
        cvi_webhook_timeout_s=5.0,
    )
    fields.update(overrides)
    return Settings(**fields)


class PostgresServer:
    """Debian's PostgreSQL, started in a temporary folder on a free loopback port; one database per test."""

    USER = "cvi"

    def __init__(self):
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
        self._bin = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="cvi-pg-"))
        self.port = _free_port()
        # PostgreSQL refuses to run as root: as root, it runs as the postgres user.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, user="postgres")
        data = self.folder / "data"
        self._run(str(bindir / "initdb"), "-D", str(data), "-U", self.USER, "--auth=trust", "-E", "UTF8")
        options = f"-k {self.folder} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")
        self._data = data
        self._count = 0

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True)

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        self._count += 1
        name = f"test_{os.getpid()}_{self._count}"
        self._run(str(self._bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, name)
        return self.url(name)

    def stop(self) -> None:
        self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if shutil.which("pg_config") is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql); the SQLite runs still cover the API")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    """Each storage test runs on SQLite (None: the default file) and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_settings(data_dir: Path, database_url: str | None):
    def make(**overrides) -> Settings:
        overrides.setdefault("cvi_data_dir", data_dir)
        return api_settings(overrides.pop("cvi_data_dir"), database_url, **overrides)

    return make


@pytest.fixture
def client(make_settings) -> Iterator[TestClient]:
    """The app with engines that load nothing, through its lifespan."""
    settings = make_settings()
    with TestClient(create_app(settings, models=NoEngines(settings))) as c:
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
