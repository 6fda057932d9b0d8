"""Personas are Python modules with the contract's field names."""

import pytest
from pydantic import ValidationError

from personas import PersonaNotFoundError, list_personas, load_persona
from personas.model import Persona

pytestmark = pytest.mark.unit


def test_every_persona_module_loads_and_validates():
    names = list_personas()
    assert {"ava", "max"} <= set(names)
    for name in names:
        assert isinstance(load_persona(name), Persona)


def test_unknown_persona_lists_the_valid_ones():
    with pytest.raises(PersonaNotFoundError) as err:
        load_persona("bob")
    message = str(err.value)
    assert "'bob'" in message
    for name in list_personas():
        assert name in message


def test_two_local_personas_differ_in_behaviour_and_voice():
    ava, max_ = load_persona("ava"), load_persona("max")
    assert ava.system_prompt != max_.system_prompt
    assert ava.layers.tts.voice_settings != max_.layers.tts.voice_settings
    assert ava.layers.conversational_flow.turn_taking_patience != max_.layers.conversational_flow.turn_taking_patience
    assert ava.replica_id != max_.replica_id
    for p in (ava, max_):
        assert (p.layers.stt.stt_engine, p.layers.llm.engine, p.layers.tts.tts_engine) == ("whisper", "llama_cpp", "piper")


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError) as err:
        Persona(persona_name="x", system_prompt="y", colour="blue")
    assert "colour" in str(err.value)
    with pytest.raises(ValidationError):
        Persona.model_validate({"persona_name": "x", "system_prompt": "y", "layers": {"tts": {"voice": "z"}}})


@pytest.mark.parametrize(
    ("layer", "field", "valid"),
    [
        ("tts", "tts_engine", ("piper", "cartesia", "elevenlabs")),
        ("stt", "stt_engine", ("whisper", "openai")),
        ("llm", "engine", ("llama_cpp", "openai")),
        ("replica", "replica_engine", ("local", "tavus", "off")),
    ],
)
def test_unknown_engine_names_list_the_valid_ones(layer, field, valid):
    with pytest.raises(ValidationError) as err:
        Persona.model_validate({"persona_name": "x", "system_prompt": "y", "layers": {layer: {field: "nope"}}})
    message = str(err.value)
    assert "nope" in message
    for name in valid:
        assert f"'{name}'" in message


def test_system_prompt_includes_context_and_call_context():
    ava = load_persona("ava")
    prompt = ava.full_system_prompt("The visitor arrives tomorrow.")
    assert prompt.startswith(ava.system_prompt)
    assert ava.context in prompt and "arrives tomorrow" in prompt
