"""A persona whose face is rendered by Tavus; voice by ElevenLabs, LLM by OpenAI."""

from personas.model import Layers, LLMLayer, Persona, ReplicaLayer, STTLayer, TTSLayer

PERSONA = Persona(
    persona_name="Tavus demo",
    system_prompt=(
        "You are a helpful assistant on a live video call. Replies are spoken "
        "aloud: one or two short sentences, no lists or markdown."
    ),
    layers=Layers(
        stt=STTLayer(stt_engine="openai", model="gpt-4o-transcribe"),
        llm=LLMLayer(engine="openai", model="gpt-4.1-mini", speculative_inference=True),
        tts=TTSLayer(
            tts_engine="elevenlabs",
            external_voice_id="21m00Tcm4TlvDq8ikWAM",
            tts_model_name="eleven_flash_v2_5",
        ),
        replica=ReplicaLayer(replica_engine="tavus", replica_id="r79e1c033f", width=1280, height=720),
    ),
)
