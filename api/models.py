"""Request and response models of the REST API, with the hosted contract's field names.

Unknown fields are refused by name (a 422 that lists the allowed ones):
a field this server does not carry out is never silently accepted.
"""

import datetime as dt
from typing import Any, ClassVar, Generic, Literal, TypeVar
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from personas.model import Layers

T = TypeVar("T")

ConversationStatus = Literal["active", "ended"]


MALFORMED_BODY = {"description": "The body is not JSON"}


class ErrorPublic(BaseModel):
    """Every error body: one sentence naming what was wrong and what is allowed."""

    error: str


class ValidationErrorPublic(ErrorPublic):
    """A 422: ``error`` sums up the first problem; ``detail`` lists them all."""

    detail: list[dict[str, Any]] = Field(default_factory=list)


class ListPublic(BaseModel, Generic[T]):
    """A page of a list: ``limit`` items from the 1-based ``page``."""

    data: list[T]
    total_count: int


class StrictModel(BaseModel):
    """Refuses unknown fields by name, listing the allowed ones."""

    model_config = ConfigDict(extra="forbid")

    # The hosted API's newer names for the same fields (PAL for persona, face for replica).
    NEWER_NAMES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for newer, field in cls.NEWER_NAMES.items():
                if newer in data:
                    value = data.pop(newer)
                    if data.get(field) is not None and data[field] != value:
                        raise ValueError(f"{newer} and {field} name the same field; give one, or both equal")
                    data[field] = value
            allowed = {f.alias or name for name, f in cls.model_fields.items()} | set(cls.NEWER_NAMES)
            unknown = sorted(str(k) for k in data if k not in allowed)
            if unknown:
                raise ValueError(
                    f"unknown field(s) {', '.join(unknown)} (not supported by this server); "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
        return data


class ConversationProperties(StrictModel):
    """Per-call settings; each one is carried out.

    ``max_call_duration``: seconds from creation until the call ends by itself.
    ``participant_absent_timeout``: seconds from creation for someone to join.
    ``participant_left_timeout``: seconds after the last person leaves before the call ends.
    ``language``, ``enable_closed_captions``, ``enable_recording``: see each field.
    """

    max_call_duration: int = Field(default=3600, ge=1, le=24 * 3600)
    participant_left_timeout: int = Field(default=60, ge=0, le=3600)
    participant_absent_timeout: int = Field(default=300, ge=1, le=24 * 3600)
    language: str | None = Field(
        default=None,
        max_length=40,
        description=(
            "The conversation's language, by full name as the hosted API takes it ('english', 'french', ...) "
            "or ISO 639-1 code ('fr'); stored as the name. STT listens for it, the LLM answers in it, the voice "
            "speaks it (piper for English, espeak-ng offline for the others, a persona's cloud voice when it has "
            "one). Default: the persona's own."
        ),
    )

    enable_closed_captions: bool = Field(
        default=False,
        description="The conversation page shows what the replica and the user say, over the video, as they say it.",
    )

    enable_recording: bool = Field(
        default=False,
        description=(
            "An MP4 of the call (the replica's video and voice, the user's voice) saved in the server's data folder "
            "(recordings/<conversation_id>.mp4); its path comes in the application.recording_ready webhook and event."
        ),
    )

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from bot.languages import resolve_language

        return resolve_language(value).name  # UnsupportedLanguageError is a ValueError: a 422 naming it


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value


class ConversationCreate(StrictModel):
    """The body of ``POST /v2/conversations`` (``pal_id`` and ``face_id`` are taken for ``persona_id`` and ``replica_id``)."""

    NEWER_NAMES: ClassVar[dict[str, str]] = {"pal_id": "persona_id", "face_id": "replica_id"}

    replica_id: str | None = Field(
        default=None, min_length=1, max_length=120, description="The face; default: the persona's."
    )
    persona_id: str | None = Field(
        default=None, min_length=1, max_length=80, description="The behaviour; default: the server's default persona."
    )
    conversation_name: str | None = Field(default=None, max_length=200)
    conversational_context: str | None = Field(default=None, max_length=20000)
    custom_greeting: str | None = Field(default=None, max_length=2000)
    callback_url: str | None = Field(
        default=None, max_length=2000, pattern=r"^https?://[^/\s]+", description="Receives the webhooks."
    )
    audio_only: bool = Field(default=False, description="No replica video: voice only.")
    require_auth: bool = Field(default=False, description="The page must present the returned meeting_token.")
    test_mode: bool = Field(default=False, description="Create the record only: no room, no bot.")
    properties: ConversationProperties = Field(default_factory=ConversationProperties)

    _check_callback = field_validator("callback_url")(classmethod(lambda cls, v: _http_url(v)))


class TranscriptEntry(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class EventPublic(BaseModel):
    """One event of a conversation, in the webhook envelope."""

    conversation_id: str
    event_type: str
    message_type: str
    timestamp: dt.datetime
    properties: dict[str, Any]


class ConversationPublic(BaseModel):
    conversation_id: str
    conversation_name: str | None
    status: ConversationStatus
    conversation_url: str | None
    replica_id: str | None
    persona_id: str
    callback_url: str | None
    conversational_context: str | None
    custom_greeting: str | None
    audio_only: bool
    require_auth: bool
    test_mode: bool
    properties: ConversationProperties
    created_at: dt.datetime
    updated_at: dt.datetime


class ConversationCreated(ConversationPublic):
    """The create response; ``meeting_token`` only when ``require_auth`` (shown once, never stored)."""

    meeting_token: str | None = None


class ConversationVerbose(ConversationPublic):
    """``GET /v2/conversations/{id}?verbose=true``."""

    shutdown_reason: str | None
    transcript: list[TranscriptEntry]
    events: list[EventPublic]


class PersonaCreate(StrictModel):
    """The body of ``POST /v2/personas``: the Persona model's fields (``pal_name``, ``default_face_id`` taken too)."""

    NEWER_NAMES: ClassVar[dict[str, str]] = {"pal_name": "persona_name", "default_face_id": "default_replica_id"}

    persona_name: str = Field(min_length=1, max_length=80)
    system_prompt: str = Field(min_length=1, max_length=50000)
    context: str = Field(default="", max_length=50000)
    default_replica_id: str | None = Field(default=None, max_length=120)
    custom_greeting: str | None = Field(default=None, max_length=2000)
    pipeline_mode: Literal["full", "echo"] = "full"
    layers: Layers = Field(default_factory=Layers)


class PersonaPublic(BaseModel):
    """A persona; ``read_only`` for the Python modules in ``personas/``."""

    persona_id: str
    persona_name: str
    system_prompt: str
    context: str
    default_replica_id: str | None
    custom_greeting: str | None
    pipeline_mode: Literal["full", "echo"]
    layers: dict[str, Any]
    read_only: bool
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class JsonPatchOperation(BaseModel):
    """One RFC 6902 operation."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["add", "remove", "replace", "move", "copy", "test"]
    path: str = Field(max_length=500)
    value: Any = None
    from_: str | None = Field(default=None, alias="from", max_length=500)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "path": self.path}
        if self.op in ("add", "replace", "test"):
            data["value"] = self.value
        if self.op in ("move", "copy"):
            data["from"] = self.from_
        return data


class ReplicaPublic(BaseModel):
    replica_id: str
    replica_name: str
    status: Literal["completed"] = "completed"
    default_voice: str | None = None
    replica_type: Literal["system", "user"]
