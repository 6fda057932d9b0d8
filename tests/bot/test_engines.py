"""Persona layers -> services: keys, sensitivities, room URLs, client messages."""

import pytest
from pipecat.frames.frames import InterruptionFrame, InterruptionWorkerFrame, LLMMessagesAppendFrame, TTSSpeakFrame
from pipecat.turns.user_start import MinWordsUserTurnStartStrategy, VADUserTurnStartStrategy
from pydantic import SecretStr

from bot.engines import EmbeddedModels, EngineConfigError, build_llm, build_stt, build_tts, build_user_params, check_persona
from bot.interactions import UnknownClientEvent, client_message_frames
from bot.rooms import RoomUrlError, validate_room_url
from bot.settings import MissingKeyError, Settings
from personas import load_persona
from personas.model import Layers, Persona, TTSLayer

pytestmark = pytest.mark.unit


def test_missing_key_names_the_variable_and_the_persona():
    settings = Settings(_env_file=None)
    with pytest.raises(MissingKeyError) as err:
        check_persona(load_persona("nova"), settings, name="nova")
    assert "OPENAI_API_KEY" in str(err.value) and "'nova'" in str(err.value) and ".env" in str(err.value)


def test_each_cloud_key_is_asked_for_in_turn():
    keys = {"openai_api_key": SecretStr("sk-test")}
    with pytest.raises(MissingKeyError, match="CARTESIA_API_KEY.*tts=cartesia"):
        check_persona(load_persona("nova"), Settings(_env_file=None, **keys), name="nova")
    with pytest.raises(MissingKeyError, match="ELEVENLABS_API_KEY"):
        check_persona(load_persona("tavus_demo"), Settings(_env_file=None, **keys), name="tavus_demo")
    keys["elevenlabs_api_key"] = SecretStr("el-test")
    with pytest.raises(MissingKeyError, match="TAVUS_API_KEY.*replica=tavus"):
        check_persona(load_persona("tavus_demo"), Settings(_env_file=None, **keys), name="tavus_demo")


def test_blank_key_counts_as_missing():
    settings = Settings(_env_file=None, openai_api_key=SecretStr("  "))
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        check_persona(load_persona("nova"), settings, name="nova")


def test_cloud_voice_needs_a_voice_id():
    persona = Persona(persona_name="x", system_prompt="y", layers=Layers(tts=TTSLayer(tts_engine="cartesia")))
    settings = Settings(_env_file=None, cartesia_api_key=SecretStr("k"))
    with pytest.raises(EngineConfigError, match="external_voice_id"):
        check_persona(persona, settings, name="x")


def test_cloud_services_are_built_from_persona_data():
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.openai.stt import OpenAISTTService

    settings = Settings(
        _env_file=None,
        openai_api_key=SecretStr("sk-test"),
        cartesia_api_key=SecretStr("c"),
        elevenlabs_api_key=SecretStr("e"),
    )
    models = EmbeddedModels(settings)
    nova = load_persona("nova")
    assert isinstance(build_stt(nova, settings, models), OpenAISTTService)
    llm = build_llm(nova, settings, models)
    assert isinstance(llm, OpenAILLMService) and llm._settings.model == "gpt-4.1-mini"
    tts = build_tts(nova, settings, models)
    assert isinstance(tts, CartesiaTTSService) and tts._settings.voice == nova.layers.tts.external_voice_id
    assert isinstance(build_tts(load_persona("tavus_demo"), settings, models), ElevenLabsTTSService)


def test_unknown_piper_voice_setting_is_refused(settings):
    persona = Persona(
        persona_name="x", system_prompt="y", layers=Layers(tts=TTSLayer(voice_settings={"pitch": 2}))
    )
    with pytest.raises(EngineConfigError, match="pitch.*allows"):
        build_tts(persona, settings, EmbeddedModels(settings))


