"""Every field of the persona model reaches an engine, or is refused by name.

``test_every_field_is_wired_or_refused`` walks the model: a field added to
``Persona`` without a check below fails it. Each check builds the real
engines from a persona that sets the field (no network: cloud services are
only constructed) and looks for the value where the engine takes it, or
expects ``check_persona`` to refuse the persona naming the field.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from bot.engines import (
    EMOTION_INSTRUCTION,
    MIN_WORDS_TO_INTERRUPT,
    SMART_TURN_MAX_SILENCE,
    VAD_START,
    VAD_STOP_SECS,
    EmbeddedModels,
    EngineConfigError,
    build_llm,
    build_stt,
    build_tts,
    build_user_params,
    check_persona,
    system_prompt,
)
from bot.pipeline import Conversation, transport_media_params
from bot.settings import Settings
from personas.model import Persona

pytestmark = pytest.mark.unit

KEYS = Settings(
    _env_file=None,
    openai_api_key=SecretStr("sk-test"),
    cartesia_api_key=SecretStr("c-test"),
    elevenlabs_api_key=SecretStr("e-test"),
    tavus_api_key=SecretStr("t-test"),
)
BASE = {"persona_name": "Field test", "system_prompt": "You are a test."}


def persona(**layers: Any) -> Persona:
    """A persona with these layer settings, e.g. ``persona(tts={"tts_engine": "cartesia"})``."""
    fields = {k: v for k, v in layers.items() if k not in ("top",)}
    return Persona.model_validate({**BASE, **layers.get("top", {}), "layers": fields})


CLOUD = {"stt": {"stt_engine": "openai"}, "llm": {"engine": "openai"}}
CARTESIA = {"tts_engine": "cartesia", "external_voice_id": "voice-1"}


def refused(p: Persona, field: str) -> None:
    with pytest.raises(EngineConfigError) as err:
        check_persona(p, KEYS, name="field_test")
    assert field in str(err.value)


def models() -> EmbeddedModels:
    return EmbeddedModels(KEYS)


def llm_of(p: Persona):
    return build_llm(p, KEYS, models())


def user_params_of(p: Persona):
    return build_user_params(p)


# --- one check per field -------------------------------------------------------


def check_persona_name():
    from bot.daily import build_daily_transport

    p = persona(replica={"replica_engine": "off"}).model_copy(update={"persona_name": "Zed"})
    transport = build_daily_transport(p, room_url="https://acme.daily.co/r", token=None)
    assert transport._client._bot_name == "Zed"  # the name people see in the room


def check_system_prompt():
    assert "You are a test." in llm_of(persona(**CLOUD))._settings.system_instruction


def check_context():
    p = persona(**CLOUD).model_copy(update={"context": "The user is in Lisbon."})
    assert "The user is in Lisbon." in llm_of(p)._settings.system_instruction


def check_default_replica_id():
    p = persona(top={"default_replica_id": "nobody"})
    refused(p, "'nobody'")  # it is looked up: a local replica that does not exist stops start-up
    check_persona(persona(top={"default_replica_id": "ada"}), KEYS, name="x")


def check_custom_greeting():
    p = persona(top={"custom_greeting": "Olá!"})
    assert Conversation(persona=p, persona_name="x").greeting == "Olá!"


def check_pipeline_mode():
    p = persona(top={"pipeline_mode": "echo"}, replica={"replica_engine": "off"})
    assert transport_media_params(p)["audio_in_enabled"] is False
    check_persona(p, Settings(_env_file=None), name="x")  # needs no STT or LLM engine
    # talk hears a recording: an echo persona, which hears nothing, is refused.
    import asyncio
    import tempfile
    import wave

    from bot.talk import TalkInputError, talk_once

    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "a.wav"
        with wave.open(str(wav), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
            w.writeframes(bytes(16000))
        with pytest.raises(TalkInputError, match="pipeline_mode='echo'"):
            asyncio.run(talk_once(wav, persona_name="echo", settings=KEYS, models=models()))


def check_perception_model():
    with pytest.raises(ValidationError):
        persona(perception={"perception_model": "moondream"})
    from bot.perception import build_perception, camera_request_for
    from bot.pipeline import camera_in_framerate

    off = persona()
    assert camera_in_framerate(off) is None and camera_request_for(off) is None
    assert build_perception(off, KEYS) is None  # nothing built, no model loaded
    on = persona(perception={"perception_model": "landmarks"}, replica=NO_FACE)
    check_persona(on, KEYS, name="x")
    assert camera_in_framerate(on) == 2
    assert transport_media_params(on)["video_in_enabled"] is True
    assert camera_request_for(on) == {"type": "devroom.camera", "send": True, "framerate": 2, "width": 320, "height": 240}
    layer = build_perception(on, KEYS, conversation_id="c9")
    assert layer is not None and layer.context is not None
    from processors.perception.vision_llm import VisionLLMPerceptionProcessor

    cloud = persona(perception={"perception_model": "openai"}, replica=NO_FACE)
    check_persona(cloud, KEYS, name="x")
    assert camera_in_framerate(cloud) == 2
    layer = build_perception(cloud, KEYS, conversation_id="c9")
    assert isinstance(layer.tap, VisionLLMPerceptionProcessor) and layer.context._perception is layer.tap


def check_perception_queries(name: str) -> Callable[[], None]:
    def check():
        refused(persona(perception={name: ["Mood?"]}), f"layers.perception.{name}")
        on = {"perception_model": "landmarks"}
        p = persona(perception={**on, name: ["Is the user smiling?", "How many people are there?"]}, replica=NO_FACE)
        check_persona(p, KEYS, name="x")
        from bot.perception import build_perception

        assert getattr(build_perception(p, KEYS).tap._params, name) == ["Is the user smiling?", "How many people are there?"]
        # A question about nothing the landmarks see is refused by name, with what it can answer.
        refused(persona(perception={**on, name: ["What colour is the user's shirt?"]}), "What colour is the user's shirt?")
        # The vision LLM answers any question about what it sees.
        cloud = persona(perception={"perception_model": "openai", name: ["What colour is the user's shirt?"]}, replica=NO_FACE)
        check_persona(cloud, KEYS, name="x")
        assert getattr(build_perception(cloud, KEYS).tap._params, name) == ["What colour is the user's shirt?"]

    return check


NO_FACE = {"replica_engine": "off"}
LEFT_TOOL = {"type": "function", "function": {"name": "user_left", "description": "Call when the user leaves."}}


def check_perception_tools():
    refused(persona(perception={"perception_tools": [LEFT_TOOL]}), "layers.perception.perception_tools")
    on = {"perception_model": "landmarks"}
    p = persona(perception={**on, "perception_tools": [LEFT_TOOL]}, replica=NO_FACE)
    check_persona(p, KEYS, name="x")
    from bot.perception import build_perception

    assert [t.name for t in build_perception(p, KEYS).tap.tools] == ["user_left"]
    hat = {"type": "function", "function": {"name": "spot_hat", "description": "Call when the user wears a hat."}}
    refused(persona(perception={**on, "perception_tools": [hat]}), "'spot_hat' names no cue")
    # The vision LLM decides when to call any tool; only the OpenAI function format is checked.
    cloud = {"perception_model": "openai"}
    p = persona(perception={**cloud, "perception_tools": [hat]}, replica=NO_FACE)
    check_persona(p, KEYS, name="x")
    assert [t.definition for t in build_perception(p, KEYS).tap.tools] == [hat]
    refused(persona(perception={**cloud, "perception_tools": [{"name": "spot_hat"}]}), "layers.perception.perception_tools[0]: must be")


def check_perception_tool_prompt():
    refused(persona(perception={"perception_tool_prompt": "Use tools."}), "layers.perception.perception_tool_prompt")
    on = {"perception_model": "landmarks"}
    vague = {"type": "function", "function": {"name": "flag_moment", "description": "Flag a moment."}}
    refused(persona(perception={**on, "perception_tools": [vague]}), "'flag_moment' names no cue")
    # The prompt's sentence that names the tool says when it fires.
    p = persona(
        perception={**on, "perception_tools": [vague], "perception_tool_prompt": "Call flag_moment when the user frowns."},
        replica=NO_FACE,
    )
    check_persona(p, KEYS, name="x")
    from bot.perception import build_perception

    (tool,) = build_perception(p, KEYS).tap.tools
    assert tool.triggers == (("expression", "frowning"),)


def check_perception_fps():
    from bot.pipeline import camera_in_framerate

    assert camera_in_framerate(persona(perception={"perception_model": "landmarks", "fps": 5})) == 5
    refused(persona(perception={"fps": 5}), "layers.perception.fps")


VISION = {"perception_model": "openai"}


def vision_params(**perception: Any):
    from bot.perception import build_perception

    return build_perception(persona(perception={**VISION, **perception}, replica=NO_FACE), KEYS).tap._params


def vision_field_refused(field: str, value: Any, shown: str) -> None:
    """Refused with every other engine, naming the field, its value and the engine it is for."""
    for engine in ("landmarks", "off"):
        with pytest.raises(EngineConfigError) as err:
            check_persona(persona(perception={"perception_model": engine, field: value}, replica=NO_FACE), KEYS, name="x")
        message = str(err.value)
        assert f"layers.perception.{shown} does nothing with perception_model='{engine}'" in message, message
        assert "are for perception_model='openai'" in message


def check_perception_vision_model():
    assert vision_params().model == "gpt-4o-mini"
    assert vision_params(model="gpt-4.1-mini").model == "gpt-4.1-mini"
    vision_field_refused("model", "gpt-4o", "model='gpt-4o'")


def check_perception_base_url():
    assert vision_params().base_url == "https://api.openai.com/v1"
    assert vision_params(base_url="http://127.0.0.1:9/v1").base_url == "http://127.0.0.1:9/v1"
    vision_field_refused("base_url", "http://127.0.0.1:9/v1", "base_url='http://127.0.0.1:9/v1'")


def check_perception_api_key():
    assert vision_params().api_key.get_secret_value() == "sk-test"  # OPENAI_API_KEY
    assert vision_params(api_key="persona-key").api_key.get_secret_value() == "persona-key"
    vision_field_refused("api_key", "persona-key", "api_key (set)")
    with pytest.raises(EngineConfigError) as err:
        check_persona(persona(perception={"perception_model": "landmarks", "api_key": "persona-key"}), KEYS, name="x")
    assert "persona-key" not in str(err.value)


def check_perception_vision_interval():
    assert vision_params().interval_s == 3.0
    assert vision_params(vision_interval_s=5).interval_s == 5.0
    with pytest.raises(ValidationError):
        persona(perception={**VISION, "vision_interval_s": 0.2})
    vision_field_refused("vision_interval_s", 5.0, "vision_interval_s=5.0")


def check_stt_engine():
    from pipecat.services.openai.stt import OpenAISTTService

    assert isinstance(build_stt(persona(**CLOUD), KEYS, models()), OpenAISTTService)


def check_stt_model():
    p = persona(stt={"stt_engine": "openai", "model": "gpt-4o-mini-transcribe"}, llm={"engine": "openai"})
    assert build_stt(p, KEYS, models())._settings.model == "gpt-4o-mini-transcribe"


def check_stt_language():
    p = persona(stt={"stt_engine": "openai", "language": "pt"}, llm={"engine": "openai"})
    assert str(build_stt(p, KEYS, models())._settings.language).endswith("pt")


def check_hotwords():
    p = persona(stt={"stt_engine": "openai", "hotwords": ["Alfama", "Belém"]}, llm={"engine": "openai"})
    assert "Alfama, Belém" in build_stt(p, KEYS, models())._settings.prompt


def check_pause_sensitivity():
    for level in ("low", "high"):
        vad = user_params_of(persona(stt={"participant_pause_sensitivity": level})).vad_analyzer
        assert vad.params.stop_secs == VAD_STOP_SECS[level]


def check_interrupt_sensitivity():
    vad = user_params_of(persona(stt={"participant_interrupt_sensitivity": "high"})).vad_analyzer
    assert (vad.params.start_secs, vad.params.confidence) == VAD_START["high"]


def check_turn_detection_model():
    from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

    (stop,) = user_params_of(persona(conversational_flow={"turn_detection_model": "vad"})).user_turn_strategies.stop
    assert isinstance(stop, SpeechTimeoutUserTurnStopStrategy)


def check_turn_taking_patience():
    (stop,) = user_params_of(persona(conversational_flow={"turn_taking_patience": "high"})).user_turn_strategies.stop
    assert stop._turn_analyzer.params.stop_secs == SMART_TURN_MAX_SILENCE["high"]


def check_replica_interruptibility():
    (start,) = user_params_of(persona(conversational_flow={"replica_interruptibility": "low"})).user_turn_strategies.start
    assert start._min_words == MIN_WORDS_TO_INTERRUPT["low"]


def check_llm_engine():
    assert "openai" in str(llm_of(persona(**CLOUD))._client.base_url)


def check_llm_model():
    p = persona(stt={"stt_engine": "openai"}, llm={"engine": "openai", "model": "gpt-4.1"})
    assert llm_of(p)._settings.model == "gpt-4.1"


def check_llm_base_url():
    p = persona(llm={"engine": "openai", "base_url": "http://127.0.0.1:9/v1"})
    assert str(llm_of(p)._client.base_url).startswith("http://127.0.0.1:9/v1")


def check_llm_api_key():
    p = persona(llm={"engine": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "persona-key"})
    assert llm_of(p)._client.api_key == "persona-key"


def check_llm_tools():
    from bot.engines import refused_fields, tools_schema

    tool = {"type": "function", "function": {"name": "get_weather", "description": "The weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    p = persona(llm={"tools": [tool]})
    assert not refused_fields(p)
    (schema,) = tools_schema(p.layers.llm.tools).standard_tools
    assert (schema.name, schema.required, schema.properties) == ("get_weather", ["city"], {"city": {"type": "string"}})
    refused(persona(llm={"tools": [{"type": "function", "function": {"name": "no spaces"}}]}), "layers.llm.tools[0]: function.name")
    refused(persona(llm={"tools": [{"name": "f"}]}), 'layers.llm.tools[0]: must be {"type": "function"')


def check_llm_headers():
    p = persona(llm={"engine": "openai", "base_url": "http://127.0.0.1:9/v1", "headers": {"X-Team": "a"}})
    assert llm_of(p)._client.default_headers["X-Team"] == "a"


def check_llm_extra_body():
    p = persona(llm={"engine": "openai", "base_url": "http://127.0.0.1:9/v1", "extra_body": {"seed": 7}})
    assert llm_of(p)._settings.extra["extra_body"] == {"seed": 7}


def check_speculative_inference():
    for on in (True, False):
        (stop,) = user_params_of(persona(llm={"speculative_inference": on})).user_turn_strategies.stop
        assert stop._speculate_enabled is on
    refused(
        persona(llm={"speculative_inference": True}, conversational_flow={"turn_detection_model": "vad"}),
        "layers.llm.speculative_inference",
    )


def check_temperature():
    assert llm_of(persona(llm={"engine": "openai", "temperature": 0.1}, stt={"stt_engine": "openai"}))._settings.temperature == 0.1


def check_max_tokens():
    assert llm_of(persona(llm={"engine": "openai", "max_tokens": 33}, stt={"stt_engine": "openai"}))._settings.max_tokens == 33


def check_tts_engine():
    from pipecat.services.cartesia.tts import CartesiaTTSService

    assert isinstance(build_tts(persona(tts=CARTESIA), KEYS, models()), CartesiaTTSService)


def check_external_voice_id():
    assert build_tts(persona(tts=CARTESIA), KEYS, models())._settings.voice == "voice-1"


def check_tts_model_name():
    assert build_tts(persona(tts={**CARTESIA, "tts_model_name": "sonic-turbo"}), KEYS, models())._settings.model == "sonic-turbo"
    refused(persona(tts={"tts_model_name": "x"}), "layers.tts.tts_model_name")


def check_voice_settings():
    tts = build_tts(persona(tts={**CARTESIA, "voice_settings": {"speed": 1.2}}), KEYS, models())
    assert tts._settings.generation_config.speed == 1.2
    el = {"tts_engine": "elevenlabs", "external_voice_id": "v", "voice_settings": {"use_speaker_boost": True, "style": 0.3}}
    tts = build_tts(persona(tts=el), KEYS, models())
    assert (tts._settings.use_speaker_boost, tts._settings.style) == (True, 0.3)
    refused(persona(tts={**CARTESIA, "voice_settings": {"stability": 0.5}}), "layers.tts.voice_settings has ['stability']")
    refused(persona(tts={"voice_settings": {"pitch": 2}}), "layers.tts.voice_settings has ['pitch']")


def check_tts_emotion_control():
    p = persona(tts={**CARTESIA, "tts_emotion_control": True}, **CLOUD)
    assert EMOTION_INSTRUCTION in system_prompt(p)
    assert EMOTION_INSTRUCTION in build_llm(p, KEYS, models())._settings.system_instruction
    assert build_tts(p, KEYS, models())._settings.model == "sonic-3"
    assert EMOTION_INSTRUCTION not in system_prompt(persona(tts=CARTESIA))
    refused(persona(tts={"tts_emotion_control": True}), "layers.tts.tts_emotion_control")


def check_replica_engine():
    assert transport_media_params(persona(replica={"replica_engine": "local"}))["video_out_enabled"]
    assert "video_out_enabled" not in transport_media_params(persona(replica={"replica_engine": "off"}))


def check_replica_id():
    refused(persona(replica={"replica_id": "nobody"}), "'nobody'")
    refused(persona(replica={"replica_engine": "off", "replica_id": "ada"}), "layers.replica.replica_id")


def size_check(name: str, value: int, param: str) -> Callable[[], None]:
    def check():
        for engine in ("local", "tavus"):
            p = persona(replica={"replica_engine": engine, "replica_id": "ada", name: value})
            assert transport_media_params(p)[param] == value
        refused(persona(replica={"replica_engine": "off", name: value}), f"layers.replica.{name}")

    return check


def check_fps():
    assert transport_media_params(persona(replica={"fps": 15}))["video_out_framerate"] == 15
    tavus = {"replica_engine": "tavus", "replica_id": "r1"}
    assert transport_media_params(persona(replica=tavus))["video_out_framerate"] == 30
    refused(persona(replica={**tavus, "fps": 25}), "layers.replica.fps=25")
    refused(persona(replica={"replica_engine": "off", "fps": 30}), "layers.replica.fps")


def check_idle_fps():
    from bot.pipeline import build_replica

    def listening_rate(**replica: Any) -> int | None:
        return build_replica(persona(replica={"replica_id": "ada", **replica}), KEYS)._params.idle_fps

    assert listening_rate() == 12
    assert listening_rate(idle_fps=5) == 5
    assert listening_rate(fps=10) == 10  # never above the speaking rate
    with pytest.raises(ValidationError, match="idle_fps=30 must be at most fps=25"):
        persona(replica={"idle_fps": 30})
    tavus = {"replica_engine": "tavus", "replica_id": "r1"}
    refused(persona(replica={**tavus, "idle_fps": 10}), "layers.replica.idle_fps=10")
    refused(persona(replica={"replica_engine": "off", "idle_fps": 10}), "layers.replica.idle_fps")


CHECKS: dict[str, Callable[[], None]] = {
    "persona_name": check_persona_name,
    "system_prompt": check_system_prompt,
    "context": check_context,
    "default_replica_id": check_default_replica_id,
    "custom_greeting": check_custom_greeting,
    "pipeline_mode": check_pipeline_mode,
    "layers.perception.perception_model": check_perception_model,
    "layers.perception.fps": check_perception_fps,
    "layers.perception.ambient_awareness_queries": check_perception_queries("ambient_awareness_queries"),
    "layers.perception.perception_analysis_queries": check_perception_queries("perception_analysis_queries"),
    "layers.perception.perception_tools": check_perception_tools,
    "layers.perception.perception_tool_prompt": check_perception_tool_prompt,
    "layers.perception.model": check_perception_vision_model,
    "layers.perception.base_url": check_perception_base_url,
    "layers.perception.api_key": check_perception_api_key,
    "layers.perception.vision_interval_s": check_perception_vision_interval,
    "layers.stt.stt_engine": check_stt_engine,
    "layers.stt.model": check_stt_model,
    "layers.stt.language": check_stt_language,
    "layers.stt.hotwords": check_hotwords,
    "layers.stt.participant_pause_sensitivity": check_pause_sensitivity,
    "layers.stt.participant_interrupt_sensitivity": check_interrupt_sensitivity,
    "layers.conversational_flow.turn_detection_model": check_turn_detection_model,
    "layers.conversational_flow.turn_taking_patience": check_turn_taking_patience,
    "layers.conversational_flow.replica_interruptibility": check_replica_interruptibility,
    "layers.llm.engine": check_llm_engine,
    "layers.llm.model": check_llm_model,
    "layers.llm.base_url": check_llm_base_url,
    "layers.llm.api_key": check_llm_api_key,
    "layers.llm.tools": check_llm_tools,
    "layers.llm.headers": check_llm_headers,
    "layers.llm.extra_body": check_llm_extra_body,
    "layers.llm.speculative_inference": check_speculative_inference,
    "layers.llm.temperature": check_temperature,
    "layers.llm.max_tokens": check_max_tokens,
    "layers.tts.tts_engine": check_tts_engine,
    "layers.tts.external_voice_id": check_external_voice_id,
    "layers.tts.tts_model_name": check_tts_model_name,
    "layers.tts.voice_settings": check_voice_settings,
    "layers.tts.tts_emotion_control": check_tts_emotion_control,
    "layers.replica.replica_engine": check_replica_engine,
    "layers.replica.replica_id": check_replica_id,
    "layers.replica.width": size_check("width", 640, "video_out_width"),
    "layers.replica.height": size_check("height", 360, "video_out_height"),
    "layers.replica.fps": check_fps,
    "layers.replica.idle_fps": check_idle_fps,
}


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field of ``model`` (nested models walked)."""
    paths = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += field_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def test_every_field_is_wired_or_refused():
    paths = field_paths(Persona)
    missing = [p for p in paths if p not in CHECKS]
    assert not missing, f"persona fields neither wired nor refused (add a check): {missing}"
    assert not set(CHECKS) - set(paths), "checks for fields the model no longer has"


@pytest.mark.parametrize("path", list(CHECKS))
def test_field(path):
    CHECKS[path]()


def test_shipped_personas_pass_their_own_checks():
    from personas import list_personas, load_persona

    for name in list_personas():
        check_persona(load_persona(name), KEYS, name=name)
