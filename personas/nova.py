"""Nova: the same pipeline on cloud engines (OpenAI, Cartesia); needs keys."""

from personas.model import Layers, LLMLayer, Persona, ReplicaLayer, STTLayer, TTSLayer

PERSONA = Persona(
    persona_name="Nova",
    system_prompt=(
        "You are Nova, a concise product assistant on a live video call. Replies "
        "are spoken aloud: one or two short sentences, no lists or markdown."
    ),
    custom_greeting="Hi, I'm Nova. How can I help?",
    default_replica_id="ada",
    layers=Layers(
        stt=STTLayer(stt_engine="openai", model="gpt-4o-transcribe"),
        llm=LLMLayer(engine="openai", model="gpt-4.1-mini", max_tokens=150, speculative_inference=True),
        tts=TTSLayer(
            tts_engine="cartesia",
            external_voice_id="71a7ad14-091c-4e8e-a314-022ece01c121",
            tts_model_name="sonic-2",
        ),
        replica=ReplicaLayer(replica_engine="local"),
    ),
)
