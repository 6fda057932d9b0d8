"""A bot in a Daily room, through our wiring and pipecat's real DailyTransport.

daily-python's ``CallClient`` is faked at the network seam (``fake_daily.py``);
the pipeline is the real one for an echo persona (piper speaks what
``conversation.echo`` sends), so "the bot answers" is seen where a person would
see it: the bot's speaking events arrive in the room.
"""

import asyncio
import time

import pytest

from bot.daily import DailyJoinError, RoomTimeouts, build_daily_transport, join_error_cause, run_daily_bot
from bot.engines import EmbeddedModels
from bot.pipeline import Conversation, ConversationBot
from personas.model import Layers, PerceptionLayer, Persona, ReplicaLayer, TTSLayer
from tests.bot.fake_daily import FakeDaily, FakeDailyRest

pytestmark = pytest.mark.integration

ROOM = "https://acme.daily.co/standup"
ECHO = Persona(
    persona_name="Echo test",
    system_prompt="unused in echo mode",
    custom_greeting="Hello there.",
    pipeline_mode="echo",
    layers=Layers(tts=TTSLayer(tts_engine="piper"), replica=ReplicaLayer(replica_engine="off")),
)


def echo(text: str) -> dict:
    return {"message_type": "conversation", "event_type": "conversation.echo", "properties": {"text": text}}


class Call:
    """One bot run in the background: its task, the fake client, the bot."""

    def __init__(self, bot: ConversationBot, task: asyncio.Task, backend: FakeDaily):
        self.bot, self.task, self.backend = bot, task, backend

    @property
    def client(self):
        return self.backend.client(ROOM)

    async def joined(self, timeout_s: float = 20) -> None:
        await until(lambda: self.backend.in_room(ROOM) and self.client.joined, timeout_s)
        await asyncio.sleep(0.2)  # the transport starts handling events after its join

    async def ended(self, timeout_s: float = 10) -> str:
        return await asyncio.wait_for(self.task, timeout_s)


async def until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met within {timeout_s} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def start_call(daily, settings):
    models = EmbeddedModels(settings)
    calls: list[Call] = []

    async def start(persona: Persona = ECHO, bot_settings=None, **timeouts) -> Call:
        transport = build_daily_transport(persona, room_url=ROOM, token="tok")
        bot = ConversationBot(
            conversation=Conversation(persona=persona, persona_name="echo_test"),
            transport=transport, settings=bot_settings or settings, models=models,
        )
        await bot.build()
        task = asyncio.create_task(
            run_daily_bot(transport, bot, room_url=ROOM, timeouts=RoomTimeouts(**timeouts), handle_signals=False)
        )
        call = Call(bot, task, daily)
        calls.append(call)
        return call

    yield start
    for call in calls:
        if not call.task.done():
            await call.bot.stop("test over")
            await asyncio.wait_for(call.task, 10)


async def test_two_join_one_leaves_the_bot_stays_and_answers_the_other(start_call):
    call = await start_call(participant_left_timeout=0)
    await call.joined()
    client = call.client
    await client.person_joins("alice", "Alice")
    await client.person_joins("bob", "Bob")
    await client.person_leaves("bob")
    await asyncio.sleep(0.5)
    assert not call.task.done(), "Bob leaving must not end the call for Alice"
    assert not client.left
    spoken_before = client.events_sent().count("conversation.replica.started_speaking")
    await client.app_message(echo("Still here, Alice."), sender="alice")
    await until(lambda: client.events_sent().count("conversation.replica.started_speaking") > spoken_before, 20)
    assert call.bot.shutdown_reason is None


async def test_the_last_to_leave_ends_the_call_after_the_timeout(start_call):
    call = await start_call(participant_left_timeout=0.5)
    await call.joined()
    await call.client.person_joins("alice", "Alice")
    await call.client.person_leaves("alice")
    await asyncio.sleep(0.2)
    assert not call.task.done(), "participant_left_timeout gives the room 0.5 s"
    reason = await call.ended()
    assert reason == "participant_left_timeout reached"
    assert call.client.left and call.client.released


