"""Turn a persona's layers into pipecat services.

One factory per layer. Local engines share heavy models through
``EmbeddedModels`` (loaded once per process); cloud engines take their keys
from ``Settings`` and fail at start-up, naming the variable, when one is
missing.
"""

import asyncio
import re
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import aiohttp
from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.turns.user_start import (
    MinWordsUserTurnStartStrategy,
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
)
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.languages import (
    ENGLISH,
    ConversationLanguage,
    UnsupportedLanguageError,
    answer_instruction,
    resolve_language,
)
from bot.settings import Settings
from personas.model import Persona
from processors import weights
from processors.llm.llama_server import LlamaServer, find_llama_server
from processors.llm.next_turn import NextTurnWarmer
from processors.llm.spoken_reply import SpokenReplyProcessor
from processors.llm.stoppable import StoppableLLMService
from processors.turn.transcript_aware_stop import TranscriptAwareTurnStopStrategy
from bot.perception import perception_refusals

# Where a persona's sensitivities land (seconds, or a VAD confidence).
# Pause sensitivity: how short a silence may end the user's turn.
VAD_STOP_SECS = {"low": 0.45, "medium": 0.3, "high": 0.15}
# Patience: the longest silence Smart Turn lets pass while it judges the
# turn unfinished (and, for the plain VAD model, the silence that ends it).
SMART_TURN_MAX_SILENCE = {"low": 1.0, "medium": 2.0, "high": 3.5}
# When Smart Turn hesitates, a finished-looking transcript ends the turn after this silence.
TRANSCRIPT_GRACE = {"low": 0.2, "medium": 0.4, "high": 0.9}
# A turn that does not end in a question mark ends only after this much silence
# (a second sentence of the same thought often follows 0.3-0.8 s later).
STATEMENT_HOLD = {"low": 0.9, "medium": 1.2, "high": 1.6}
SPEECH_TIMEOUT = {"low": 0.4, "medium": 0.7, "high": 1.2}
# Interrupt sensitivity: how much speech it takes to count as the user talking.
VAD_START = {"low": (0.35, 0.8), "medium": (0.2, 0.7), "high": (0.12, 0.6)}
# Interruptibility: how readily the replica yields the floor.
MIN_WORDS_TO_INTERRUPT = {"low": 3, "medium": 1, "high": 0}
# The embedded llama-server yields the CPU to the bot's own threads: the
# reply's first words must be synthesized while the LLM writes the rest.
LLM_NICENESS = 5
# Two slots: two visitors at once both write, neither waits for the other's
# whole reply. Each conversation is pinned to its slot (``id_slot``), so every
# request, and the next turn's warm-up, finds its own prompt cache there.
LLM_SLOTS = 2


# The voice_settings keys each TTS engine takes (anything else is refused by name).
VOICE_SETTINGS = {
    "piper": ("speed", "noise_scale", "noise_w"),
    "espeak": ("speed",),
    # Cartesia's generation_config (sonic-3 models).
    "cartesia": ("speed", "volume", "emotion"),
    "elevenlabs": ("stability", "similarity_boost", "style", "use_speaker_boost", "speed", "apply_text_normalization"),
}
# TTS engines with emotion controls that tts_emotion_control can drive.
EMOTION_CONTROL_ENGINES = ("cartesia",)
CARTESIA_EMOTIONS = ("neutral", "happy", "excited", "content", "curious", "calm", "sympathetic", "sad", "surprised")
EMOTION_INSTRUCTION = (
    "Start every sentence with a tag that sets the voice's emotion for it, such as "
    '<emotion value="happy"/>, choosing one of: ' + ", ".join(CARTESIA_EMOTIONS) + "."
)
# A tool's name, as OpenAI-compatible APIs accept it.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The rate at which Tavus sends its video (the output is paced at it).
TAVUS_FPS = 30


class EngineConfigError(ValueError):
    """A persona's engine configuration is invalid. Retrying will not help."""


