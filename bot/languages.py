"""The conversation languages: the hosted contract's names, their codes, and who speaks them.

The hosted API takes ``properties.language`` as a full language name
(``"english"``, ``"french"``); its docs list each with its ISO 639-1 code,
so either is accepted here, in any case. One language sets three layers:

- STT: Whisper's language (the packaged ``base`` model is multilingual);
- LLM: the system prompt tells it to answer in that language;
- TTS: piper's packaged voice speaks English; any other language goes to
  espeak-ng (offline, Debian's ``espeak-ng``) with its voice for the
  language, unless the persona speaks through a cloud voice (Cartesia,
  ElevenLabs), which is then told the language.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ConversationLanguage:
    """One language: its contract name, ISO 639-1 code and espeak-ng voice (None: no offline voice)."""

    name: str
    code: str
    espeak_voice: str | None

    @property
    def title(self) -> str:
        return self.name.capitalize()


# The hosted product's 42 languages (its "language support" page), with espeak-ng's voice for each.
LANGUAGES: tuple[ConversationLanguage, ...] = tuple(
    ConversationLanguage(name, code, voice)
    for name, code, voice in (
        ("english", "en", "en-us"), ("french", "fr", "fr-fr"), ("german", "de", "de"), ("spanish", "es", "es"),
        ("portuguese", "pt", "pt"), ("chinese", "zh", "cmn"), ("japanese", "ja", "ja"), ("hindi", "hi", "hi"),
        ("italian", "it", "it"), ("korean", "ko", "ko"), ("dutch", "nl", "nl"), ("polish", "pl", "pl"),
        ("russian", "ru", "ru"), ("swedish", "sv", "sv"), ("turkish", "tr", "tr"), ("tagalog", "tl", None),
        ("bulgarian", "bg", "bg"), ("romanian", "ro", "ro"), ("arabic", "ar", "ar"), ("czech", "cs", "cs"),
        ("greek", "el", "el"), ("finnish", "fi", "fi"), ("croatian", "hr", "hr"), ("malay", "ms", "ms"),
        ("slovak", "sk", "sk"), ("danish", "da", "da"), ("tamil", "ta", "ta"), ("ukrainian", "uk", "uk"),
        ("hungarian", "hu", "hu"), ("norwegian", "no", "nb"), ("vietnamese", "vi", "vi"), ("bengali", "bn", "bn"),
        ("thai", "th", "th"), ("hebrew", "he", "he"), ("georgian", "ka", "ka"), ("indonesian", "id", "id"),
        ("telugu", "te", "te"), ("gujarati", "gu", "gu"), ("kannada", "kn", "kn"), ("malayalam", "ml", "ml"),
        ("marathi", "mr", "mr"), ("punjabi", "pa", "pa"),
    )
)
_BY_KEY = {key: lang for lang in LANGUAGES for key in (lang.name, lang.code)}
ENGLISH = _BY_KEY["en"]


class UnsupportedLanguageError(ValueError):
    """A language this server cannot hold a conversation in; the message lists the allowed ones."""


def allowed_languages(*, offline_voice_only: bool = False) -> list[str]:
    """The accepted names (each also by its code); ``offline_voice_only``: those piper or espeak-ng can speak."""
    return [
        f"{lang.name} ({lang.code})" for lang in LANGUAGES if lang.espeak_voice or not offline_voice_only
    ]


def resolve_language(value: str) -> ConversationLanguage:
    """The language named by ``value`` (a contract name or ISO code, any case).

    Raises:
        UnsupportedLanguageError: naming the value and the allowed ones.
    """
    lang = _BY_KEY.get(value.strip().lower()) if isinstance(value, str) else None
    if lang is None:
        hint = " (automatic detection is not supported; name the language)" if value == "multilingual" else ""
        raise UnsupportedLanguageError(
            f"language {value!r} is not supported{hint}; allowed: {', '.join(allowed_languages())}"
        )
    return lang


def answer_instruction(lang: ConversationLanguage) -> str:
    """What the LLM's system prompt says so it answers in ``lang``."""
    return (
        f"The conversation is in {lang.title}. Always answer in {lang.title}, "
        f"whatever language the instructions above are written in."
    )


def persona_in_language(persona, lang: ConversationLanguage):
    """A copy of ``persona`` that hears, thinks and speaks ``lang``.

    STT listens for it (the system prompt then tells the LLM to answer in it,
    see ``bot.engines.system_prompt``); an offline voice becomes piper for
    English and espeak-ng's voice for any other language; a cloud voice keeps
    its voice and is told the language.

    Raises:
        UnsupportedLanguageError: no offline voice speaks ``lang``; names what is allowed.
    """
    layers = persona.layers
    tts = layers.tts
    tts_update: dict = {}
    if tts.tts_engine in ("piper", "espeak"):
        if lang == ENGLISH and tts.tts_engine == "piper":
            pass
        elif lang.espeak_voice is None:
            raise UnsupportedLanguageError(
                f"language {lang.name!r} has no offline voice (tts_engine {tts.tts_engine!r}); with it allowed: "
                f"{', '.join(allowed_languages(offline_voice_only=True))}; or a persona with a cloud voice "
                "(cartesia, elevenlabs)"
            )
        else:
            speed = {k: v for k, v in tts.voice_settings.items() if k == "speed"}
            tts_update = {"tts_engine": "espeak", "external_voice_id": lang.espeak_voice, "voice_settings": speed}
    new_layers = layers.model_copy(
        update={
            "stt": layers.stt.model_copy(update={"language": lang.code}),
            "tts": tts.model_copy(update=tts_update) if tts_update else tts,
        }
    )
    return persona.model_copy(update={"layers": new_layers})
