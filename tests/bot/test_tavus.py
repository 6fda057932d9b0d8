"""The Tavus path through our wiring, against a fake Tavus API on 127.0.0.1.

The bot runs on pipecat's real DailyTransport (CallClient faked, see
``fake_daily.py``) with our ``OnDemandTavusVideoService``, whose own Daily
client joins the conversation's room through the same fake.
"""

import asyncio
import time

import pytest
from pydantic import SecretStr

from bot.daily import RoomTimeouts, build_daily_transport, run_daily_bot
from bot.engines import EmbeddedModels, TavusRejectedError, validate_tavus
from bot.pipeline import Conversation, ConversationBot
from bot.settings import Settings
from personas import load_persona
from personas.model import Layers, Persona, ReplicaLayer, TTSLayer
from tests.bot.fake_daily import install
from tests.bot.fake_tavus import GOOD_KEY, REPLICA, serve_fake_tavus

pytestmark = pytest.mark.integration

ROOM = "https://acme.daily.co/demo"
TAVUS_ECHO = Persona(
    persona_name="Tavus echo test",
    system_prompt="unused in echo mode",
    pipeline_mode="echo",
    layers=Layers(
        tts=TTSLayer(tts_engine="piper"),
        replica=ReplicaLayer(replica_engine="tavus", replica_id=REPLICA, width=1280, height=720),
    ),
)


@pytest.fixture
async def tavus():
    fake, runner = await serve_fake_tavus()
    yield fake
    await runner.cleanup()


def tavus_settings(tavus, key: str = GOOD_KEY) -> Settings:
    return Settings(_env_file=None, tavus_api_key=SecretStr(key), tavus_api_base_url=tavus.base_url)


async def until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met within {timeout_s} s")
        await asyncio.sleep(0.05)


async def test_a_rejected_key_is_named(tavus):
    with pytest.raises(TavusRejectedError) as err:
        await validate_tavus(TAVUS_ECHO, tavus_settings(tavus, key="wrong"))
    assert "TAVUS_API_KEY was rejected" in str(err.value) and "401" in str(err.value)


async def test_an_unknown_replica_is_named(tavus):
    persona = TAVUS_ECHO.model_copy(
        update={"layers": TAVUS_ECHO.layers.model_copy(update={"replica": ReplicaLayer(replica_engine="tavus", replica_id="rnope")})}
    )
    with pytest.raises(TavusRejectedError) as err:
        await validate_tavus(persona, tavus_settings(tavus))
    assert "'rnope'" in str(err.value) and "not found" in str(err.value)


async def test_good_key_and_replica_pass(tavus):
    await validate_tavus(TAVUS_ECHO, tavus_settings(tavus))
    assert tavus.created == {}, "checking must not create a (paid) conversation"


@pytest.mark.parametrize(("key", "named"), [("wrong", "TAVUS_API_KEY was rejected"), (GOOD_KEY, None)])
async def test_run_py_exits_2_naming_what_tavus_rejected(tavus, key, named, tmp_path):
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        OPENAI_API_KEY="sk-test", ELEVENLABS_API_KEY="el-test", TAVUS_API_KEY=key,
        TAVUS_API_BASE_URL=tavus.base_url,
    )
    if named is None:
        # A good key: the persona's replica is unknown to this Tavus.
        tavus.replicas.clear()
        named = f"Tavus replica {load_persona('tavus_demo').replica_id!r}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(root / "run.py"), "--room-url", ROOM, "--persona", "tavus_demo",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    text = stderr.decode()
    assert proc.returncode == 2, text
    (line,) = [l for l in text.splitlines() if l.startswith("error:")]
    assert named in line
    assert "Traceback" not in text
    assert tavus.created == {}


@pytest.fixture
async def tavus_call(monkeypatch, tavus):
    daily = install(monkeypatch)
    settings = tavus_settings(tavus)
    models = EmbeddedModels(settings)
    started = []

    async def start(persona: Persona = TAVUS_ECHO, **timeouts):
        transport = build_daily_transport(persona, room_url=ROOM, token="tok")
        bot = ConversationBot(
            conversation=Conversation(persona=persona, persona_name="tavus_echo"),
            transport=transport, settings=settings, models=models,
        )
        await bot.build()
        task = asyncio.create_task(
            run_daily_bot(transport, bot, room_url=ROOM, timeouts=RoomTimeouts(**timeouts), handle_signals=False)
        )
        started.append((bot, task))
        await until(lambda: daily.in_room(ROOM) and daily.client(ROOM).joined, 20)
        await asyncio.sleep(0.2)
        return bot, task, daily.client(ROOM), transport

    yield start, daily
    for bot, task in started:
        if not task.done():
            await bot.stop("test over")
            await asyncio.wait_for(task, 10)


