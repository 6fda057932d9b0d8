"""The local dev room: our own call page and SmallWebRTC signalling over HTTP.

``create_devroom_app(on_connection=...)`` returns a FastAPI app that serves the
page in ``bot/static/`` at ``/`` (no CDN: it works offline) and the signalling
endpoints the page and :class:`bench.devroom_client.DevRoomClient` speak:

- ``POST /api/offer``: ``{sdp, type, pc_id?, restart_pc?}`` -> ``{sdp, type, pc_id}``.
  A new ``pc_id`` starts ``on_connection(connection)`` as a background task;
  a known one renegotiates that peer.
- ``PATCH /api/offer``: ``{pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]}``
  adds ICE candidates trickled by the browser.
- ``POST /api/leave``: ``{pc_id}`` (any content type, so the page's
  ``navigator.sendBeacon`` on ``pagehide`` can send it): the peer is gone; its
  bot ends now. 404 for an unknown ``pc_id``.
- ``GET /api/peers``: the peers whose bots are running, and the latest
  departures (why each peer was found gone, and how long its bot took to end).
- ``GET /api/health``: ``{"status": "ok"}``.

A peer that goes away ends its bot at the first sign of it (see
:class:`PeerWatch`): the page's ``pagehide`` beacon, the data channel
closing, the ICE or peer connection failing or closing, or, when the peer
vanishes without a word (a crashed browser, a lost network), no ping and no
microphone packet for ``peer_silence_timeout_s``. The dev room only reports
the departure by closing the peer connection; the bot's own transport handler
(``on_client_disconnected``) ends the conversation, as for a clean leave.

No STUN or TURN servers are used: the dev room is for peers on this machine
or its LAN, and it must connect on a machine whose only interface is
loopback (see :func:`allow_loopback_ice_candidates`).

What a peer must do (pipecat 1.14's SmallWebRTC; the page and the Python
client both do it):

- Transceivers in this order: 0 audio (microphone), 1 video (camera), and
  optionally 2 video (screen). Keep 1 ``sendrecv`` even without a camera.
- Open a data channel (``"chat"``, ordered) and send ``"ping: <ms>"`` every
  second; without pings for 3 s pipecat counts the peer as gone.
- Data channel messages are JSON. ``{"type": "signalling", "message": {"type":
  "renegotiate"}}`` asks the peer for a new offer (POST with its ``pc_id``);
  ``{"type": "peerLeft"}`` inside the same envelope means the bot hung up. A
  peer sends ``{"type": "signalling", "message": {"type": "trackStatus",
  "receiver_index": 0|1, "enabled": bool}}`` to say a track is on or off.
- App messages: the bot's ``OutputTransportMessage[Urgent]Frame(message=d)`` reaches
  the peer as ``json.dumps(d)`` verbatim, no envelope. Inbound, the connection
  reads ``message["type"]`` first and drops a message without one (KeyError,
  logged), so peers send ``{"type": <event_type>, "message_type":
  "conversation", "event_type": ..., "properties": {...}}``; the pipeline
  gets the whole dict as ``InputTransportMessageFrame.message``.
- Camera: a peer sends none until the bot asks for it. The bot asks with
  :func:`camera_request` (an app message, ``{"type": "devroom.camera",
  "send": true, "framerate", "width", "height"}``; ``"send": false`` stops
  it), and the page then sends its camera at that rate and size. A bot whose
  layers look at no video never asks, so it decodes no camera frame.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aioice.ice
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger
from pydantic import BaseModel, Field, ValidationError, field_validator

from bot.jitter_buffers import shorten_audio_jitter_buffers
from bot.webrtc_audio import encode_audio_on_the_loop
from bot.webrtc_video import use_replica_video_encoder

from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    IceCandidate,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_IPV4 = "127.0.0.1"
# A peer silent this long (no ping, no microphone packet; the page pings every
# second) has vanished: a crashed browser or a lost network.
PEER_SILENCE_TIMEOUT_S = 4.0
# A new peer never heard from in this long (it sent an offer, then nothing).
PEER_FIRST_SIGN_TIMEOUT_S = 30.0
# How long a bot may take to end after its peer left before it is cancelled.
BOT_END_TIMEOUT_S = 3.0
DEPARTURES_KEPT = 50
CAMERA_REQUEST_TYPE = "devroom.camera"

OnConnection = Callable[[SmallWebRTCConnection], Awaitable[None]]


def allow_loopback_ice_candidates() -> None:
    """Make aioice offer 127.0.0.1 as a host ICE candidate.

    aioice gathers host candidates from ``aioice.ice.get_host_addresses``, which
    skips 127.0.0.1 on purpose, so two peers on a machine whose only interface
    is loopback never find a pair. This wraps that function (looked up by
    ``Connection.gather_candidates`` at call time) so it also returns
    127.0.0.1 when IPv4 is in use. The extra candidate is harmless elsewhere: a
    remote peer's check to it fails and ICE uses the other pairs. It affects
    every aiortc peer in the process (the dev room and its Python client alike)
    and is applied at most once.
    """
    current = aioice.ice.get_host_addresses
    if getattr(current, "adds_loopback", False):
        return

    def get_host_addresses_with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = current(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        if use_ipv4 and LOOPBACK_IPV4 not in addresses:
            addresses.append(LOOPBACK_IPV4)
        return addresses

    get_host_addresses_with_loopback.adds_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses_with_loopback
    logger.debug("devroom: aioice now offers 127.0.0.1 host candidates")


class WebRTCOffer(BaseModel):
    """The SDP offer a peer posts to ``POST /api/offer``."""

    sdp: str = Field(min_length=1)
    type: Literal["offer"]
    pc_id: str | None = None
    restart_pc: bool = False
    request_data: dict[str, Any] | None = Field(default=None, alias="requestData")

    model_config = {"populate_by_name": True}

    @field_validator("sdp")
    @classmethod
    def sdp_offers_audio(cls, sdp: str) -> str:
        """An SDP session whose first media section is audio, as pipecat maps it."""
        if not sdp.startswith("v=0"):
            raise ValueError("must be an SDP session description starting with 'v=0'")
        first_media = next((line for line in sdp.splitlines() if line.startswith("m=")), None)
        if first_media is None or not first_media.startswith("m=audio"):
            raise ValueError(
                "the first media section must be audio (transceivers: audio, camera video, screen video)"
            )
        return sdp


class WebRTCAnswer(BaseModel):
    """The SDP answer returned for an offer; ``pc_id`` names the peer from then on."""

    sdp: str
    type: str
    pc_id: str


class IceCandidateParams(BaseModel):
    """One trickled ICE candidate, as the browser's ``RTCIceCandidate`` gives it."""

    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


