"""The API app: ``create_app(settings)``.

``/v2/conversations``, ``/v2/personas``, ``/v2/replicas`` (header
``x-api-key``), each conversation's page at ``/conversations/{id}/``, and
the OpenAPI at ``/openapi.json`` (``/docs`` to read it). The lifespan opens
the store, marks ended the conversations a dead server left active, starts
webhook delivery and a heartbeat, and on shutdown ends every conversation
this process hosts.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from loguru import logger

from api.auth import load_api_keys
from api.errors import install_error_handlers
from api.live import LiveConversations
from api.routers import conversations, personas, replicas, rooms
from api.storage import STALE_SERVER_S, Store, new_id, utcnow
from api.webhooks import WebhookSender
from bot.devroom import STATIC_DIR
from bot.engines import EmbeddedModels
from bot.settings import Settings

HEARTBEAT_S = 10.0
CONSOLE_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings, *, models: EmbeddedModels | None = None, heartbeat_s: float = HEARTBEAT_S) -> FastAPI:
    """The API server.

    Args:
        settings: Process settings (keys, data folder, database URL, webhooks).
        models: Shared embedded engines; made (and closed) by the app when None.
        heartbeat_s: How often this server says it is alive and sweeps for
            conversations ended elsewhere or left by dead servers.
    """
    owns_models = models is None
    models = models or EmbeddedModels(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.api_keys = load_api_keys(settings)
        if state.api_keys.generated:
            print(
                f"API key (made now, kept in {state.api_keys.source}; send it as x-api-key): "
                f"{state.api_keys.generated}",
                flush=True,
            )
        store = Store(settings.database_url)
        await store.create_tables()
        state.store = store
        state.server_id = new_id("s")
        webhooks = WebhookSender(
            attempts=settings.cvi_webhook_attempts,
            backoff_s=settings.cvi_webhook_backoff_s,
            timeout_s=settings.cvi_webhook_timeout_s,
        )
        await webhooks.start()
        state.webhooks = webhooks

        async def emit(conversation_id: str, event_type: str, message_type: str, properties: dict[str, Any]) -> None:
            """Record a system/application event and send its webhook (queued, never awaited)."""
            now = utcnow()
            await store.add_event(
                conversation_id, event_type=event_type, message_type=message_type, properties=properties, timestamp=now
            )
            row = await store.get_conversation(conversation_id)
            if row is None or not row.callback_url:
                return
            secret = state.api_keys.secret_for(row.api_key_id)
            if secret is None:
                logger.warning(
                    f"api: no webhook for {conversation_id} ({event_type}): the API key that created it is gone"
                )
                return
            webhooks.send(
                row.callback_url,
                {
                    "conversation_id": conversation_id,
                    "event_type": event_type,
                    "message_type": message_type,
                    "timestamp": now.isoformat(),
                    "properties": properties,
                },
                secret=secret,
            )

        state.emit = emit
        state.live = LiveConversations(
            settings=settings, store=store, models=models, emit=emit, server_id=state.server_id
        )
        await store.heartbeat(state.server_id)
        await _end_orphans(state)
        sweeper = asyncio.create_task(_sweep(state, heartbeat_s), name="api-heartbeat")
        logger.info(f"api: ready (server {state.server_id}, storage {store.backend}, keys from {state.api_keys.source})")
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await state.live.close()
            await webhooks.close()
            await store.forget_server(state.server_id)
            await store.close()
            if owns_models:
                await models.close()

    app = FastAPI(
        title="open-cvi API",
        version="0.1.0",
        description="Conversational video over REST, in the contract of the hosted products "
        "(x-api-key, /v2/conversations, /v2/personas, /v2/replicas).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(conversations.router)
    app.include_router(personas.router, prefix="/v2/personas")
    app.include_router(replicas.router, prefix="/v2/replicas")
    # The hosted API's newer names for the same resources.
    app.include_router(personas.router, prefix="/v2/pals", tags=["pals (personas)"])
    app.include_router(replicas.router, prefix="/v2/faces", tags=["faces (replicas)"])
    app.include_router(rooms.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        """A small page to list, start and end conversations (it asks for the API key)."""
        return FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/ui", StaticFiles(directory=CONSOLE_DIR), name="ui")
    return app


async def _end_orphans(state) -> None:
    for conversation_id in await state.store.end_orphans(alive_server_id=state.server_id, stale_after_s=STALE_SERVER_S):
        row = await state.store.get_conversation(conversation_id)
        logger.info(f"api: conversation {conversation_id} was left active by a stopped server; marked ended")
        await state.emit(conversation_id, "system.shutdown", "system", {"shutdown_reason": row.shutdown_reason})


async def _sweep(state, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await state.store.heartbeat(state.server_id)
            await _end_orphans(state)
            for conversation_id in state.live.ids:
                row = await state.store.get_conversation(conversation_id)
                if row is None or row.status == "ended":
                    reason = row.shutdown_reason if row is not None else "conversation deleted"
                    state.live.end_soon(conversation_id, reason or "ended elsewhere")
        except Exception:
            logger.exception("api: heartbeat failed; trying again")


__all__ = ["create_app"]
