"""daily-python's ``CallClient`` faked at the network seam, for pipecat's real ``DailyTransport``.

Everything above the seam is real: pipecat's ``DailyTransportClient``,
``DailyTransport`` and its input/output, daily-python's native speaker device
and custom audio/video tracks. Only the call to Daily's servers is replaced:
``join``/``leave`` answer at once (or refuse, for rooms listed in
``FakeDaily.refuse``), app messages are recorded, and the test makes people
join, leave and send app messages. Those events reach the transport from
another thread, as daily-python delivers them.

``install(monkeypatch)`` patches pipecat's Daily module; ``install_for_process()``
does the same in a child process (see ``daily_bot_process.py``).
"""

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)


@dataclass
class FakeDaily:
    """The fake Daily backend: the clients, the rooms it refuses, and what was sent."""

    refuse: dict[str, str] = field(default_factory=dict)
    clients: list["FakeCallClient"] = field(default_factory=list)
    on_join: Callable[["FakeCallClient"], None] | None = None

    def in_room(self, room_url: str) -> list["FakeCallClient"]:
        """Clients that joined ``room_url`` (in order)."""
        return [c for c in self.clients if c.room_url == room_url]

    def client(self, room_url: str) -> "FakeCallClient":
        """The (one) client that joined ``room_url``."""
        (client,) = self.in_room(room_url)
        return client


class FakeCallClient:
    """A ``daily.CallClient`` that never touches the network."""

    backend: FakeDaily = FakeDaily()

    def __init__(self, event_handler: Any = None):
        self.handler = event_handler
        self.local_id = f"bot-{next(_ids)}"
        self.room_url: str | None = None
        self.token: str | None = None
        self.user_name: str | None = None
        self.joined = False
        self.left = False
        self.released = False
        self.sent: list[tuple[Any, str | None]] = []
        self.remote: dict[str, dict[str, Any]] = {}
        self.audio_renderers: dict[str, Callable] = {}
        self.video_renderers: dict[tuple[str, str], Callable] = {}
        self.backend.clients.append(self)

    # --- the CallClient API pipecat uses --------------------------------------
    def update_subscription_profiles(self, profiles: Any, completion: Callable | None = None) -> None:
        if completion:
            completion(None)

    def set_user_name(self, name: str) -> None:
        self.user_name = name

    def join(self, room_url: str, token: str | None = None, completion: Callable | None = None, **_: Any) -> None:
        self.room_url, self.token = room_url, token
        error = self.backend.refuse.get(room_url)
        if error:
            completion(None, error)
            return
        self.joined = True
        completion({"participants": {"local": {"id": self.local_id}}, "meetingSession": {"id": "meeting-1"}}, None)
        if self.backend.on_join:
            self.backend.on_join(self)

    def leave(self, completion: Callable | None = None) -> None:
        self.left = True
        if completion:
            completion(None)

    def release(self) -> None:
        self.released = True

    def send_app_message(self, message: Any, participant_id: str | None = None, completion: Callable | None = None) -> None:
        self.sent.append((message, participant_id))
        if completion:
            completion(None)

    def participants(self) -> dict[str, Any]:
        return {"local": {"id": self.local_id, "info": {"isLocal": True}}, **self.remote}

    def participant_counts(self) -> dict[str, int]:
        return {"present": len(self.remote) + 1, "hidden": 0}

    def update_subscriptions(self, participant_settings: Any = None, profile_settings: Any = None, completion: Callable | None = None) -> None:
        if completion:
            completion(None)

    def update_inputs(self, settings: Any = None, completion: Callable | None = None) -> None:
        if completion:
            completion(None)

    def update_publishing(self, settings: Any = None, completion: Callable | None = None) -> None:
        if completion:
            completion(None)

    def update_remote_participants(self, remote_participants: Any = None, completion: Callable | None = None) -> None:
        if completion:
            completion(None)

    def set_audio_renderer(self, participant_id: str, callback: Callable, **_: Any) -> None:
        self.audio_renderers[participant_id] = callback

    def set_video_renderer(self, participant_id: str, callback: Callable, video_source: str = "camera", **_: Any) -> None:
        self.video_renderers[(participant_id, video_source)] = callback

    # --- what people in the room do (delivered from another thread) -----------
    def _emit_threaded(self, method: str, *args: Any) -> None:
        getattr(self.handler, method)(*args)

    async def emit(self, method: str, *args: Any) -> None:
        await asyncio.to_thread(self._emit_threaded, method, *args)

    async def person_joins(self, pid: str, name: str = "someone", *, bot: bool = False) -> None:
        info: dict[str, Any] = {"userName": name, "isLocal": False}
        if bot:
            info["userData"] = {"bot": True}
        participant = {"id": pid, "info": info}
        self.remote[pid] = participant
        await self.emit("on_participant_joined", participant)

    async def person_leaves(self, pid: str) -> None:
        participant = self.remote.pop(pid)
        await self.emit("on_participant_left", participant, "leftCall")

    async def app_message(self, message: Any, sender: str) -> None:
        await self.emit("on_app_message", message, sender)

    async def call_ends(self) -> None:
        """The bot is ejected, or the meeting ends: daily-python reports the call state 'left'."""
        await self.emit("on_call_state_updated", "left")

    def send_video(self, participant_id: str, frame: Any, source: str = "camera") -> None:
        """A video frame from ``participant_id``'s ``source`` (call from a thread other than the event loop's)."""
        self.video_renderers[(participant_id, source)](participant_id, frame, source)

    def captured_video(self) -> set[tuple[str, str]]:
        """(participant, source) of every video the bot subscribed to."""
        return set(self.video_renderers)

    def events_sent(self) -> list[str]:
        """The event_type of every app message the bot sent into the room."""
        return [m.get("event_type") for m, _ in self.sent if isinstance(m, dict)]


