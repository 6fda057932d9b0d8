"""Where the API keeps conversations, personas, events and transcripts.

SQLAlchemy 2 (async): SQLite in the data folder by default, PostgreSQL (or
any async URL SQLAlchemy takes) through ``CVI_DATABASE_URL``, with the same
code. The store holds no state of its own: every API process may share one
database, and a bot may report from wherever it runs.

Servers that host bots write a heartbeat; a conversation whose server has
not been heard from for ``STALE_SERVER_S`` is ended with
:data:`SERVER_GONE_REASON` by the next server that starts or sweeps.
"""

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, delete, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# A server that has not written its heartbeat for this long is taken for dead.
STALE_SERVER_S = 30.0
SERVER_GONE_REASON = "server_stopped: the server hosting this conversation stopped before it ended"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite gives naive datetimes back; they were written in UTC."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:12]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ServerRow(Base):
    """An API process that hosts bots, and when it was last alive."""

    __tablename__ = "servers"

    server_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ConversationRow(Base):
    __tablename__ = "conversations"

    conversation_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    conversation_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    persona_id: Mapped[str] = mapped_column(String(80))
    replica_id: Mapped[str | None] = mapped_column(String(120))
    conversation_url: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    conversational_context: Mapped[str | None] = mapped_column(Text)
    custom_greeting: Mapped[str | None] = mapped_column(Text)
    audio_only: Mapped[bool] = mapped_column(Boolean, default=False)
    require_auth: Mapped[bool] = mapped_column(Boolean, default=False)
    # SHA-256 of the meeting token: the token itself is only in the create response.
    meeting_token_sha256: Mapped[str | None] = mapped_column(String(64))
    test_mode: Mapped[bool] = mapped_column(Boolean, default=False)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Which API key created it (a fingerprint, never the key): its webhooks are signed with that key's secret.
    api_key_id: Mapped[str | None] = mapped_column(String(16))
    server_id: Mapped[str | None] = mapped_column(String(40), index=True)
    shutdown_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    __tablename__ = "conversation_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversations.conversation_id", ondelete="CASCADE"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(80))
    message_type: Mapped[str] = mapped_column(String(20))
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timestamp: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class TranscriptRow(Base):
    __tablename__ = "conversation_transcripts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("conversations.conversation_id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class PersonaRow(Base):
    __tablename__ = "personas"

    persona_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    persona_name: Mapped[str] = mapped_column(String(80))
    # The Persona model's fields (secrets included: the engines need them).
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


def _engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            from pathlib import Path

            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # One writer at a time; wait for the lock rather than fail under concurrent requests.
        return create_async_engine(url, connect_args={"timeout": 30})
    return create_async_engine(url, pool_pre_ping=True)


