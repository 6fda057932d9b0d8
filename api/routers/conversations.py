"""``/v2/conversations``: create one (a room with a bot waiting), list, get, end, delete."""

import hashlib
import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from loguru import logger

from api.auth import require_api_key
from api.catalog import resolve_persona
from api.errors import ApiError, not_found
from api.live import REASON_ENDPOINT, LiveConversation
from api.models import (
    ConversationCreate,
    ConversationCreated,
    ConversationProperties,
    ConversationPublic,
    ConversationVerbose,
    ErrorPublic,
    EventPublic,
    MALFORMED_BODY,
    ListPublic,
    TranscriptEntry,
    ValidationErrorPublic,
)
from api.storage import ConversationRow, as_utc, new_id, utcnow
from personas.model import Persona, ReplicaLayer

TEST_MODE_REASON = "test_mode: the record only, no room and no replica"
REASON_DELETED = "conversation deleted"

router = APIRouter(
    prefix="/v2/conversations",
    tags=["conversations"],
    dependencies=[Depends(require_api_key)],
    responses={401: {"model": ErrorPublic, "description": "Missing or invalid x-api-key"}},
)


def conversation_public(row: ConversationRow, cls=ConversationPublic, **extra) -> ConversationPublic:
    return cls(
        conversation_id=row.conversation_id,
        conversation_name=row.conversation_name,
        status=row.status,
        conversation_url=row.conversation_url,
        replica_id=row.replica_id,
        persona_id=row.persona_id,
        callback_url=row.callback_url,
        conversational_context=row.conversational_context,
        custom_greeting=row.custom_greeting,
        audio_only=row.audio_only,
        require_auth=row.require_auth,
        test_mode=row.test_mode,
        properties=ConversationProperties.model_validate(row.properties or {}),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        **extra,
    )


def _with_replica(persona: Persona, replica_id: str | None, audio_only: bool) -> Persona:
    replica = persona.layers.replica
    if audio_only:
        # No face at all: none of the face's settings (a stored persona carries them all) apply.
        replica = ReplicaLayer(replica_engine="off")
    elif replica_id is not None:
        replica = replica.model_copy(update={"replica_id": replica_id})
    else:
        return persona
    layers = persona.layers.model_copy(update={"replica": replica})
    return persona.model_copy(update={"layers": layers})


async def _get_row(request: Request, conversation_id: str) -> ConversationRow:
    row = await request.app.state.store.get_conversation(conversation_id)
    if row is None:
        raise not_found("conversation", conversation_id)
    return row


@router.post(
    "",
    response_model=ConversationCreated,
    response_model_exclude_none=False,
    summary="Create a conversation",
    responses={
        400: {"model": ErrorPublic, **MALFORMED_BODY},
        422: {"model": ValidationErrorPublic},
        502: {"model": ErrorPublic, "description": "Daily refused to create the room"},
        503: {"model": ErrorPublic, "description": "The persona's engines could not start"},
    },
)
async def create_conversation(body: ConversationCreate, request: Request, key_id: Annotated[str, Depends(require_api_key)]):
    """A room with a replica waiting in it; ``conversation_url`` is its page.

    Locally the page is this server's (``/conversations/{id}/``); with
    ``DAILY_API_KEY`` set it is a Daily room made through Daily's REST API,
    which the bot joins.

    ``test_mode`` creates the record only: no room, no bot, and it is
    returned already ended.
    """
    from bot.engines import EngineConfigError, check_persona
    from bot.settings import MissingKeyError

    state = request.app.state
    persona_id = body.persona_id or state.settings.cvi_default_persona
    persona, _ = await resolve_persona(state.store, persona_id, field="persona_id")
    persona = _with_replica(persona, body.replica_id, body.audio_only)
    if body.properties.language is not None:
        from bot.languages import UnsupportedLanguageError, persona_in_language, resolve_language

        try:
            persona = persona_in_language(persona, resolve_language(body.properties.language))
        except UnsupportedLanguageError as e:
            raise ApiError(422, f"properties.language: {e}") from e
    replica = persona.layers.replica
    if replica.replica_engine == "local":
        from api.catalog import replica_ids

        available = replica_ids(state.settings.cvi_replicas_dir)
        if persona.replica_id not in available:
            field = "replica_id" if body.replica_id is not None else f"persona {persona_id!r}: default_replica_id"
            raise ApiError(
                422, f"{field}: replica {persona.replica_id!r} not found; available: {', '.join(available)}"
            )
    if not body.test_mode:
        try:
            check_persona(persona, state.settings, name=persona_id)
        except (MissingKeyError, EngineConfigError) as e:
            raise ApiError(422, f"persona_id: {e}") from e

    daily = state.settings.daily_api_key is not None and not body.test_mode
    room = None
    if daily:
        from bot.daily import DailyJoinError, create_room

        try:
            # With require_auth the room is private: Daily itself admits only holders of its meeting token.
            room = await create_room(
                state.settings, ttl_s=body.properties.max_call_duration + 60, private=body.require_auth
            )
        except DailyJoinError as e:
            raise ApiError(502, str(e)) from e

    conversation_id = new_id("c")
    if not body.require_auth:
        token = None
    elif room is not None:
        token = room.participant_token
    else:
        token = secrets.token_urlsafe(24)
    row = await state.store.add_conversation(
        conversation_id=conversation_id,
        conversation_name=body.conversation_name,
        status="ended" if body.test_mode else "active",
        persona_id=persona_id,
        replica_id=persona.replica_id,
        callback_url=body.callback_url,
        conversational_context=body.conversational_context,
        custom_greeting=body.custom_greeting,
        audio_only=body.audio_only,
        require_auth=body.require_auth,
        meeting_token_sha256=hashlib.sha256(token.encode()).hexdigest() if token else None,
        test_mode=body.test_mode,
        properties=body.properties.model_dump(),
        api_key_id=key_id,
        server_id=None if body.test_mode else state.server_id,
        shutdown_reason=TEST_MODE_REASON if body.test_mode else None,
        ended_at=utcnow() if body.test_mode else None,
    )
    if not body.test_mode:
        try:
            await state.live.prepare(persona)
        except Exception as e:
            logger.exception(f"api: engines for conversation {conversation_id} could not start")
            await state.store.end_conversation(conversation_id, f"error: the engines could not start ({e})")
            raise ApiError(503, f"the engines of persona {persona_id!r} could not start: {e}") from e
        live = LiveConversation(
            conversation_id=conversation_id,
            persona=persona,
            persona_name=persona_id,
            conversational_context=body.conversational_context or "",
            custom_greeting=body.custom_greeting,
            properties=body.properties.model_dump(),
            meeting_token_sha256=row.meeting_token_sha256,
        )
        if room is not None:
            await state.store.set_conversation_url(conversation_id, room.url)
            # system.replica_joined is sent when the bot is in the room.
            await state.live.open_daily(live, room_url=room.url, token=room.bot_token)
        else:
            url = str(request.base_url).rstrip("/") + f"/conversations/{conversation_id}/"
            await state.live.open(live)
            await state.store.set_conversation_url(conversation_id, url)
            await state.emit(conversation_id, "system.replica_joined", "system", {"replica_id": persona.replica_id})
        row = await state.store.get_conversation(conversation_id)
    return conversation_public(row, ConversationCreated, meeting_token=token)