def install(monkeypatch) -> FakeDaily:
    """Patch pipecat's Daily transport to use ``FakeCallClient``; returns the fake backend."""
    import pipecat.transports.daily.transport as daily_transport

    backend = FakeDaily()
    monkeypatch.setattr(FakeCallClient, "backend", backend)
    monkeypatch.setattr(daily_transport, "CallClient", FakeCallClient)
    return backend


def install_for_process(script: dict[str, Any]) -> FakeDaily:
    """In a child process: patch Daily, and play ``script`` once the bot joins.

    ``script``: ``{"refuse": {room_url: error}, "people": [{"id", "name", "after_s"}]}``.
    Prints ``FAKE-DAILY <event>`` lines on stdout for the parent test to read.
    """
    import pipecat.transports.daily.transport as daily_transport

    backend = FakeDaily(refuse=dict(script.get("refuse", {})))
    FakeCallClient.backend = backend
    daily_transport.CallClient = FakeCallClient
    original_leave = FakeCallClient.leave

    def leave(self, completion=None):
        print(f"FAKE-DAILY left {self.room_url}", flush=True)
        original_leave(self, completion)

    FakeCallClient.leave = leave

    def on_join(client: FakeCallClient) -> None:
        print(f"FAKE-DAILY joined {client.room_url} with token {client.token}", flush=True)
        if script.get("people") is None or client.room_url != script.get("room_url"):
            return

        def people() -> None:
            for person in script["people"]:
                time.sleep(person.get("after_s", 0.2))
                pid = person["id"]
                participant = {"id": pid, "info": {"userName": person.get("name", pid), "isLocal": False}}
                client.remote[pid] = participant
                client.handler.on_participant_joined(participant)
                print(f"FAKE-DAILY person joined {pid}", flush=True)

        threading.Thread(target=people, daemon=True).start()

    backend.on_join = on_join
    return backend


class FakeDailyRest:
    """Daily's REST API on loopback (``POST /rooms``, ``POST /meeting-tokens``), as pipecat's
    ``DailyRESTHelper`` calls it: the network seam of room creation.

    Every room is ``room_url``; the bot's owner token is ``bot-token`` and each
    participant token ``participant-token-<n>``. What was asked is kept in
    ``rooms`` and ``tokens`` (the request bodies).
    """

    def __init__(self, *, api_key: str = "daily-key", room_url: str = "https://acme.daily.co/made-here"):
        self.api_key = api_key
        self.room_url = room_url
        self.rooms: list[dict[str, Any]] = []
        self.tokens: list[dict[str, Any]] = []
        self.url = ""

    async def _rooms(self, request):
        from aiohttp import web

        assert request.headers["Authorization"] == f"Bearer {self.api_key}"
        body = await request.json()
        self.rooms.append(body)
        return web.json_response({
            "id": f"r-{len(self.rooms)}", "name": self.room_url.rsplit("/", 1)[1], "api_created": True,
            "privacy": body.get("privacy", "public"), "url": self.room_url,
            "created_at": "2026-12-01T00:00:00.000Z", "config": body.get("properties", {}),
        })

    async def _tokens(self, request):
        from aiohttp import web

        assert request.headers["Authorization"] == f"Bearer {self.api_key}"
        body = await request.json()
        self.tokens.append(body)
        owner = body.get("properties", {}).get("is_owner")
        return web.json_response({"token": "bot-token" if owner else f"participant-token-{len(self.tokens)}"})

    async def __aenter__(self) -> "FakeDailyRest":
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/rooms", self._rooms)
        app.router.add_post("/meeting-tokens", self._tokens)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()