def refused_fields(persona: Persona) -> list[str]:
    """The persona fields that are set but would do nothing with its engines, each named with why."""
    layers = persona.layers
    refused: list[str] = []
    refused.extend(perception_refusals(persona))
    for i, tool in enumerate(layers.llm.tools):
        problem = tool_problem(tool)
        if problem:
            refused.append(f"layers.llm.tools[{i}]: {problem}")
    if layers.llm.speculative_inference and layers.conversational_flow.turn_detection_model != "smart_turn_v3":
        refused.append(
            "layers.llm.speculative_inference needs layers.conversational_flow.turn_detection_model='smart_turn_v3' "
            "(the early reply is held until Smart Turn ends the turn)"
        )
    tts = layers.tts
    allowed = VOICE_SETTINGS[tts.tts_engine]
    unknown = sorted(set(tts.voice_settings) - set(allowed))
    if unknown:
        refused.append(f"layers.tts.voice_settings has {unknown}; {tts.tts_engine} allows {list(allowed)}")
    if tts.tts_emotion_control and tts.tts_engine not in EMOTION_CONTROL_ENGINES:
        refused.append(
            f"layers.tts.tts_emotion_control: {tts.tts_engine} has no emotion controls "
            f"(engines with them: {', '.join(EMOTION_CONTROL_ENGINES)})"
        )
    if tts.tts_engine in ("piper", "espeak") and tts.tts_model_name:
        refused.append(
            f"layers.tts.tts_model_name: {tts.tts_engine} has no models; its voice is layers.tts.external_voice_id"
        )
    language = layers.stt.language
    if tts.tts_engine == "piper" and language not in (None, ENGLISH.code):
        refused.append(
            f"layers.tts.tts_engine='piper': the packaged piper voice speaks English, not layers.stt.language="
            f"{language!r}; use tts_engine 'espeak' (offline) or a cloud voice"
        )
    replica = layers.replica
    if replica.replica_engine == "off":
        for name in ("replica_id", "width", "height", "fps", "idle_fps"):
            if name in replica.model_fields_set:
                refused.append(f"layers.replica.{name}: replica_engine='off' shows no face")
    if replica.replica_engine == "tavus" and "fps" in replica.model_fields_set and replica.fps != TAVUS_FPS:
        refused.append(f"layers.replica.fps={replica.fps}: Tavus sends {TAVUS_FPS} fps")
    if replica.replica_engine == "tavus" and "idle_fps" in replica.model_fields_set:
        refused.append(f"layers.replica.idle_fps={replica.idle_fps}: Tavus sends {TAVUS_FPS} fps, listening or not")
    return refused


def conversation_language(persona: Persona) -> ConversationLanguage | None:
    """The language the persona converses in (its STT language), None when Whisper detects it."""
    code = persona.layers.stt.language
    if not code:
        return None
    try:
        return resolve_language(code)
    except UnsupportedLanguageError:
        return None  # a Whisper language outside the contract's list: no instruction for it


def tool_problem(tool: Any) -> str | None:
    """What is wrong with one entry of ``layers.llm.tools`` (the OpenAI function format), or None."""
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        return 'must be {"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}'
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        return f"function.name must be 1-64 letters, digits, _ or -; got {name!r}"
    parameters = function.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        return "function.parameters must be a JSON schema of type 'object'"
    if not isinstance(parameters.get("properties", {}), dict) or not isinstance(parameters.get("required", []), list):
        return "function.parameters.properties must be an object and .required a list"
    return None


def tools_schema(tools: list[dict[str, Any]]):
    """``layers.llm.tools`` (OpenAI function format, checked by ``tool_problem``) as pipecat's ``ToolsSchema``."""
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

    functions = []
    for tool in tools:
        function = tool["function"]
        parameters = function.get("parameters") or {}
        functions.append(
            FunctionSchema(
                name=function["name"],
                description=function.get("description", ""),
                properties=parameters.get("properties", {}),
                required=parameters.get("required", []),
            )
        )
    return ToolsSchema(standard_tools=functions)


def system_prompt(persona: Persona, conversational_context: str = "") -> str:
    """The LLM's system instruction: the persona's prompt, the language to answer in
    (any but English), and what its voice needs (emotion tags)."""
    prompt = persona.full_system_prompt(conversational_context)
    language = conversation_language(persona)
    if language is not None and language != ENGLISH:
        prompt = f"{prompt}\n\n{answer_instruction(language)}"
    if persona.layers.tts.tts_emotion_control and persona.layers.tts.tts_engine in EMOTION_CONTROL_ENGINES:
        prompt = f"{prompt}\n\n{EMOTION_INSTRUCTION}"
    return prompt