async def test_someone_coming_back_within_the_timeout_keeps_the_call(start_call):
    call = await start_call(participant_left_timeout=0.6)
    await call.joined()
    await call.client.person_joins("alice", "Alice")
    await call.client.person_leaves("alice")
    await call.client.person_joins("alice2", "Alice")
    await asyncio.sleep(1.0)
    assert not call.task.done()


async def test_greets_once_on_the_first_person(start_call):
    call = await start_call()
    await call.joined()
    greets = []
    original = call.bot.greet

    async def counting_greet():
        greets.append(1)
        await original()

    call.bot.greet = counting_greet
    await call.client.person_joins("alice", "Alice")
    await call.client.person_joins("bob", "Bob")
    await asyncio.sleep(0.3)
    assert greets == [1]


async def test_a_refused_join_ends_in_seconds_naming_the_cause(start_call, daily):
    daily.refuse[ROOM] = "meeting token has expired"
    call = await start_call()
    started = time.monotonic()
    with pytest.raises(DailyJoinError) as err:
        await call.ended(timeout_s=10)
    assert time.monotonic() - started < 5
    assert "token expired" in str(err.value) and ROOM in str(err.value)


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        ("meeting token has expired", "token expired"),
        ("The meeting you're trying to join does not exist.", "room not found"),
        ("network connection failed", "network"),
        ("token is invalid", "token rejected"),
    ],
)
def test_join_error_causes(error, cause):
    assert join_error_cause(error) == cause


async def test_ejection_or_meeting_end_ends_the_bot(start_call):
    call = await start_call()
    await call.joined()
    await call.client.person_joins("alice", "Alice")
    await call.client.call_ends()
    reason = await call.ended()
    assert "ended under the bot" in reason


async def test_an_empty_room_ends_after_the_absent_timeout(start_call):
    call = await start_call(participant_absent_timeout=0.8)
    await call.joined()
    started = time.monotonic()
    reason = await call.ended()
    assert reason == "participant_absent_timeout reached"
    assert 0.4 < time.monotonic() - started < 5
    assert call.client.left
    shutdown = [m for m, _ in call.client.sent if m.get("event_type") == "system.shutdown"]
    assert shutdown and shutdown[0]["properties"]["shutdown_reason"] == "participant_absent_timeout reached"


async def test_a_bot_in_the_room_does_not_keep_it_alive(start_call):
    call = await start_call(participant_absent_timeout=0.8)
    await call.joined()
    await call.client.person_joins("other-agent", "Agent", bot=True)
    assert await call.ended() == "participant_absent_timeout reached"


async def test_max_call_duration_ends_the_call(start_call):
    call = await start_call(max_call_duration=0.8)
    await call.joined()
    await call.client.person_joins("alice", "Alice")
    assert await call.ended() == "max_call_duration reached"


async def test_app_messages_only_from_the_people_it_serves(start_call):
    call = await start_call()
    await call.joined()
    client = call.client
    await client.person_joins("alice", "Alice")
    await client.person_joins("agent", "Agent", bot=True)
    handled = []
    original = call.bot.handle_client_message

    async def recording(message):
        handled.append(message)
        await original(message)

    call.bot.handle_client_message = recording
    await client.app_message(echo("say something rude"), sender="agent")
    await client.app_message(echo("say something rude"), sender="stranger")
    await asyncio.sleep(1.0)
    assert handled == []
    assert "conversation.replica.started_speaking" not in client.events_sent()
    await client.app_message(echo("Hi Alice."), sender="alice")
    await until(lambda: "conversation.replica.started_speaking" in client.events_sent(), 20)
    assert len(handled) == 1


