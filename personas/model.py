"""The Persona model: behaviour and pipeline of a replica.

Field names follow the public conversational-video contract (``persona_name``,
``system_prompt``, ``context``, ``default_replica_id``, ``pipeline_mode`` and
``layers``), so a persona written for a hosted product reads the same here.
Every layer names an engine; swapping an engine is a change of this data.
Unknown fields are rejected, and an unknown engine is an error that lists the
valid ones.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Sensitivity = Literal["low", "medium", "high"]

STT_ENGINES = ("whisper", "openai")
LLM_ENGINES = ("llama_cpp", "openai")
TTS_ENGINES = ("piper", "espeak", "cartesia", "elevenlabs")
REPLICA_ENGINES = ("local", "tavus", "off")
PERCEPTION_MODELS = ("off", "landmarks", "openai")
TURN_DETECTION_MODELS = ("smart_turn_v3", "vad")


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerceptionLayer(_Layer):
    """What the replica sees: the camera, and questions asked about it.

    ``landmarks`` runs face landmark models on the user's camera (``fps``
    frames a second, small frames) and gives the LLM the cues each turn:
    presence, gaze, expression, nods and shakes, lighting, and a shared
    screen's text. Its queries and tools must name what those cues cover.

    ``openai`` sends the latest camera frame (and shared screen) every
    ``vision_interval_s`` to a vision LLM over the OpenAI chat API: OpenAI,
    or any compatible ``base_url`` (vLLM, Ollama, llama.cpp with a vision
    model). Its one-sentence description of the user, with the answers to
    ``ambient_awareness_queries`` (free text), is the line each turn gets;
    ``perception_tools`` go to it as tools; ``perception_analysis_queries``
    are answered from a few frames kept over the call. ``model`` defaults
    to ``gpt-4o-mini``; the key is ``api_key`` (never logged), else
    ``OPENAI_API_KEY`` (not needed with a ``base_url`` when unset).

    ``off`` asks for no camera and loads nothing. ``model``, ``base_url``,
    ``api_key`` and ``vision_interval_s`` are refused by any engine but
    ``openai``.
    """

    perception_model: Literal["off", "landmarks", "openai"] = "off"
    fps: int = Field(default=2, ge=1, le=10)
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    # Seconds between two frames sent to the vision LLM (the camera is still sampled at fps).
    vision_interval_s: float = Field(default=3.0, ge=1.0, le=60.0)
    ambient_awareness_queries: list[str] = Field(default_factory=list)
    perception_analysis_queries: list[str] = Field(default_factory=list)
    perception_tools: list[dict[str, Any]] = Field(default_factory=list)
    perception_tool_prompt: str | None = None


class STTLayer(_Layer):
    """Speech recognition, and how quickly the user's pauses end a turn.

    ``model`` is a model name or a local path; ``None`` takes the engine's
    embedded default (Whisper base from its weight package for ``whisper``).
    """

    stt_engine: Literal["whisper", "openai"] = "whisper"
    model: str | None = None
    language: str | None = "en"
    hotwords: list[str] = Field(default_factory=list)
    participant_pause_sensitivity: Sensitivity = "medium"
    participant_interrupt_sensitivity: Sensitivity = "medium"


class ConversationalFlowLayer(_Layer):
    """Turn taking: when the user is done, and whether the replica yields."""

    turn_detection_model: Literal["smart_turn_v3", "vad"] = "smart_turn_v3"
    turn_taking_patience: Sensitivity = "medium"
    replica_interruptibility: Sensitivity = "medium"


class LLMLayer(_Layer):
    """The language model.

    ``llama_cpp`` runs the embedded llama.cpp server on a packaged GGUF
    (``model`` is a weight name, a local ``.gguf`` path or ``hf:owner/repo/file``);
    ``openai`` speaks to OpenAI or any compatible ``base_url``. Keys come from
    the environment (``OPENAI_API_KEY``); ``api_key`` exists for personas
    created over the API and is never logged.
    """

    engine: Literal["llama_cpp", "openai"] = "llama_cpp"
    model: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Start the reply on the pause's transcript before the turn ends (held until it does).
    speculative_inference: bool = False
    temperature: float = Field(default=0.6, ge=0.0, le=2.0)
    max_tokens: int = Field(default=120, ge=1, le=4096)


class TTSLayer(_Layer):
    """The voice.

    ``voice_settings`` are engine-specific: for piper ``speed`` (1.0 normal,
    above is faster), ``noise_scale`` and ``noise_w``; for Cartesia ``speed``,
    ``volume`` and ``emotion`` (its generation_config); for ElevenLabs
    ``stability``, ``similarity_boost``, ``style``, ``use_speaker_boost``,
    ``speed`` and ``apply_text_normalization``. Any other key is refused by
    name. ``tts_emotion_control`` lets the LLM set the voice's emotion per
    sentence (Cartesia's emotion tags); engines without emotion controls refuse it.
    ``espeak`` is espeak-ng, offline, for languages piper's packaged voice does
    not speak: ``external_voice_id`` is its voice (``fr-fr``, ``de``, ...) and
    ``voice_settings`` takes ``speed``.
    """

    tts_engine: Literal["piper", "espeak", "cartesia", "elevenlabs"] = "piper"
    external_voice_id: str | None = None
    tts_model_name: str | None = None
    voice_settings: dict[str, Any] = Field(default_factory=dict)
    tts_emotion_control: bool = False


# The local replica's frame rate while it listens, unless a persona sets its own.
DEFAULT_IDLE_FPS = 12


class ReplicaLayer(_Layer):
    """The face: our CPU renderer on a stock replica, Tavus, or none.

    ``fps`` is the local replica's frame rate while it speaks, ``idle_fps``
    while it listens (breathing and blinks need fewer frames than lips; the
    CPU left goes to the LLM writing the reply). Tavus sends its own rate.
    """

    replica_engine: Literal["local", "tavus", "off"] = "local"
    replica_id: str | None = None
    width: int = Field(default=512, ge=64, le=1920)
    height: int = Field(default=512, ge=64, le=1920)
    fps: int = Field(default=25, ge=1, le=60)
    idle_fps: int | None = Field(default=None, ge=1, le=60)

    @model_validator(mode="after")
    def _idle_rate_at_most_speaking_rate(self) -> "ReplicaLayer":
        if self.idle_fps is not None and self.idle_fps > self.fps:
            raise ValueError(f"idle_fps={self.idle_fps} must be at most fps={self.fps}")
        return self

    @property
    def listening_fps(self) -> int:
        """The frame rate while the replica listens: ``idle_fps``, else 12 (or ``fps`` if lower)."""
        return self.idle_fps if self.idle_fps is not None else min(DEFAULT_IDLE_FPS, self.fps)


class Layers(_Layer):
    """One entry per pipeline layer."""

    perception: PerceptionLayer = Field(default_factory=PerceptionLayer)
    stt: STTLayer = Field(default_factory=STTLayer)
    conversational_flow: ConversationalFlowLayer = Field(default_factory=ConversationalFlowLayer)
    llm: LLMLayer = Field(default_factory=LLMLayer)
    tts: TTSLayer = Field(default_factory=TTSLayer)
    replica: ReplicaLayer = Field(default_factory=ReplicaLayer)


class Persona(BaseModel):
    """Behaviour and pipeline of a replica."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    persona_name: str = Field(min_length=1, max_length=80)
    system_prompt: str = Field(min_length=1)
    context: str = ""
    default_replica_id: str | None = None
    custom_greeting: str | None = None
    pipeline_mode: Literal["full", "echo"] = "full"
    layers: Layers = Field(default_factory=Layers)

    @field_validator("persona_name")
    @classmethod
    def _name_is_plain(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("persona_name must not be blank")
        return value

    def full_system_prompt(self, conversational_context: str = "") -> str:
        """The system message: prompt, persona context and call context."""
        parts = [self.system_prompt.strip()]
        if self.context.strip():
            parts.append(self.context.strip())
        if conversational_context.strip():
            parts.append(conversational_context.strip())
        return "\n\n".join(parts)

    @property
    def replica_id(self) -> str | None:
        """The replica this persona shows: the replica layer's, else the default."""
        return self.layers.replica.replica_id or self.default_replica_id