@dataclass(frozen=True)
class KeyRequirement:
    """A cloud key a persona needs, and which layer needs it."""

    env_name: str
    needed_by: str


def required_keys(persona: Persona) -> list[KeyRequirement]:
    """The environment keys this persona's engines need."""
    layers = persona.layers
    listens = persona.pipeline_mode != "echo"  # echo mode runs no STT and no LLM
    needs: list[KeyRequirement] = []
    if listens and layers.stt.stt_engine == "openai":
        needs.append(KeyRequirement("OPENAI_API_KEY", "stt=openai"))
    if listens and layers.llm.engine == "openai" and layers.llm.api_key is None and not layers.llm.base_url:
        needs.append(KeyRequirement("OPENAI_API_KEY", "llm=openai"))
    vision = layers.perception
    if vision.perception_model == "openai" and vision.api_key is None and not vision.base_url:
        needs.append(KeyRequirement("OPENAI_API_KEY", "perception=openai"))
    if layers.tts.tts_engine == "cartesia":
        needs.append(KeyRequirement("CARTESIA_API_KEY", "tts=cartesia"))
    if layers.tts.tts_engine == "elevenlabs":
        needs.append(KeyRequirement("ELEVENLABS_API_KEY", "tts=elevenlabs"))
    if layers.replica.replica_engine == "tavus":
        needs.append(KeyRequirement("TAVUS_API_KEY", "replica=tavus"))
    return needs


def check_persona(persona: Persona, settings: Settings, *, name: str) -> None:
    """Fail now, not mid-call, if the persona cannot run with these settings.

    Raises:
        MissingKeyError: a key is missing; the message names it and the persona.
        EngineConfigError: an engine setting is invalid.
    """
    for need in required_keys(persona):
        settings.require_key(need.env_name, persona=name, needed_by=need.needed_by)
    refused = refused_fields(persona)
    if refused:
        raise EngineConfigError(f"persona {name!r}: " + "; ".join(refused))
    layers = persona.layers
    if layers.tts.tts_engine in ("cartesia", "elevenlabs", "espeak") and not layers.tts.external_voice_id:
        raise EngineConfigError(
            f"persona {name!r}: layers.tts.external_voice_id is required for "
            f"tts_engine={layers.tts.tts_engine!r}"
        )
    if layers.tts.tts_engine == "espeak":
        from processors.tts.espeak import EspeakUnavailableError, espeak_has_voice

        try:
            has_voice = espeak_has_voice(layers.tts.external_voice_id)
        except EspeakUnavailableError as e:
            raise EngineConfigError(f"persona {name!r}: {e}") from e
        if not has_voice:
            raise EngineConfigError(
                f"persona {name!r}: layers.tts.external_voice_id {layers.tts.external_voice_id!r} is not an "
                "espeak-ng voice (espeak-ng --voices lists them)"
            )
    if layers.replica.replica_engine == "tavus" and not persona.replica_id:
        raise EngineConfigError(
            f"persona {name!r}: layers.replica.replica_id (a Tavus replica id) is required "
            "for replica_engine='tavus'"
        )
    if layers.replica.replica_engine == "local":
        from processors.replica.assets import list_replicas

        available = list_replicas(settings.cvi_replicas_dir)
        if persona.replica_id not in available:
            raise EngineConfigError(
                f"persona {name!r}: replica {persona.replica_id!r} not found; "
                f"available: {', '.join(available)}"
            )