async def test_a_cloud_engine_rejecting_its_key_ends_the_call(start_call):
    from aiohttp import web
    from pydantic import SecretStr

    from bot.daily import EngineKeyRejectedError
    from bot.settings import Settings

    async def completions(request):
        return web.json_response(
            {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}},
            status=401,
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        persona = Persona.model_validate({
            "persona_name": "Cloud LLM test", "system_prompt": "Be brief.",
            "layers": {
                "stt": {"stt_engine": "openai"},
                "llm": {"engine": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "api_key": "rejected"},
                "tts": {"tts_engine": "piper"}, "replica": {"replica_engine": "off"},
            },
        })
        call = await start_call(persona, bot_settings=Settings(_env_file=None, openai_api_key=SecretStr("sk-test")))
        await call.joined()
        await call.client.person_joins("alice", "Alice")
        respond = {"message_type": "conversation", "event_type": "conversation.respond", "properties": {"text": "Hi"}}
        await call.client.app_message(respond, sender="alice")
        with pytest.raises(EngineKeyRejectedError) as err:
            await call.ended(timeout_s=20)
        assert "rejected its key" in str(err.value) and "401" in str(err.value)
        assert call.client.left
    finally:
        await runner.cleanup()


async def test_stop_leaves_the_room(start_call):
    call = await start_call()
    await call.joined()
    await call.client.person_joins("alice", "Alice")
    await call.bot.stop("SIGTERM received")
    assert await call.ended() == "SIGTERM received"
    assert call.client.left


# --- a real run.py process (Daily faked at CallClient in the child) ----------


async def start_run_py(script: dict, *args: str, extra_env: dict | None = None):
    import json
    import os
    import sys
    from pathlib import Path

    harness = Path(__file__).with_name("daily_bot_process.py")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(FAKE_DAILY_SCRIPT=json.dumps(script), DAILY_TOKEN="secret-token", **(extra_env or {}))
    return await asyncio.create_subprocess_exec(
        sys.executable, str(harness), *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def read_until(stream, marker: str, timeout_s: float, seen: list[str]) -> None:
    async def read() -> None:
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"output ended before {marker!r}: {seen[-5:]}")
            seen.append(line.decode().rstrip())
            if marker in seen[-1]:
                return

    await asyncio.wait_for(read(), timeout_s)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
async def test_a_signal_makes_run_py_leave_the_room_within_5_s(sig):
    import signal

    script = {"room_url": ROOM, "people": [{"id": "alice", "after_s": 0.2}]}
    proc = await start_run_py(script, "--room-url", ROOM, "--persona", "echo")
    out: list[str] = []
    try:
        await read_until(proc.stdout, "FAKE-DAILY person joined alice", 90, out)
        await asyncio.sleep(0.5)
        signalled = time.monotonic()
        proc.send_signal(getattr(signal, sig))
        rest, stderr = await asyncio.wait_for(proc.communicate(), 10)
        took = time.monotonic() - signalled
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out += rest.decode().splitlines()
    assert f"FAKE-DAILY joined {ROOM} with token secret-token" in out, "the token comes from DAILY_TOKEN"
    assert f"FAKE-DAILY left {ROOM}" in out, out
    assert took < 5, f"{sig}: {took:.1f} s to leave"
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert f"{sig} received" in stderr.decode()
    assert "secret-token" not in stderr.decode(), "the token must not be logged"


async def test_a_refused_join_ends_run_py_in_seconds_with_one_line():
    script = {"room_url": ROOM, "refuse": {ROOM: "meeting token has expired"}}
    started = time.monotonic()
    proc = await start_run_py(script, "--room-url", ROOM, "--persona", "echo")
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    took = time.monotonic() - started
    text = stderr.decode()
    assert proc.returncode == 2, text[-2000:]
    (line,) = [l for l in text.splitlines() if l.startswith("error:")]
    assert "token expired" in line and ROOM in line
    assert "Traceback" not in text
    # Start-up (imports, the voice) included; the join itself is refused at once
    # (see test_a_refused_join_ends_in_seconds_naming_the_cause).
    assert took < 30, f"{took:.1f} s from start to exit"