class Store:
    """The API's database.

    Args:
        url: An async SQLAlchemy URL (``sqlite+aiosqlite:///...``,
            ``postgresql+asyncpg://...``).
    """

    def __init__(self, url: str):
        self.engine = _engine(url)
        self.backend = make_url(url).get_backend_name()
        self._session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create_tables(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def close(self) -> None:
        await self.engine.dispose()

    # Servers -----------------------------------------------------------

    async def heartbeat(self, server_id: str) -> None:
        async with self._session.begin() as s:
            row = await s.get(ServerRow, server_id)
            if row is None:
                s.add(ServerRow(server_id=server_id, heartbeat_at=utcnow()))
            else:
                row.heartbeat_at = utcnow()

    async def forget_server(self, server_id: str) -> None:
        async with self._session.begin() as s:
            await s.execute(delete(ServerRow).where(ServerRow.server_id == server_id))

    async def end_orphans(self, *, alive_server_id: str, stale_after_s: float = STALE_SERVER_S) -> list[str]:
        """End active conversations whose server is gone; returns their ids."""
        cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
        async with self._session.begin() as s:
            alive = select(ServerRow.server_id).where(ServerRow.heartbeat_at >= cutoff)
            ids = list(
                (
                    await s.scalars(
                        select(ConversationRow.conversation_id).where(
                            ConversationRow.status == "active",
                            ConversationRow.server_id != alive_server_id,
                            ConversationRow.server_id.not_in(alive),
                        )
                    )
                ).all()
            )
            if ids:
                now = utcnow()
                await s.execute(
                    update(ConversationRow)
                    .where(ConversationRow.conversation_id.in_(ids), ConversationRow.status == "active")
                    .values(status="ended", shutdown_reason=SERVER_GONE_REASON, ended_at=now, updated_at=now)
                )
            await s.execute(delete(ServerRow).where(ServerRow.heartbeat_at < cutoff))
        return ids

    # Conversations -----------------------------------------------------

    async def add_conversation(self, **fields: Any) -> ConversationRow:
        now = utcnow()
        row = ConversationRow(created_at=now, updated_at=now, **fields)
        async with self._session.begin() as s:
            s.add(row)
        return row

    async def get_conversation(self, conversation_id: str) -> ConversationRow | None:
        async with self._session() as s:
            return await s.get(ConversationRow, conversation_id)

    async def list_conversations(
        self, *, status: str | None, limit: int, page: int
    ) -> tuple[Sequence[ConversationRow], int]:
        query = select(ConversationRow)
        count = select(func.count()).select_from(ConversationRow)
        if status is not None:
            query = query.where(ConversationRow.status == status)
            count = count.where(ConversationRow.status == status)
        query = query.order_by(ConversationRow.created_at.desc(), ConversationRow.conversation_id)
        async with self._session() as s:
            total = (await s.execute(count)).scalar_one()
            rows = (await s.scalars(query.limit(limit).offset((page - 1) * limit))).all()
        return rows, total

    async def set_conversation_url(self, conversation_id: str, url: str) -> None:
        async with self._session.begin() as s:
            await s.execute(
                update(ConversationRow)
                .where(ConversationRow.conversation_id == conversation_id)
                .values(conversation_url=url, updated_at=utcnow())
            )

    async def end_conversation(self, conversation_id: str, reason: str) -> bool:
        """Mark it ended with ``reason``; False when it was not active (the first reason stays)."""
        now = utcnow()
        async with self._session.begin() as s:
            result = await s.execute(
                update(ConversationRow)
                .where(ConversationRow.conversation_id == conversation_id, ConversationRow.status == "active")
                .values(status="ended", shutdown_reason=reason, ended_at=now, updated_at=now)
            )
        return result.rowcount == 1

    async def delete_conversation(self, conversation_id: str) -> bool:
        async with self._session.begin() as s:
            await s.execute(delete(EventRow).where(EventRow.conversation_id == conversation_id))
            await s.execute(delete(TranscriptRow).where(TranscriptRow.conversation_id == conversation_id))
            result = await s.execute(
                delete(ConversationRow).where(ConversationRow.conversation_id == conversation_id)
            )
        return result.rowcount == 1

    # Events and transcripts -------------------------------------------

    async def add_event(
        self, conversation_id: str, *, event_type: str, message_type: str, properties: dict[str, Any],
        timestamp: dt.datetime | None = None,
    ) -> None:
        async with self._session.begin() as s:
            if await s.get(ConversationRow, conversation_id) is None:
                return  # deleted meanwhile: nothing to attach it to
            s.add(
                EventRow(
                    conversation_id=conversation_id, event_type=event_type, message_type=message_type,
                    properties=properties, timestamp=timestamp or utcnow(),
                )
            )

    async def add_transcript(self, conversation_id: str, *, role: str, content: str) -> None:
        async with self._session.begin() as s:
            if await s.get(ConversationRow, conversation_id) is None:
                return
            s.add(TranscriptRow(conversation_id=conversation_id, role=role, content=content, timestamp=utcnow()))

    async def events(self, conversation_id: str) -> Sequence[EventRow]:
        async with self._session() as s:
            return (
                await s.scalars(select(EventRow).where(EventRow.conversation_id == conversation_id).order_by(EventRow.id))
            ).all()

    async def transcript(self, conversation_id: str) -> Sequence[TranscriptRow]:
        async with self._session() as s:
            return (
                await s.scalars(
                    select(TranscriptRow).where(TranscriptRow.conversation_id == conversation_id).order_by(TranscriptRow.id)
                )
            ).all()

    # Personas ----------------------------------------------------------

    async def add_persona(self, *, persona_id: str, data: dict[str, Any]) -> PersonaRow:
        now = utcnow()
        row = PersonaRow(persona_id=persona_id, persona_name=data["persona_name"], data=data, created_at=now, updated_at=now)
        async with self._session.begin() as s:
            s.add(row)
        return row

    async def get_persona(self, persona_id: str) -> PersonaRow | None:
        async with self._session() as s:
            return await s.get(PersonaRow, persona_id)

    async def list_personas(self) -> Sequence[PersonaRow]:
        async with self._session() as s:
            return (await s.scalars(select(PersonaRow).order_by(PersonaRow.created_at, PersonaRow.persona_id))).all()

    async def replace_persona(self, persona_id: str, data: dict[str, Any]) -> PersonaRow | None:
        async with self._session.begin() as s:
            row = await s.get(PersonaRow, persona_id)
            if row is None:
                return None
            row.data = data
            row.persona_name = data["persona_name"]
            row.updated_at = utcnow()
        return row

    async def delete_persona(self, persona_id: str) -> bool:
        async with self._session.begin() as s:
            result = await s.execute(delete(PersonaRow).where(PersonaRow.persona_id == persona_id))
        return result.rowcount == 1