class EmbeddedModels:
    """The local engines' heavy parts, loaded once and shared by every conversation.

    The LLM runs as a llama.cpp server child process (or an existing
    server at ``CVI_LLM_BASE_URL``); Whisper and piper load in-process.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._server: LlamaServer | None = None
        self._llm_base_url: str | None = settings.cvi_llm_base_url
        self._warmed: set[str] = set()
        self._slot_users: list[int] = []  # conversations on each slot of the embedded server

    @property
    def llm_base_url(self) -> str:
        """The OpenAI-compatible endpoint of the embedded LLM."""
        if self._llm_base_url is None:
            raise RuntimeError("the embedded LLM is not started; call start_llm() first")
        return self._llm_base_url

    def whisper_path(self, persona: Persona) -> str:
        """Local folder (or hub name) of the Whisper model for this persona."""
        name = self._settings.cvi_stt_model or persona.layers.stt.model
        return weights.whisper_model(name, cache_dir=self._settings.cvi_cache_dir)

    def piper_path(self, persona: Persona) -> Path:
        """The piper voice file for this persona."""
        return weights.piper_voice(
            persona.layers.tts.external_voice_id, cache_dir=self._settings.cvi_cache_dir
        )

    def llm_pause(self, persona: Persona):
        """What pauses the embedded LLM server while a reply's first words are synthesised, or None.

        Only the server this process started, for a persona whose LLM it is.
        """
        llm = persona.layers.llm
        if self._server is None or llm.engine != "llama_cpp" or llm.base_url or persona.pipeline_mode == "echo":
            return None
        return self._server.paused

    def claim_llm_slot(self, persona: Persona) -> int | None:
        """The embedded server's slot for a new conversation of ``persona`` (the least used), or None.

        None where the LLM is not the server this process started. Give it
        back with :meth:`release_llm_slot` when the conversation ends.
        """
        if self.llm_pause(persona) is None or self._server is None:
            return None
        if len(self._slot_users) != self._server.slots:
            self._slot_users = [0] * self._server.slots
        slot = min(range(len(self._slot_users)), key=self._slot_users.__getitem__)
        self._slot_users[slot] += 1
        return slot

    def release_llm_slot(self, slot: int | None) -> None:
        """A conversation on ``slot`` (from :meth:`claim_llm_slot`) ended."""
        if slot is not None and slot < len(self._slot_users) and self._slot_users[slot] > 0:
            self._slot_users[slot] -= 1

    async def start_llm(self, persona: Persona) -> str:
        """Start the llama.cpp server once (unless one is configured) and return its URL."""
        if self._llm_base_url is not None:
            return self._llm_base_url
        model = weights.llm_gguf(
            self._settings.cvi_llm_model or persona.layers.llm.model,
            cache_dir=self._settings.cvi_cache_dir,
        )
        binary = find_llama_server(
            self._settings.cvi_cache_dir, explicit=self._settings.cvi_llama_server_bin
        )
        self._server = LlamaServer(
            binary=binary,
            model=model,
            threads=self._settings.cvi_llm_threads,
            parallel=LLM_SLOTS,
            niceness=LLM_NICENESS,
        )
        await self._server.start()
        self._llm_base_url = self._server.base_url
        return self._llm_base_url

    async def prepare(self, persona: Persona) -> None:
        """Load and warm everything ``persona`` uses from the embedded stack.

        The LLM server starts and warms while Whisper and piper load in
        worker threads, so start-up costs the slowest of them, not the sum.
        """
        layers = persona.layers
        listens = persona.pipeline_mode != "echo"  # echo mode runs no STT and no LLM
        jobs = []
        if listens and layers.llm.engine == "llama_cpp":

            async def llm() -> None:
                await self.start_llm(persona)
                # A call opens with the greeting: warm that prefix, not just the prompt.
                greeting = persona.custom_greeting
                history = [{"role": "assistant", "content": greeting}] if greeting else []
                await self.warm_llm(persona.full_system_prompt(), history)

            jobs.append(llm())
        if listens and layers.stt.stt_engine == "whisper":
            from processors.stt.whisper import shared_whisper_model

            jobs.append(
                asyncio.to_thread(
                    shared_whisper_model, self.whisper_path(persona), cpu_threads=self._settings.cvi_stt_threads
                )
            )
        if layers.tts.tts_engine == "piper":
            from processors.tts.piper import shared_piper_voice

            jobs.append(asyncio.to_thread(shared_piper_voice, self.piper_path(persona)))
        if layers.replica.replica_engine == "local" and persona.replica_id:
            jobs.append(asyncio.to_thread(self._warm_replica, persona))
        await asyncio.gather(*jobs)

    def _warm_replica(self, persona: Persona) -> None:
        """Build the persona's replica rig once: its mouth warp's compiled loops
        load (or compile, about 2.5 s on a fresh clone) now, not while a
        visitor's call starts and the user's first words go unheard."""
        from processors.replica.assets import load_replica
        from processors.replica.video_rig import make_rig

        replica = persona.layers.replica
        make_rig(load_replica(persona.replica_id, self._settings.cvi_replicas_dir), (replica.width, replica.height))

    async def warm_llm(self, system_prompt: str, history: list[dict[str, str]] | None = None) -> None:
        """Put ``system_prompt`` (and ``history``) in the server's prompt cache, once."""
        key = repr((system_prompt, history))
        if key in self._warmed or self._server is None:
            return
        # Only into slots no conversation is using (each keeps its own cache); none free: the least used.
        users = self._slot_users or [0] * self._server.slots
        free = [slot for slot, n in enumerate(users) if n == 0] or [min(range(len(users)), key=users.__getitem__)]
        await self._server.warm(system_prompt, history, slots=free)
        self._warmed.add(key)

    async def close(self) -> None:
        """Stop the llama.cpp server if this process started it."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
            self._llm_base_url = self._settings.cvi_llm_base_url


def build_stt(persona: Persona, settings: Settings, models: EmbeddedModels):
    """The speech-recognition service for the persona's stt layer."""
    stt = persona.layers.stt
    if stt.stt_engine == "whisper":
        from processors.stt.whisper import LocalWhisperSTTService

        return LocalWhisperSTTService(
            model=models.whisper_path(persona),
            language=stt.language,
            hotwords=stt.hotwords,
            cpu_threads=settings.cvi_stt_threads,
            # Speech end -> final transcript, p99, on two cores: the turn
            # strategy waits at most this long for a late transcript.
            ttfs_p99_latency=1.5,
        )
    from pipecat.services.openai.stt import OpenAISTTService
    from pipecat.transcriptions.language import Language

    key = settings.require_key("OPENAI_API_KEY", persona=persona.persona_name, needed_by="stt=openai")
    return OpenAISTTService(
        api_key=key,
        language=Language(stt.language) if stt.language else None,
        settings=OpenAISTTService.Settings(
            model=stt.model or "gpt-4o-transcribe",
            # The transcription prompt is how OpenAI takes a vocabulary.
            prompt=("Vocabulary: " + ", ".join(stt.hotwords) + ".") if stt.hotwords else None,
        ),
    )


