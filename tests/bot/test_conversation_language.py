"""A conversation in another language: the real espeak-ng voice, the real multilingual Whisper, the real LLM."""

import re

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import TranscriptionFrame, TTSAudioRawFrame, TTSSpeakFrame
from pipecat.tests.utils import run_test

from bot.engines import EngineConfigError, build_stt, build_tts, check_persona, system_prompt
from bot.languages import UnsupportedLanguageError, persona_in_language, resolve_language
from personas import load_persona
from processors.stt.whisper import LocalWhisperSTTService
from processors.tts.espeak import EspeakTTSService
from processors.tts.piper import PiperPhonemeTTSService

pytestmark = pytest.mark.models

SPANISH = "Buenos días. La ciudad tiene un castillo antiguo y un río muy largo."


async def speak(tts, text: str) -> tuple[np.ndarray, int]:
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame(text)])
    frames = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert frames, "no audio came out"
    return np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16), frames[0].sample_rate


async def hear(stt: LocalWhisperSTTService, audio: np.ndarray, rate: int) -> str:
    speech16k = soxr.resample(audio.astype(np.float32) / 32768, rate, 16000)
    pcm = (speech16k * 32767).astype(np.int16).tobytes()
    return " ".join([f.text async for f in stt.run_stt(pcm) if isinstance(f, TranscriptionFrame)])


def test_names_and_codes_resolve_and_the_rest_are_refused_naming_what_is_allowed():
    assert resolve_language("Spanish") == resolve_language("es") == resolve_language(" SPANISH ")
    assert resolve_language("norwegian").espeak_voice == "nb"
    with pytest.raises(UnsupportedLanguageError) as err:
        resolve_language("klingon")
    assert "'klingon'" in str(err.value) and "english (en)" in str(err.value) and "spanish (es)" in str(err.value)
    with pytest.raises(UnsupportedLanguageError, match="automatic detection"):
        resolve_language("multilingual")
    # Tagalog has no espeak-ng voice: an offline persona cannot speak it.
    with pytest.raises(UnsupportedLanguageError, match="'tagalog' has no offline voice"):
        persona_in_language(load_persona("ava"), resolve_language("tagalog"))


def test_english_keeps_piper_and_a_cloud_voice_keeps_its_engine_and_is_told_the_language(settings):
    english = persona_in_language(load_persona("ava"), resolve_language("english"))
    assert english.layers.tts.tts_engine == "piper" and english.layers.stt.language == "en"
    assert "Always answer in" not in system_prompt(english)
    nova = persona_in_language(load_persona("nova"), resolve_language("german"))
    assert nova.layers.tts.tts_engine == "cartesia" and nova.layers.stt.language == "de"
    from pydantic import SecretStr

    keys = settings.model_copy(update={"cartesia_api_key": SecretStr("k"), "openai_api_key": SecretStr("k")})
    assert build_tts(nova, keys, None)._settings.language == "de"


def test_piper_with_another_language_is_refused(settings):
    base = load_persona("ava")
    french_ears = base.model_copy(
        update={"layers": base.layers.model_copy(update={"stt": base.layers.stt.model_copy(update={"language": "fr"})})}
    )
    with pytest.raises(EngineConfigError, match="piper voice speaks English"):
        check_persona(french_ears, settings, name="ava")


async def test_spanish_is_spoken_by_espeak_ng_and_heard_back_by_whisper_in_spanish(settings, embedded_models):
    persona = persona_in_language(load_persona("ava"), resolve_language("spanish"))
    check_persona(persona, settings, name="ava")
    tts = build_tts(persona, settings, embedded_models)
    assert isinstance(tts, EspeakTTSService) and not isinstance(tts, PiperPhonemeTTSService)
    stt = build_stt(persona, settings, embedded_models)
    assert stt._language_code == "es"

    audio, rate = await speak(tts, SPANISH)
    assert len(audio) / rate > 2.0, "the sentence is a few seconds of speech"
    heard = (await hear(stt, audio, rate)).lower()
    print(f"espeak-ng (es) -> whisper (es): {heard!r}")
    words = set(re.findall(r"\w+", heard))
    assert len(words & {"buenos", "días", "dias", "ciudad", "castillo", "antiguo", "río", "rio", "largo"}) >= 4, heard


async def test_the_llm_answers_in_the_conversation_s_language(settings, embedded_models):
    from openai import AsyncOpenAI

    persona = persona_in_language(load_persona("ava"), resolve_language("french"))
    instruction = system_prompt(persona)
    assert instruction.endswith("Always answer in French, whatever language the instructions above are written in.")
    await embedded_models.start_llm(persona)
    client = AsyncOpenAI(base_url=embedded_models.llm_base_url, api_key="local")
    try:
        reply = await client.chat.completions.create(
            model="local",
            messages=[{"role": "system", "content": instruction}, {"role": "user", "content": "Que faire à Lisbonne ?"}],
            max_tokens=60,
            temperature=0,
        )
    finally:
        await client.close()
    text = reply.choices[0].message.content.lower()
    print(f"LLM reply in French: {text!r}")
    words = re.findall(r"[a-zàâçéèêëîïôûùüÿœ']+", text)
    french = {"le", "la", "les", "de", "des", "du", "et", "est", "vous", "pour", "un", "une", "à", "en", "dans"}
    english = {"the", "and", "is", "you", "for", "to", "of", "in"}
    assert sum(w in french for w in words) > 2 * sum(w in english for w in words), text