async def test_the_conversation_opens_when_someone_joins_and_ends_on_stop(tavus_call, tavus):
    start, daily = tavus_call
    bot, task, room, _ = await start()
    await asyncio.sleep(0.5)
    assert tavus.created == {}, "nobody is in the room: no paid conversation yet"
    await room.person_joins("alice", "Alice")
    await until(lambda: len(tavus.created) == 1, 10)
    (cid,) = tavus.created
    await until(lambda: daily.in_room(f"https://tavus.daily.co/{cid}"), 10)
    await room.person_joins("bob", "Bob")
    await asyncio.sleep(0.3)
    assert len(tavus.created) == 1, "one conversation per call"
    await bot.stop("stopped by test")
    await asyncio.wait_for(task, 10)
    assert tavus.open_conversations() == []
    assert daily.client(f"https://tavus.daily.co/{cid}").left


async def test_the_conversation_ends_when_the_last_person_leaves(tavus_call, tavus):
    start, _ = tavus_call
    _, task, room, _ = await start(participant_left_timeout=0.3)
    await room.person_joins("alice", "Alice")
    await until(lambda: len(tavus.created) == 1, 10)
    await room.person_leaves("alice")
    assert await asyncio.wait_for(task, 10) == "participant_left_timeout reached"
    assert list(tavus.ended) == list(tavus.created)


async def test_an_empty_room_never_opens_a_conversation(tavus_call, tavus):
    start, _ = tavus_call
    _, task, _, _ = await start(participant_absent_timeout=0.5)
    assert await asyncio.wait_for(task, 10) == "participant_absent_timeout reached"
    assert tavus.created == {}


class _Frame:
    """What daily-python's VideoFrame carries."""

    def __init__(self, width: int, height: int):
        self.width, self.height, self.color_format = width, height, "RGB"
        self.buffer = bytes(width * height * 3)


async def test_tavus_frames_reach_the_output_at_its_rate(tavus_call, tavus):
    start, daily = tavus_call
    small = {"replica_engine": "tavus", "replica_id": REPLICA, "width": 320, "height": 180}
    persona = TAVUS_ECHO.model_copy(update={"layers": TAVUS_ECHO.layers.model_copy(update={"replica": ReplicaLayer(**small)})})
    _, _, room, transport = await start(persona)
    written: list[float] = []
    output = transport.output()
    original = output.write_video_frame

    async def recording(frame):
        written.append(time.monotonic())
        return await original(frame)

    output.write_video_frame = recording
    await room.person_joins("alice", "Alice")
    await until(lambda: len(tavus.created) == 1, 10)
    (cid,) = tavus.created
    await until(lambda: daily.in_room(f"https://tavus.daily.co/{cid}"), 10)
    replica_room = daily.client(f"https://tavus.daily.co/{cid}")
    await replica_room.person_joins("replica", "Tavus replica")
    await until(lambda: any(pid == "replica" for pid, _ in replica_room.video_renderers), 10)

    sent = 90  # 3 s of Tavus video at 30 fps
    frame = _Frame(320, 180)  # the persona's size: nothing to scale
    sent_at: list[float] = []

    def tavus_sends() -> None:
        t0 = time.monotonic()
        for i in range(sent):
            time.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
            replica_room.send_video("replica", frame)
            sent_at.append(time.monotonic())

    first = len(written)
    await asyncio.to_thread(tavus_sends)
    await until(lambda: len(written) - first >= sent, 5)
    out = written[first:]
    # They leave at Tavus's rate: paced any slower (the persona's 25 fps), the
    # video would fall further behind the voice with every second.
    sent_rate = (sent - 1) / (sent_at[-1] - sent_at[0])
    if sent_rate < 28:
        pytest.skip(f"this machine is too busy to send 30 fps ({sent_rate:.1f})")
    rate = (len(out) - 1) / (out[-1] - out[0])
    assert rate > 27.5, f"output at {rate:.1f} fps for {sent_rate:.1f} fps in"


async def test_sigterm_of_run_py_ends_the_tavus_conversation(tavus):
    import signal

    from tests.bot.test_daily_rooms import read_until, start_run_py

    script = {"room_url": ROOM, "people": [{"id": "alice", "after_s": 0.2}]}
    proc = await start_run_py(
        script, "--room-url", ROOM, "--persona", "tavus_echo_test",
        extra_env={"FAKE_PERSONA": "tavus_echo_test", "TAVUS_API_KEY": GOOD_KEY, "TAVUS_API_BASE_URL": tavus.base_url},
    )
    out: list[str] = []
    try:
        await read_until(proc.stdout, "FAKE-DAILY joined https://tavus.daily.co/", 90, out)
        assert len(tavus.created) == 1
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    (cid,) = tavus.created
    assert cid in tavus.ended and tavus.ended[cid] - signalled < 5
    assert GOOD_KEY not in stderr.decode(), "the Tavus key must not be logged"


async def test_a_conversation_tavus_will_not_create_ends_the_call(tavus_call, tavus):
    start, _ = tavus_call
    bot, task, room, _ = await start()
    tavus.replicas.clear()  # the replica is gone by the time someone joins
    await room.person_joins("alice", "Alice")
    reason = await asyncio.wait_for(task, 10)
    assert "OnDemandTavusVideoService" in reason and "can no longer do its job" in reason
    assert tavus.created == {}
