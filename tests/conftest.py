"""Suite-wide rules and shared fixtures.

Every test module declares its kind with a marker (see pyproject.toml); an
unmarked test fails collection. Heavy engines (the llama.cpp server, Whisper,
piper) start once per session and are shared, as they are in the app.
"""

import os
from pathlib import Path

import pytest
import pytest_asyncio

KINDS = {"unit", "models", "integration", "browser", "cloud"}
SPEECH_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")

# Cloud keys must never leak into tests from a developer's .env.
for _name in ("OPENAI_API_KEY", "CARTESIA_API_KEY", "ELEVENLABS_API_KEY", "TAVUS_API_KEY", "DAILY_API_KEY"):
    os.environ.pop(_name, None)


def pytest_collection_modifyitems(config, items):
    """Refuse tests that do not say what kind they are."""
    unmarked = [item.nodeid for item in items if not KINDS & {m.name for m in item.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(
            f"tests without a kind marker ({', '.join(sorted(KINDS))}): {', '.join(unmarked[:5])}"
        )


@pytest.fixture(scope="session")
def settings():
    """Settings as the app reads them, without any .env file or cloud keys."""
    from bot.settings import Settings

    return Settings(_env_file=None)


@pytest.fixture(scope="session")
def librivox() -> dict[Path, str]:
    """Real read speech (Debian pocketsphinx-testdata): wav path -> reference text."""
    refs: dict[Path, str] = {}
    for line in (SPEECH_DIR / "transcription").read_text().splitlines():
        text, _, utt = line.rpartition("(")
        words = text.replace("<s>", "").replace("</s>", "").split()
        refs[SPEECH_DIR / f"{utt.strip(' )')}.wav"] = " ".join(words)
    return refs


@pytest_asyncio.fixture(scope="session")
async def embedded_models(settings):
    """The process's shared embedded engines; stopped at the end of the session."""
    from bot.engines import EmbeddedModels

    models = EmbeddedModels(settings)
    yield models
    await models.close()


@pytest.fixture
def daily(monkeypatch):
    """pipecat's Daily transport with daily-python's CallClient faked at its network seam; the fake backend."""
    from tests.bot.fake_daily import install

    return install(monkeypatch)


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def no_replica_left_rendering():
    """After every test, no replica frame loop is left running in the test's event loop.

    A renderer whose call has ended but whose loop still runs renders into a
    queue nobody reads: memory and CPU grow for as long as the process lives
    (it once took a full test session to 20 GB).
    """
    import asyncio

    yield
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while True:
        left = [t for t in asyncio.all_tasks() if t.get_name().endswith("::video") and not t.done()]
        if not left:
            return
        if loop.time() > deadline:
            for task in left:
                task.cancel()
            pytest.fail(f"replica frame loop(s) still running after the test: {[t.get_name() for t in left]}")
        await asyncio.sleep(0.1)