async def test_create_room_makes_a_room_and_an_expiring_token_and_joins_it():
    async with FakeDailyRest() as rest:
        proc = await start_run_py(
            {}, "--create-room", "--persona", "echo", "--participant-absent-timeout", "0.5",
            extra_env={"DAILY_API_KEY": rest.api_key, "DAILY_API_URL": rest.url},
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    out = stdout.decode()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "Daily room: https://acme.daily.co/made-here" in out
    assert "FAKE-DAILY joined https://acme.daily.co/made-here with token bot-token" in out
    now = time.time()
    (room,) = rest.rooms
    assert now < room["properties"]["exp"] <= now + 3700 and room["privacy"] == "public"
    (token,) = rest.tokens
    props = token["properties"]
    assert props["room_name"] == "made-here" and props["is_owner"] is True and now < props["exp"] <= now + 3700
    assert "participant_absent_timeout reached" in stderr.decode()


@pytest.mark.parametrize(
    ("error", "rejected"),
    [
        ("Unknown error occurred: server rejected WebSocket connection: HTTP 401", True),
        ("Error code: 401 - Incorrect API key provided", True),
        ("TTS context 37e13683-3f59-4401-9946-27c1c797e353 completed with no audio", False),
        ("LLM completion timeout", False),
    ],
)
def test_which_errors_say_a_key_was_rejected(error, rejected):
    from pipecat.frames.frames import ErrorFrame

    from bot.pipeline import key_rejection

    assert bool(key_rejection(ErrorFrame(error=error))) is rejected


# --------------------------------------------------------------------------- perception in a Daily room

WATCHER = Persona(
    persona_name="Watcher test",
    system_prompt="unused in echo mode",
    pipeline_mode="echo",
    layers=Layers(
        perception=PerceptionLayer(perception_model="landmarks", fps=2),
        tts=TTSLayer(tts_engine="piper"),
        replica=ReplicaLayer(replica_engine="off"),
    ),
)


class _VideoFrame:
    """What daily-python hands a video renderer."""

    def __init__(self, rgb):
        self.buffer = rgb.tobytes()
        self.height, self.width = rgb.shape[:2]
        self.color_format = "RGB"


@pytest.mark.models
async def test_perception_watches_one_persons_camera_and_the_next_when_they_leave(start_call):
    """With perception on, the bot captures the first person's camera and screen (not a bot's, not everyone's),
    reads a real face from it into cues sent to the room, and watches the next person when the first leaves."""
    import cv2

    from tests import face_images

    call = await start_call(WATCHER, participant_left_timeout=5)
    await call.joined()
    client = call.client
    await client.person_joins("helper-bot", "Notetaker", bot=True)
    await client.person_joins("alice", "Alice")
    await client.person_joins("bob", "Bob")
    await until(lambda: ("alice", "camera") in client.captured_video(), 10)
    assert client.captured_video() == {("alice", "camera"), ("alice", "screenVideo")}

    face = _VideoFrame(cv2.resize(face_images.astronaut(), (320, 320)))

    def alice_sends(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            client.send_video("alice", face)
            time.sleep(0.1)

    def cue_lines() -> list[str]:
        return [
            (m.get("properties") or {}).get("line") or ""
            for m, _ in client.sent
            if isinstance(m, dict) and m.get("event_type") == "conversation.perception_cues"
        ]

    sender = asyncio.create_task(asyncio.to_thread(alice_sends, 12))
    try:
        await until(lambda: any("looking at you" in line for line in cue_lines()), 15)
    finally:
        await sender
    assert call.bot.perception.tap.readings >= 2

    await client.person_leaves("alice")
    await until(lambda: ("bob", "camera") in client.captured_video(), 10)
    assert ("helper-bot", "camera") not in client.captured_video()


async def test_perception_off_captures_no_camera_in_a_daily_room(start_call):
    call = await start_call(participant_left_timeout=5)
    await call.joined()
    await call.client.person_joins("alice", "Alice")
    await asyncio.sleep(0.5)
    assert call.client.captured_video() == set()