def build_llm(
    persona: Persona,
    settings: Settings,
    models: EmbeddedModels,
    *,
    system_instruction: str | None = None,
    slot: int | None = None,
) -> OpenAILLMService:
    """The LLM service: the embedded llama.cpp server or an OpenAI-compatible API.

    ``system_instruction`` defaults to the persona's full system prompt;
    ``slot`` pins every request to that slot of a llama.cpp server
    (:meth:`EmbeddedModels.claim_llm_slot`).
    """
    llm = persona.layers.llm
    extra_body = dict(llm.extra_body)
    if llm.engine == "llama_cpp":
        base_url = llm.base_url or models.llm_base_url
        api_key = "local"
        model = "local"
        # Reuse the KV cache of the shared prefix (system prompt + history).
        extra_body.setdefault("cache_prompt", True)
        if slot is not None:
            extra_body["id_slot"] = slot
    else:
        base_url = llm.base_url
        if llm.api_key is not None:
            api_key = llm.api_key.get_secret_value()
        elif llm.base_url and settings.openai_api_key is None:
            api_key = "none"
        else:
            api_key = settings.require_key(
                "OPENAI_API_KEY", persona=persona.persona_name, needed_by="llm=openai"
            )
        model = llm.model or "gpt-4.1-mini"
    extra = {"extra_body": extra_body} if extra_body else {}
    return StoppableLLMService(
        api_key=api_key,
        base_url=base_url,
        default_headers=llm.headers or None,
        settings=OpenAILLMService.Settings(
            model=model,
            system_instruction=system_instruction or system_prompt(persona),
            temperature=llm.temperature,
            max_tokens=llm.max_tokens,
            extra=extra,
        ),
    )