def test_sensitivities_map_onto_vad_and_turn_strategies():
    ava, max_ = build_user_params(load_persona("ava")), build_user_params(load_persona("max"))
    # Ava answers after shorter pauses; Max waits for a thinking student.
    assert ava.vad_analyzer.params.stop_secs < max_.vad_analyzer.params.stop_secs
    assert ava.vad_analyzer.params.start_secs < max_.vad_analyzer.params.start_secs
    ava_stop = ava.user_turn_strategies.stop[0]._turn_analyzer._params.stop_secs
    max_stop = max_.user_turn_strategies.stop[0]._turn_analyzer._params.stop_secs
    assert ava_stop < max_stop
    # Ava yields the moment the user talks; Max only after a few words.
    assert isinstance(ava.user_turn_strategies.start[0], VADUserTurnStartStrategy)
    assert isinstance(max_.user_turn_strategies.start[0], MinWordsUserTurnStartStrategy)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("http://acme.daily.co/room", "scheme must be https"),
        ("acme.daily.co/room", "scheme must be https"),
        ("https://acme.daily.co/", "room name"),
        ("https:///room", "host"),
        ("https://acme.daily.co/a/b", "room name"),
        ("https://acme.daily.co/room?t=1", "no query"),
    ],
)
def test_malformed_room_urls_are_refused_with_the_reason(url, complaint):
    with pytest.raises(RoomUrlError) as err:
        validate_room_url(url)
    assert complaint in str(err.value) and "daily.co/<room-name>" in str(err.value)


def test_a_good_room_url_passes():
    assert validate_room_url(" https://acme.daily.co/hello-world ") == "https://acme.daily.co/hello-world"


def test_client_messages_become_frames():
    def msg(event, **props):
        return {"message_type": "conversation", "event_type": event, "properties": props}

    assert isinstance(client_message_frames(msg("conversation.echo", text="hi"))[0], TTSSpeakFrame)
    respond = client_message_frames(msg("conversation.respond", text="hello"))
    assert isinstance(respond[0], InterruptionFrame) and isinstance(respond[1], LLMMessagesAppendFrame)
    assert respond[1].messages == [{"role": "user", "content": "hello"}]
    assert isinstance(client_message_frames(msg("conversation.interrupt"))[0], InterruptionWorkerFrame)
    with pytest.raises(ValueError, match="properties.text"):
        client_message_frames(msg("conversation.respond"))
    with pytest.raises(UnknownClientEvent, match="allowed: conversation.echo"):
        client_message_frames(msg("conversation.dance"))
    with pytest.raises(UnknownClientEvent):
        client_message_frames(["not", "a", "dict"])


def test_context_messages_append_to_or_replace_the_call_context():
    from bot.interactions import system_instruction_frame, updated_context

    def msg(event, **props):
        return {"message_type": "conversation", "event_type": event, "properties": props}

    assert updated_context(msg("conversation.append_llm_context", context="B"), "A") == "A\nB"
    assert updated_context(msg("conversation.overwrite_llm_context", context="C"), "A\nB") == "C"
    with pytest.raises(ValueError, match="properties.context"):
        updated_context(msg("conversation.overwrite_llm_context"), "A")
    ava = load_persona("ava")
    frame = system_instruction_frame(ava.full_system_prompt("The visitor is vegetarian."))
    assert frame.delta.system_instruction.endswith("The visitor is vegetarian.")


@pytest.mark.models
async def test_prepare_builds_the_persona_s_replica_rig_before_any_call(settings, monkeypatch):
    """Start-up makes the rig once, so its compiled mouth warp is loaded before a visitor's call starts."""
    import processors.replica.video_rig as video_rig

    built = []
    make_rig = video_rig.make_rig
    monkeypatch.setattr(video_rig, "make_rig", lambda replica, size=(512, 512): built.append(replica.replica_id) or make_rig(replica, size))
    persona = load_persona("echo")  # no STT and no LLM: only the voice and the face load
    await EmbeddedModels(settings).prepare(persona)
    assert built == [persona.replica_id]


@pytest.mark.models
async def test_piper_pauses_the_embedded_llm_for_a_reply_s_first_words_and_only_that_llm(settings, embedded_models):
    from personas.model import Layers, LLMLayer, Persona

    ava = load_persona("ava")
    await embedded_models.start_llm(ava)
    hold = build_tts(ava, settings, embedded_models)._first_chunk_hold
    assert hold is not None and hold.__self__ is embedded_models._server and hold.__name__ == "paused"
    # A cloud LLM, a llama.cpp server of the user's own, or a persona with no LLM: nothing to pause.
    for llm in (LLMLayer(engine="openai", base_url="http://127.0.0.1:9/v1", model="m"),
                LLMLayer(engine="llama_cpp", base_url="http://127.0.0.1:9/v1")):  # fmt: skip
        other = Persona(persona_name="other", system_prompt="Be brief.", layers=Layers(llm=llm))
        assert build_tts(other, settings, embedded_models)._first_chunk_hold is None
    assert build_tts(load_persona("echo"), settings, embedded_models)._first_chunk_hold is None
