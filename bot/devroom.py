"""The local dev room: our own call page and SmallWebRTC signalling over HTTP.

``create_devroom_app(on_connection=...)`` returns a FastAPI app that serves the
page in ``bot/static/`` at ``/`` (no CDN: it works offline) and the signalling
endpoints the page and :class:`bot.devroom_client.DevRoomClient` speak:

- ``POST /api/offer``: ``{sdp, type, pc_id?, restart_pc?}`` -> ``{sdp, type, pc_id}``.
  A new ``pc_id`` starts ``on_connection(connection)`` as a background task;
  a known one renegotiates that peer.
- ``PATCH /api/offer``: ``{pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]}``
  adds ICE candidates trickled by the browser.
- ``GET /api/health``: ``{"status": "ok"}``.

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
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import aioice.ice
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger

from bot.jitter_buffers import shorten_audio_jitter_buffers
from pydantic import BaseModel, Field, field_validator

from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.request_handler import (
    IceCandidate,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)

STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_IPV4 = "127.0.0.1"

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


class DevRoom:
    """The dev room's running state: peers and one background task per peer.

    Available as ``app.state.devroom``.

    Args:
        on_connection: Runs a bot for one new peer connection; started as a
            background task, so the offer's answer never waits for it.
        shutdown_timeout_s: On shutdown, how long the bots get to finish after
            their peers are disconnected before their tasks are cancelled.
    """

    def __init__(
        self,
        *,
        on_connection: OnConnection,
        shutdown_timeout_s: float = 5.0,
        audio_jitter_prefetch: int | None = None,
    ):
        self._on_connection = on_connection
        self._shutdown_timeout_s = shutdown_timeout_s
        self._audio_jitter_prefetch = audio_jitter_prefetch
        self._handler = SmallWebRTCRequestHandler(ice_servers=[])
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def tasks(self) -> frozenset[asyncio.Task[None]]:
        """The bot tasks still running, one per connected peer."""
        return frozenset(self._tasks)

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

    async def _start_bot(self, connection: SmallWebRTCConnection) -> None:
        if self._audio_jitter_prefetch is not None:
            shorten_audio_jitter_buffers(connection.pc, prefetch=self._audio_jitter_prefetch)
        task = asyncio.create_task(
            self._run_bot(connection), name=f"devroom-bot-{connection.pc_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_bot(self, connection: SmallWebRTCConnection) -> None:
        logger.info(f"devroom: peer {connection.pc_id} joined")
        try:
            await self._on_connection(connection)
        except asyncio.CancelledError:
            logger.info(f"devroom: bot for peer {connection.pc_id} cancelled")
            raise
        except Exception:
            logger.exception(f"devroom: bot for peer {connection.pc_id} failed")
        finally:
            logger.info(f"devroom: bot for peer {connection.pc_id} finished")

    async def close(self) -> None:
        """Disconnect every peer, give the bots time to finish, cancel the rest."""
        await self._handler.close()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self._shutdown_timeout_s)
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

    Returns:
        The FastAPI app; its running state is ``app.state.devroom``.
    """
    if allow_loopback_ice:
        allow_loopback_ice_candidates()
    room = DevRoom(
        on_connection=on_connection,
        shutdown_timeout_s=shutdown_timeout_s,
        audio_jitter_prefetch=audio_jitter_prefetch,
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

    @app.post("/api/offer")
    async def offer(body: WebRTCOffer) -> WebRTCAnswer:
        return await room.handle_offer(body)

    @app.patch("/api/offer")
    async def patch_offer(body: IceCandidatesPatch) -> dict[str, str]:
        await room.handle_patch(body)
        return {"status": "ok"}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