class IceCandidatesPatch(BaseModel):
    """The body of ``PATCH /api/offer``."""

    pc_id: str = Field(min_length=1)
    candidates: list[IceCandidateParams]


class HealthPublic(BaseModel):
    """The body of ``GET /api/health``."""

    status: Literal["ok"] = "ok"


class PageConfigPublic(BaseModel):
    """The body of ``GET /api/config``: what the page needs to know of the bot it talks to."""

    persona: str | None = None
    pipeline_mode: str = "full"
    closed_captions: bool = False


class PeerLeave(BaseModel):
    """The body of ``POST /api/leave``: the page is going away."""

    pc_id: str = Field(min_length=1)


class PeerPublic(BaseModel):
    """A peer whose bot is running."""

    pc_id: str
    joined_s_ago: float


class DeparturePublic(BaseModel):
    """How a peer was found gone, and how long its bot took to end after that."""

    pc_id: str
    reason: str
    bot_ended_after_s: float | None = Field(
        description="seconds from the first sign of the departure to the bot's end; null while it is ending"
    )


class PeersPublic(BaseModel):
    """The body of ``GET /api/peers``."""

    peers: list[PeerPublic]
    departures: list[DeparturePublic]


def camera_request(
    *, send: bool = True, framerate: float | None = None, width: int | None = None, height: int | None = None
) -> dict[str, Any]:
    """The app message that asks a dev room peer to send its camera (or to stop).

    Send it with ``connection.send_app_message(...)`` (pipecat queues it until
    the data channel opens). ``framerate``, ``width`` and ``height`` are what
    the layer that looks at the camera wants; ``None`` leaves the camera's own.
    """
    message: dict[str, Any] = {"type": CAMERA_REQUEST_TYPE, "send": send}
    if send:
        message.update(framerate=framerate, width=width, height=height)
    return message