def build_next_turn_warmer(persona: Persona, llm: StoppableLLMService) -> NextTurnWarmer | None:
    """For a llama.cpp server, what prefills the start of the user's next message between turns; else None.

    It warms the slot ``llm``'s requests are pinned to, if any (``build_llm``'s ``slot``).
    """
    if persona.layers.llm.engine != "llama_cpp":
        return None
    root = str(llm._client.base_url).rstrip("/").removesuffix("/v1")
    slot = llm._settings.extra.get("extra_body", {}).get("id_slot")
    return NextTurnWarmer(llm, root, slot=slot)


# The longest reply, in sentences, that the replica speaks: replies stop by
# sentences, not by the token budget (see processors/llm/spoken_reply.py).
SPOKEN_MAX_SENTENCES = 3


def build_spoken_reply(persona: Persona) -> SpokenReplyProcessor:
    """Between LLM and TTS: whole sentences only, at most ``SPOKEN_MAX_SENTENCES``,
    never the persona's own name for the user, no markup."""
    return SpokenReplyProcessor(
        persona_name=persona.persona_name,
        max_sentences=SPOKEN_MAX_SENTENCES,
        max_tokens=persona.layers.llm.max_tokens,
    )


def spoken_text_transforms() -> list:
    """What every TTS applies between the LLM and the voice: markdown removed
    (small models sometimes answer with lists and **bold** despite the prompt)."""
    from pipecat.utils.text.transforms import strip_markdown

    return [("*", strip_markdown)]


def build_tts(persona: Persona, settings: Settings, models: EmbeddedModels, *, sample_rate: int | None = None):
    """The speech-synthesis service for the persona's tts layer."""
    tts = persona.layers.tts
    name = persona.persona_name
    allowed = VOICE_SETTINGS[tts.tts_engine]
    unknown = set(tts.voice_settings) - set(allowed)
    if unknown:
        raise EngineConfigError(
            f"persona {name!r}: layers.tts.voice_settings has {sorted(unknown)}; {tts.tts_engine} allows {list(allowed)}"
        )
    if tts.tts_engine == "piper":
        from processors.tts.piper import PiperPhonemeTTSService

        return PiperPhonemeTTSService(
            voice_path=models.piper_path(persona),
            first_chunk_hold=models.llm_pause(persona),
            sample_rate=sample_rate,
            text_transforms=spoken_text_transforms(),
            **tts.voice_settings,
        )
    if tts.tts_engine == "espeak":
        from processors.tts.espeak import EspeakTTSService

        return EspeakTTSService(
            voice=tts.external_voice_id,
            sample_rate=sample_rate,
            text_transforms=spoken_text_transforms(),
            **tts.voice_settings,
        )
    from pipecat.transcriptions.language import Language

    # A cloud voice speaks the conversation's language (None: its voice's own).
    language = Language(persona.layers.stt.language) if persona.layers.stt.language else None
    if tts.tts_engine == "cartesia":
        from pipecat.services.cartesia.tts import CartesiaTTSService, GenerationConfig

        key = settings.require_key("CARTESIA_API_KEY", persona=name, needed_by="tts=cartesia")
        # Emotion tags and generation_config are sonic-3 features.
        default_model = "sonic-3" if tts.tts_emotion_control or tts.voice_settings else "sonic-2"
        extra = {"generation_config": GenerationConfig(**tts.voice_settings)} if tts.voice_settings else {}
        return CartesiaTTSService(
            api_key=key,
            sample_rate=sample_rate,
            text_transforms=spoken_text_transforms(),
            settings=CartesiaTTSService.Settings(
                voice=tts.external_voice_id, model=tts.tts_model_name or default_model, language=language, **extra
            ),
        )
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    key = settings.require_key("ELEVENLABS_API_KEY", persona=name, needed_by="tts=elevenlabs")
    return ElevenLabsTTSService(
        api_key=key,
        sample_rate=sample_rate,
        text_transforms=spoken_text_transforms(),
        settings=ElevenLabsTTSService.Settings(
            voice=tts.external_voice_id,
            model=tts.tts_model_name or "eleven_flash_v2_5",
            language=language,
            **tts.voice_settings,
        ),
    )