@router.get("", response_model=ListPublic[ConversationPublic], summary="List conversations")
async def list_conversations(
    request: Request,
    status: Annotated[Literal["active", "ended"] | None, Query(description="Only this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page")] = 10,
    page: Annotated[int, Query(ge=1, description="1-based page")] = 1,
):
    rows, total = await request.app.state.store.list_conversations(status=status, limit=limit, page=page)
    return ListPublic[ConversationPublic](data=[conversation_public(r) for r in rows], total_count=total)


@router.get(
    "/{conversation_id}",
    response_model=ConversationVerbose | ConversationPublic,
    summary="Get a conversation",
    responses={404: {"model": ErrorPublic}},
)
async def get_conversation(
    conversation_id: str,
    request: Request,
    verbose: Annotated[bool, Query(description="Add the transcript, the event log and shutdown_reason")] = False,
):
    store = request.app.state.store
    row = await _get_row(request, conversation_id)
    if not verbose:
        return conversation_public(row)
    transcript = [TranscriptEntry(role=t.role, content=t.content) for t in await store.transcript(conversation_id)]
    events = [
        EventPublic(
            conversation_id=conversation_id, event_type=e.event_type, message_type=e.message_type,
            timestamp=as_utc(e.timestamp), properties=e.properties or {},
        )
        for e in await store.events(conversation_id)
    ]
    return conversation_public(
        row, ConversationVerbose, shutdown_reason=row.shutdown_reason, transcript=transcript, events=events
    )


@router.post(
    "/{conversation_id}/end",
    response_model=ConversationPublic,
    summary="End a conversation",
    responses={404: {"model": ErrorPublic}},
)
async def end_conversation(conversation_id: str, request: Request):
    """Ends the call now (``shutdown_reason``: ``end_conversation_endpoint_hit``); an ended one stays as it was."""
    state = request.app.state
    row = await _get_row(request, conversation_id)
    if row.status == "active":
        if state.live.get(conversation_id) is not None:
            await state.live.end(conversation_id, REASON_ENDPOINT)
        else:
            # Hosted by another server: it sees the record ended and tears its bots down.
            await state.store.end_conversation(conversation_id, REASON_ENDPOINT)
        row = await _get_row(request, conversation_id)
    return conversation_public(row)


@router.delete(
    "/{conversation_id}", status_code=204, summary="Delete a conversation", responses={404: {"model": ErrorPublic}}
)
async def delete_conversation(conversation_id: str, request: Request) -> Response:
    """Ends it if it is running, then deletes its record, transcript and events."""
    state = request.app.state
    await _get_row(request, conversation_id)
    if state.live.get(conversation_id) is not None:
        await state.live.end(conversation_id, REASON_DELETED)
    await state.store.delete_conversation(conversation_id)
    return Response(status_code=204)