class PeerWatch:
    """Watches one peer connection for the first sign that the peer is gone.

    Signs, whichever comes first: the data channel closes, the ICE transport
    or the peer connection fails or closes, or the peer is silent (no data
    channel message and no microphone packet) for ``silence_timeout_s`` after
    it has been heard once, or is never heard within ``first_sign_timeout_s``.
    Calls ``on_gone(reason)`` once.

    Args:
        connection: The peer's connection.
        on_gone: Called once with a short reason.
        silence_timeout_s: Silence that means the peer vanished (the page and
            :class:`bench.devroom_client.DevRoomClient` ping every second).
        first_sign_timeout_s: How long a new peer may take to be heard at all.
        interval_s: How often the silence is checked.
    """

    def __init__(
        self,
        connection: SmallWebRTCConnection,
        *,
        on_gone: Callable[[str], Awaitable[None]],
        silence_timeout_s: float = PEER_SILENCE_TIMEOUT_S,
        first_sign_timeout_s: float = PEER_FIRST_SIGN_TIMEOUT_S,
        interval_s: float = 0.25,
    ):
        self._connection = connection
        self._on_gone = on_gone
        self._silence_timeout_s = silence_timeout_s
        self._first_sign_timeout_s = first_sign_timeout_s
        self._interval_s = interval_s
        self._pc: Any = None
        self._started_at = time.monotonic()
        self._heard_at: float | None = None
        self._audio_packets = 0
        self._gone = False
        self._task: asyncio.Task[None] | None = None
        self._gone_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Listen to the connection and start checking for silence."""
        self._attach(self._connection.pc)
        self._task = asyncio.create_task(self._check_silence(), name=f"devroom-watch-{self._connection.pc_id}")

    async def stop(self) -> None:
        """Stop watching (the bot has ended)."""
        self._gone = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def _attach(self, pc: Any) -> None:
        self._pc = pc

        @pc.on("connectionstatechange")
        def on_connection_state() -> None:
            if pc is self._pc and pc.connectionState in ("failed", "closed"):
                self._notice(f"peer connection {pc.connectionState}")

        @pc.on("iceconnectionstatechange")
        def on_ice_state() -> None:
            if pc is self._pc and pc.iceConnectionState in ("failed", "closed"):
                self._notice(f"ICE {pc.iceConnectionState}")

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            self._heard()

            @channel.on("message")
            def on_message(_message: Any) -> None:
                self._heard()

            @channel.on("close")
            def on_close() -> None:
                if pc is self._pc:
                    self._notice("data channel closed")

    def _heard(self) -> None:
        self._heard_at = time.monotonic()

    def _notice(self, reason: str) -> None:
        if self._gone:
            return
        self._gone = True
        self._gone_task = asyncio.create_task(self._on_gone(reason))

    async def _microphone_packets(self) -> int:
        transceivers = self._pc.getTransceivers()
        if not transceivers:
            return 0
        report = await transceivers[0].receiver.getStats()
        return sum(getattr(s, "packetsReceived", 0) for s in report.values() if s.type == "inbound-rtp")

    async def _check_silence(self) -> None:
        last_tick = time.monotonic()
        while not self._gone:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            stalled = now - last_tick > self._interval_s + 1.0
            last_tick = now
            if self._connection.pc is not self._pc:
                # pipecat replaced the peer connection (a renegotiation with restart_pc).
                self._attach(self._connection.pc)
            packets = await self._microphone_packets()
            if packets != self._audio_packets:
                self._audio_packets = packets
                self._heard()
            if stalled and self._heard_at is not None:
                # This loop was blocked: what the peer sent meanwhile is not read yet.
                self._heard_at = max(self._heard_at, now - self._interval_s)
            if self._heard_at is None:
                if now - self._started_at > self._first_sign_timeout_s:
                    self._notice(f"never heard from in {self._first_sign_timeout_s:.0f} s")
            elif now - self._heard_at > self._silence_timeout_s:
                self._notice(f"silent for {now - self._heard_at:.1f} s")


@dataclass
class _Peer:
    connection: SmallWebRTCConnection
    task: asyncio.Task[None]
    watch: PeerWatch
    joined_at: float = field(default_factory=time.monotonic)
    gone_at: float | None = None
    reason: str | None = None


class DevRoom:
    """The dev room's running state: peers and one background task per peer.

    Available as ``app.state.devroom``.

    Args:
        on_connection: Runs a bot for one new peer connection; started as a
            background task, so the offer's answer never waits for it.
        shutdown_timeout_s: On shutdown, how long the bots get to finish after
            their peers are disconnected before their tasks are cancelled.
        peer_silence_timeout_s: How long a peer may send nothing (no ping, no
            microphone packet) before it counts as gone; see :class:`PeerWatch`.
        bot_end_timeout_s: How long a bot gets to end after its peer is found
            gone before its task is cancelled.
    """

    def __init__(
        self,
        *,
        on_connection: OnConnection,
        shutdown_timeout_s: float = 5.0,
        audio_jitter_prefetch: int | None = None,
        peer_silence_timeout_s: float = PEER_SILENCE_TIMEOUT_S,
        bot_end_timeout_s: float = BOT_END_TIMEOUT_S,
    ):
        self._on_connection = on_connection
        self._shutdown_timeout_s = shutdown_timeout_s
        self._audio_jitter_prefetch = audio_jitter_prefetch
        self._peer_silence_timeout_s = peer_silence_timeout_s
        self._bot_end_timeout_s = bot_end_timeout_s
        self._handler = SmallWebRTCRequestHandler(ice_servers=[])
        self._peers: dict[str, _Peer] = {}
        self._departures: deque[DeparturePublic] = deque(maxlen=DEPARTURES_KEPT)
        self._closing = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The bot tasks still running, one per connected peer."""
        return frozenset(peer.task for peer in self._peers.values())

    @property
    def departures(self) -> list[DeparturePublic]:
        """The latest peers found gone, oldest first."""
        return list(self._departures)

    def peers(self) -> PeersPublic:
        """The running peers and the latest departures."""
        now = time.monotonic()
        return PeersPublic(
            peers=[PeerPublic(pc_id=pc_id, joined_s_ago=round(now - p.joined_at, 3)) for pc_id, p in self._peers.items()],
            departures=self.departures,
        )

    async def handle_offer(self, offer: WebRTCOffer) -> WebRTCAnswer:
        """Answer an offer: a new peer (starts a bot) or a known one (renegotiates)."""
        request = SmallWebRTCRequest(
            sdp=offer.sdp,
            type=offer.type,
            pc_id=offer.pc_id,
            restart_pc=offer.restart_pc,
            request_data=offer.request_data,
        )
        try:
            answer = await self._handler.handle_web_request(request, self._start_bot)
        except ValueError as e:
            # aiortc rejects an SDP it cannot parse or answer with ValueError.
            raise HTTPException(status_code=400, detail=f"sdp: not a usable SDP offer ({e})") from e
        if answer is None:
            raise RuntimeError("SmallWebRTC produced no SDP answer")
        return WebRTCAnswer(**answer)

    async def handle_patch(self, patch: IceCandidatesPatch) -> None:
        """Add the ICE candidates a peer trickled; 404 for an unknown ``pc_id``."""
        request = SmallWebRTCPatchRequest(
            pc_id=patch.pc_id,
            candidates=[
                IceCandidate(
                    candidate=c.candidate,
                    sdp_mid=c.sdp_mid,  # type: ignore[arg-type]
                    sdp_mline_index=c.sdp_mline_index,  # type: ignore[arg-type]
                )
                for c in patch.candidates
            ],
        )
        await self._handler.handle_patch_request(request)

    async def handle_leave(self, leave: PeerLeave) -> None:
        """The page says it is going away: end its bot now; 404 for an unknown ``pc_id``."""
        if leave.pc_id not in self._peers:
            known = ", ".join(self._peers) or "none"
            raise HTTPException(status_code=404, detail=f"pc_id {leave.pc_id!r} not found; running peers: {known}")
        await self._peer_gone(leave.pc_id, "pagehide beacon")

    async def _start_bot(self, connection: SmallWebRTCConnection) -> None:
        if self._audio_jitter_prefetch is not None:
            shorten_audio_jitter_buffers(connection.pc, prefetch=self._audio_jitter_prefetch)
        use_replica_video_encoder(connection.pc)
        encode_audio_on_the_loop(connection.pc)
        pc_id = connection.pc_id

        async def on_gone(reason: str) -> None:
            await self._peer_gone(pc_id, reason)

        watch = PeerWatch(connection, on_gone=on_gone, silence_timeout_s=self._peer_silence_timeout_s)
        task = asyncio.create_task(self._run_bot(connection), name=f"devroom-bot-{pc_id}")
        self._peers[pc_id] = _Peer(connection=connection, task=task, watch=watch)
        watch.start()

    async def _run_bot(self, connection: SmallWebRTCConnection) -> None:
        pc_id = connection.pc_id
        logger.info(f"devroom: peer {pc_id} joined")
        try:
            await self._on_connection(connection)
        except asyncio.CancelledError:
            logger.info(f"devroom: bot for peer {pc_id} cancelled")
            raise
        except Exception:
            logger.exception(f"devroom: bot for peer {pc_id} failed")
        finally:
            peer = self._peers.pop(pc_id, None)
            if peer is not None:
                await peer.watch.stop()
                if peer.gone_at is not None:
                    took = time.monotonic() - peer.gone_at
                    self._record_departure(pc_id, peer.reason or "", took)
                    logger.info(f"devroom: bot for peer {pc_id} finished {took:.2f} s after the peer left ({peer.reason})")
                    return
            logger.info(f"devroom: bot for peer {pc_id} finished")

    def _record_departure(self, pc_id: str, reason: str, bot_ended_after_s: float | None) -> None:
        for i, departure in enumerate(self._departures):
            if departure.pc_id == pc_id:
                del self._departures[i]
                break
        self._departures.append(
            DeparturePublic(
                pc_id=pc_id,
                reason=reason,
                bot_ended_after_s=None if bot_ended_after_s is None else round(bot_ended_after_s, 3),
            )
        )

    async def _peer_gone(self, pc_id: str, reason: str) -> None:
        """Report a departure: close the peer connection, so the bot's transport ends the call."""
        peer = self._peers.get(pc_id)
        if peer is None or peer.gone_at is not None or self._closing:
            return
        peer.gone_at = time.monotonic()
        peer.reason = reason
        self._record_departure(pc_id, reason, None)
        logger.info(f"devroom: peer {pc_id} gone ({reason}); ending its bot")
        # Closing the connection fires pipecat's "closed" event, which the bot's
        # transport reports as on_client_disconnected: the one way a call ends.
        await peer.connection.disconnect()
        self._spawn(self._cancel_if_still_running(pc_id, peer.task))

    async def _cancel_if_still_running(self, pc_id: str, task: asyncio.Task[None]) -> None:
        done, _ = await asyncio.wait({task}, timeout=self._bot_end_timeout_s)
        if not done:
            logger.warning(
                f"devroom: bot for peer {pc_id} still running {self._bot_end_timeout_s:.0f} s after its peer left; cancelling it"
            )
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Disconnect every peer, give the bots time to finish, cancel the rest."""
        self._closing = True
        await self._handler.close()
        tasks = self.tasks
        if not tasks:
            return
        _, pending = await asyncio.wait(set(tasks), timeout=self._shutdown_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning(f"devroom: cancelled {len(pending)} bot(s) still running at shutdown")
            await asyncio.gather(*pending, return_exceptions=True)


def create_devroom_app(
    *,
    on_connection: OnConnection,
    allow_loopback_ice: bool = True,
    shutdown_timeout_s: float = 5.0,
    audio_jitter_prefetch: int | None = 0,
    peer_silence_timeout_s: float = PEER_SILENCE_TIMEOUT_S,
    page_config: PageConfigPublic | None = None,
) -> FastAPI:
    """Create the dev room app: our page at ``/`` and SmallWebRTC signalling.

    Args:
        on_connection: Runs the bot for one peer (e.g. builds a
            ``SmallWebRTCTransport`` around the connection and runs the
            pipeline until the peer leaves). Started as a background task per
            new peer; exceptions are logged, never raised into the request.
        allow_loopback_ice: Offer 127.0.0.1 ICE candidates, so peers on a
            loopback-only machine connect; see
            :func:`allow_loopback_ice_candidates`.
        audio_jitter_prefetch: Packets the bot's audio receivers buffer before
            playing out (aiortc's default is 4, i.e. 80 ms; 0 releases each
            packet as it arrives in order); see
            :func:`shorten_audio_jitter_buffers`. ``None`` keeps aiortc's.
        shutdown_timeout_s: On app shutdown, how long bots get to finish
            after their peers are disconnected before they are cancelled.
        peer_silence_timeout_s: How long a peer may send nothing before it
            counts as gone (see :class:`PeerWatch`).
        page_config: Served at ``GET /api/config``: the persona and its
            pipeline mode (in ``echo`` mode the page's Say box sends
            ``conversation.echo`` instead of ``conversation.respond``).

    Returns:
        The FastAPI app; its running state is ``app.state.devroom``.
    """
    if allow_loopback_ice:
        allow_loopback_ice_candidates()
    room = DevRoom(
        on_connection=on_connection,
        shutdown_timeout_s=shutdown_timeout_s,
        audio_jitter_prefetch=audio_jitter_prefetch,
        peer_silence_timeout_s=peer_silence_timeout_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await room.close()

    app = FastAPI(title="open-cvi dev room", lifespan=lifespan)
    app.state.devroom = room

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/health")
    async def health() -> HealthPublic:
        return HealthPublic()

    config = page_config or PageConfigPublic()

    @app.get("/api/config")
    async def page_config_() -> PageConfigPublic:
        return config

    @app.post("/api/offer")
    async def offer(body: WebRTCOffer) -> WebRTCAnswer:
        return await room.handle_offer(body)

    @app.patch("/api/offer")
    async def patch_offer(body: IceCandidatesPatch) -> dict[str, str]:
        await room.handle_patch(body)
        return {"status": "ok"}

    @app.post("/api/leave")
    async def leave(request: Request) -> dict[str, str]:
        # navigator.sendBeacon posts text/plain, so the JSON is read whatever the content type.
        raw = await request.body()
        try:
            body = PeerLeave.model_validate_json(raw)
        except ValidationError as e:
            raise RequestValidationError(
                [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
            ) from e
        await room.handle_leave(body)
        return {"status": "ok"}

    @app.get("/api/peers")
    async def peers() -> PeersPublic:
        return room.peers()

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