def vad_params(*, pause: str, interrupt: str) -> VADParams:
    """The VAD settings for a pause and an interrupt sensitivity (``low``/``medium``/``high``)."""
    start_secs, confidence = VAD_START[interrupt]
    return VADParams(start_secs=start_secs, stop_secs=VAD_STOP_SECS[pause], confidence=confidence)


def build_user_params(persona: Persona) -> LLMUserAggregatorParams:
    """VAD and turn strategies from the persona's sensitivities."""
    stt = persona.layers.stt
    flow = persona.layers.conversational_flow
    vad = SileroVADAnalyzer(
        params=vad_params(pause=stt.participant_pause_sensitivity, interrupt=stt.participant_interrupt_sensitivity)
    )
    if flow.turn_detection_model == "smart_turn_v3":
        stop = [
            TranscriptAwareTurnStopStrategy(
                turn_analyzer=LocalSmartTurnAnalyzerV3(
                    params=SmartTurnParams(stop_secs=SMART_TURN_MAX_SILENCE[flow.turn_taking_patience])
                ),
                grace_secs=TRANSCRIPT_GRACE[flow.turn_taking_patience],
                statement_hold_secs=STATEMENT_HOLD[flow.turn_taking_patience],
                # Our Whisper service says when it is done with each utterance.
                stt_reports_utterances=stt.stt_engine == "whisper",
                # The early reply: the LLM starts on the pause's transcript before the turn ends.
                speculate=persona.layers.llm.speculative_inference,
            )
        ]
    else:
        stop = [SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=SPEECH_TIMEOUT[flow.turn_taking_patience])]
    min_words = MIN_WORDS_TO_INTERRUPT[flow.replica_interruptibility]
    if min_words > 1:
        start = [MinWordsUserTurnStartStrategy(min_words=min_words)]
    else:
        start = [VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()]
    return LLMUserAggregatorParams(
        vad_analyzer=vad, user_turn_strategies=UserTurnStrategies(start=start, stop=stop)
    )


class TavusRejectedError(RuntimeError):
    """Tavus rejected the key or the replica at start-up; the message names which."""


async def validate_tavus(persona: Persona, settings: Settings, *, timeout_s: float = 10.0) -> None:
    """Ask the Tavus API (``TAVUS_API_BASE_URL``) whether the key and the replica are good.

    Raises:
        TavusRejectedError: the key or the replica was rejected, or Tavus could not be reached.
    """
    key = settings.require_key("TAVUS_API_KEY", persona=persona.persona_name, needed_by="replica=tavus")
    base = settings.tavus_api_base_url.rstrip("/")
    url = f"{base}/v2/replicas/{persona.replica_id}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            async with session.get(url, headers={"x-api-key": key}) as response:
                status = response.status
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise TavusRejectedError(f"Tavus API at {base} could not be reached ({type(e).__name__}); check TAVUS_API_BASE_URL") from e
    if status in (401, 403):
        raise TavusRejectedError(f"TAVUS_API_KEY was rejected by the Tavus API at {base} (HTTP {status}); set a valid key in .env")
    if status in (400, 404):
        raise TavusRejectedError(
            f"Tavus replica {persona.replica_id!r} (persona {persona.persona_name!r}, layers.replica.replica_id) "
            f"was not found by the Tavus API at {base} (HTTP {status})"
        )
    if status >= 300:
        raise TavusRejectedError(f"Tavus API at {base} answered HTTP {status} for replica {persona.replica_id!r}")


def build_tavus_video(persona: Persona, settings: Settings, session: aiohttp.ClientSession):
    """Tavus renders the face; its conversation opens when someone joins (``open_conversation()``)."""
    from processors.replica.tavus import OnDemandTavusVideoService

    key = settings.require_key("TAVUS_API_KEY", persona=persona.persona_name, needed_by="replica=tavus")
    replica_id = persona.replica_id
    if not replica_id:
        raise EngineConfigError(f"persona {persona.persona_name!r}: a Tavus replica_id is required")
    logger.debug(f"Tavus replica {replica_id} for persona {persona.persona_name!r}")
    return OnDemandTavusVideoService(
        api_key=key, replica_id=replica_id, session=session, api_base_url=settings.tavus_api_base_url
    )
