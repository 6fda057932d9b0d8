"""Echo: the replica speaks only what the client sends with ``conversation.echo`` (no STT, no LLM)."""

from personas.model import Layers, Persona, ReplicaLayer, TTSLayer

PERSONA = Persona(
    persona_name="Echo",
    system_prompt="Echo mode: the replica says only the text its client sends.",
    pipeline_mode="echo",
    default_replica_id="eileen",
    layers=Layers(
        tts=TTSLayer(tts_engine="piper", voice_settings={"speed": 1.0}),
        replica=ReplicaLayer(replica_engine="local"),
    ),
)
